-- Connect across processes (`tidings/connect/relay.py`): the workers connected to each
-- process, and the calls made through another process's socket.

-- name: connect_worker_put
INSERT INTO connect_workers (connection_id, env_id, instance_id, owner, functions, sdk,
                             capacity, status, connected_at, seen_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (connection_id) DO UPDATE SET
    owner = excluded.owner, functions = excluded.functions, status = excluded.status,
    seen_at = excluded.seen_at;

-- name: connect_worker_status
UPDATE connect_workers SET status = ? WHERE connection_id = ?;

-- name: connect_worker_gone
DELETE FROM connect_workers WHERE connection_id = ?;

-- name: connect_workers_seen
UPDATE connect_workers SET seen_at = ? WHERE owner = ?;

-- name: connect_workers_of_env
SELECT connection_id, env_id, instance_id, owner, functions, sdk, capacity, status,
       connected_at, seen_at
FROM connect_workers WHERE env_id = ? AND seen_at >= ? ORDER BY connected_at;

-- name: connect_workers_stale
DELETE FROM connect_workers WHERE seen_at < ?;

-- name: connect_calls_held
SELECT instance_id, COUNT(*) FROM connect_calls
WHERE env_id = ? AND state <> 'replied' AND expires_at >= ?
GROUP BY instance_id;

-- name: connect_call_new
INSERT INTO connect_calls (request_id, env_id, instance_id, owner, caller, app, slug, step,
                           run_id, body, lease_id, expires_at, state, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'new', ?);

-- name: connect_calls_for_owner
SELECT request_id, env_id, instance_id, app, slug, step, run_id, body, lease_id
FROM connect_calls WHERE owner = ? AND state = 'new' ORDER BY created_at;

-- name: connect_call_sent
UPDATE connect_calls SET state = 'sent' WHERE request_id = ? AND state = 'new';

-- name: connect_call_acked
UPDATE connect_calls SET state = 'acked' WHERE request_id = ? AND state = 'sent';

-- name: connect_call_lease
SELECT env_id, instance_id, lease_id, prev_lease_id, expires_at, state, caller
FROM connect_calls WHERE request_id = ?;

-- name: connect_call_extend
UPDATE connect_calls SET prev_lease_id = lease_id, lease_id = ?, expires_at = ?
WHERE request_id = ? AND lease_id = ? AND expires_at >= ? AND state <> 'replied';

-- name: connect_call_replied
UPDATE connect_calls SET state = 'replied', reply = ?
WHERE request_id = ? AND state <> 'replied';

-- name: connect_call_state
SELECT state, reply, expires_at FROM connect_calls WHERE request_id = ?;

-- name: connect_call_withdraw
DELETE FROM connect_calls WHERE request_id = ? AND state = 'new';

-- name: connect_call_drop
DELETE FROM connect_calls WHERE request_id = ?;

-- name: connect_calls_stale
DELETE FROM connect_calls WHERE expires_at < ?;

-- name: connect_call_handed
INSERT INTO connect_calls (request_id, env_id, instance_id, owner, caller, app, slug, step,
                           run_id, body, lease_id, prev_lease_id, expires_at, state,
                           created_at)
VALUES (?, ?, ?, ?, ?, '', '', '', ?, ?, ?, ?, ?, 'acked', ?)
ON CONFLICT (request_id) DO NOTHING;
