-- Housekeeping (engine/housekeeping.py): expired state deleted a chunk at a time, walking each
-- table in key order from a cursor.

-- name: idempotency_after
SELECT env_id, event_key FROM event_idempotency WHERE (env_id, event_key) > (?, ?)
ORDER BY env_id, event_key LIMIT 1 OFFSET ?;

-- name: idempotency_expire
DELETE FROM event_idempotency
WHERE (env_id, event_key) > (?, ?) AND (env_id, event_key) <= (?, ?) AND expires_at <= ?;

-- name: idempotency_expire_rest
DELETE FROM event_idempotency WHERE (env_id, event_key) > (?, ?) AND expires_at <= ?;

-- name: flow_limits_after
SELECT flow_key FROM flow_limits WHERE flow_key > ? ORDER BY flow_key LIMIT 1 OFFSET ?;

-- name: flow_limits_expire
-- A throttle row (b = 0) is worth nothing once its theoretical arrival time has passed; a
-- rate-limit or idempotency window once it is older than its period, at most a day.
DELETE FROM flow_limits
WHERE flow_key > ? AND flow_key <= ? AND ((b = 0 AND a <= ?) OR a <= ?);

-- name: flow_limits_expire_rest
DELETE FROM flow_limits WHERE flow_key > ? AND ((b = 0 AND a <= ?) OR a <= ?);

-- name: idempotency_count
SELECT count(*) FROM event_idempotency;

-- name: flow_limits_count
SELECT count(*) FROM flow_limits;

-- name: flow_limits_keys
SELECT flow_key FROM flow_limits;

-- name: ready_probe
-- /ready: a data statement that changes nothing, in a write transaction. It fails where writes
-- cannot be made (a read-only replica, a database refusing writes), as a commit alone may not.
UPDATE tidings_migrations SET name = name WHERE version < 0;

-- name: metrics_queue
-- /metrics, at scrape time: runs due and free (ready), due later and free (delayed), leased
-- (in flight), and the due time of the oldest ready one. Parameters: now, seven times.
SELECT COALESCE(sum(CASE WHEN due_at <= ? AND (lease_until IS NULL OR lease_until < ?)
                         THEN 1 ELSE 0 END), 0),
       COALESCE(sum(CASE WHEN due_at > ? AND (lease_until IS NULL OR lease_until < ?)
                         THEN 1 ELSE 0 END), 0),
       COALESCE(sum(CASE WHEN lease_until >= ? THEN 1 ELSE 0 END), 0),
       min(CASE WHEN due_at <= ? AND (lease_until IS NULL OR lease_until < ?) THEN due_at END)
FROM runs WHERE due_at IS NOT NULL;

-- name: metrics_waits
SELECT kind, count(*) FROM pauses GROUP BY kind;

-- name: event_traceparent
-- Tracing: the context an event was sent in, for the link of the spans of the runs it started.
SELECT traceparent FROM events WHERE id = ?;

-- name: metrics_connect_workers
SELECT status, COUNT(*) FROM connect_workers WHERE seen_at >= ? GROUP BY status;
