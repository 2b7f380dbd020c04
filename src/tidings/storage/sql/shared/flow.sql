-- Queries of flow control (src/tidings/flow/), shared by both dialects.

-- name: flow_limit_lock
INSERT INTO flow_limits (flow_key, a, b) VALUES (?, ?, 0)
ON CONFLICT (flow_key) DO UPDATE SET a = flow_limits.a
RETURNING a, b;

-- name: flow_limit_set
UPDATE flow_limits SET a = ?, b = ? WHERE flow_key = ?;

-- name: flow_slots_used
SELECT count(*) FROM flow_slots s JOIN runs r ON r.id = s.run_id
WHERE s.flow_key = ? AND r.lease_token = s.token AND r.lease_until >= ?;

-- name: flow_slots_counts
SELECT s.flow_key, count(*) FROM flow_slots s JOIN runs r ON r.id = s.run_id
WHERE s.flow_key IN (SELECT value FROM json_each(?)) AND r.lease_token = s.token
    AND r.lease_until >= ?
GROUP BY s.flow_key;

-- name: lock_names
SELECT ?;

-- name: flow_slot_take
INSERT INTO flow_slots (flow_key, run_id, token) VALUES (?, ?, ?)
ON CONFLICT (flow_key, run_id) DO UPDATE SET token = excluded.token;

-- name: flow_slots_release
DELETE FROM flow_slots WHERE run_id = ? RETURNING flow_key;

-- name: flow_defer
UPDATE runs SET lease_owner = NULL, lease_until = NULL, due_at = ?,
                status = CASE WHEN ? THEN 'Queued' ELSE status END,
                started_at = CASE WHEN ? THEN NULL ELSE started_at END
WHERE id = ? AND lease_token = ?;

-- name: flow_wait
INSERT INTO flow_waits (run_id, flow_key, reason, since, until) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET flow_key = excluded.flow_key, reason = excluded.reason,
    until = excluded.until;

-- name: flow_waiters
SELECT w.run_id FROM flow_waits w JOIN runs r ON r.id = w.run_id
WHERE w.flow_key = ? AND w.reason = 'concurrency' AND r.due_at > ?
ORDER BY w.since, w.run_id LIMIT ?;

-- name: flow_wait_done
DELETE FROM flow_waits WHERE run_id = ?;

-- name: flow_waits_done
DELETE FROM flow_waits WHERE run_id IN (SELECT value FROM json_each(?));

-- name: flow_wake
UPDATE runs SET due_at = ?
WHERE id = ? AND lease_owner IS NULL AND due_at > ?
    AND status NOT IN ('Completed', 'Failed', 'Cancelled');

-- name: flow_wait_of
SELECT reason, flow_key, since, until FROM flow_waits WHERE run_id = ?;

-- name: flow_pending_of
SELECT kind, flow_key, first_at, size FROM flow_pending WHERE run_id = ?;

-- name: flow_pending_get
SELECT run_id, first_at, size FROM flow_pending
WHERE function_id = ? AND kind = ? AND flow_key = ?;

-- name: flow_pending_put
INSERT INTO flow_pending (function_id, kind, flow_key, run_id, first_at, size)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (function_id, kind, flow_key) DO UPDATE SET run_id = excluded.run_id,
    first_at = excluded.first_at, size = excluded.size;

-- name: flow_pending_size
UPDATE flow_pending SET size = ? WHERE function_id = ? AND kind = ? AND flow_key = ?;

-- name: flow_pending_close
DELETE FROM flow_pending WHERE function_id = ? AND kind = ? AND flow_key = ?;

-- name: flow_debounce_move
UPDATE runs SET event_id = ?, due_at = ?
WHERE id = ? AND started_at IS NULL AND lease_owner IS NULL AND status = 'Queued';

-- name: flow_batch_events
SELECT event_ids FROM runs
WHERE id = ? AND started_at IS NULL AND lease_owner IS NULL AND status = 'Queued';

-- name: flow_batch_add
UPDATE runs SET event_ids = ?, due_at = ?
WHERE id = ? AND started_at IS NULL AND lease_owner IS NULL AND status = 'Queued';

-- name: flow_singleton_get
SELECT s.run_id, r.status FROM flow_singletons s JOIN runs r ON r.id = s.run_id
WHERE s.function_id = ? AND s.flow_key = ?;

-- name: flow_singleton_put
INSERT INTO flow_singletons (function_id, flow_key, run_id) VALUES (?, ?, ?)
ON CONFLICT (function_id, flow_key) DO UPDATE SET run_id = excluded.run_id;

-- name: flow_skip
INSERT INTO flow_skips (event_id, function_id, reason, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (event_id, function_id) DO NOTHING;

-- name: flow_skips_of_event
SELECT f.slug, s.reason, s.created_at FROM flow_skips s JOIN functions f ON f.id = s.function_id
WHERE s.event_id = ? ORDER BY f.slug;

-- name: flow_cancel_add
INSERT INTO flow_cancels (run_id, position, env_id, event_name, condition, trigger_event,
                          since_id, until)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, position) DO NOTHING;

-- name: flow_cancels_for
SELECT c.run_id, c.position, c.condition, c.trigger_event, c.since_id, c.until, r.status
FROM flow_cancels c JOIN runs r ON r.id = c.run_id
WHERE c.env_id = ? AND c.event_name = ?;

-- name: flow_cancels_drop
DELETE FROM flow_cancels WHERE run_id = ?;

-- name: flow_run_due
SELECT due_at, status FROM runs WHERE id = ?;

-- name: flow_cap_due
UPDATE runs SET due_at = ?
WHERE id = ? AND due_at > ? AND status NOT IN ('Completed', 'Failed', 'Cancelled');

-- name: flow_open_runs
SELECT id FROM runs
WHERE function_id = ? AND id >= ? AND id < ?
    AND status NOT IN ('Completed', 'Failed', 'Cancelled')
ORDER BY id LIMIT ?;

-- name: try_lock_name
SELECT 1 WHERE ? IS NOT NULL;
