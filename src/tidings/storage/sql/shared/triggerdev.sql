-- Trigger.dev v2: keys, and events looked up by the id their sender gave them.

-- name: trigger_key_insert
INSERT INTO trigger_keys (id, env_id, key_hash, sealed, prefix, created_at)
VALUES (?, ?, ?, ?, ?, ?);

-- name: trigger_key_by_hash
SELECT id, env_id, revoked_at FROM trigger_keys WHERE key_hash = ?;

-- name: trigger_keys_all
SELECT k.id, k.env_id, e.name, k.prefix, k.sealed, k.created_at, k.revoked_at
FROM trigger_keys k JOIN environments e ON e.id = k.env_id
ORDER BY k.created_at, k.id;

-- name: trigger_key_revoke
UPDATE trigger_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL;

-- name: trigger_key_rewrap
-- Only if the row is still the one that was read.
UPDATE trigger_keys SET sealed = ? WHERE id = ? AND sealed = ?;

-- name: trigger_event_by_key
-- The event an id names in an environment: the sender's id (kept for good, see
-- triggerdev/events.py), else Tidings' own.
SELECT e.id FROM event_idempotency i JOIN events e ON e.id = i.event_id
WHERE i.env_id = ? AND i.event_key = ?;

-- name: trigger_event_state
SELECT delivered_at, cancelled_at FROM events WHERE env_id = ? AND id = ?;

-- name: trigger_event_revise
-- A delayed event sent again with its id before delivery: new payload, context and time.
UPDATE events SET data = ?, context = ?, deliver_at = ?, account_id = ?
WHERE env_id = ? AND id = ? AND delivered_at IS NULL AND cancelled_at IS NULL;

-- name: trigger_task_by_key
SELECT id, run_id, idempotency_key, name, display_key, status, noop, attempts, retrying,
       parent_id, delay_until, params, output, error, started_at, completed_at,
       callback_until, operation, callback_secret
FROM trigger_tasks WHERE run_id = ? AND idempotency_key = ?;

-- name: trigger_task_by_id
SELECT id, run_id, idempotency_key, name, display_key, status, noop, attempts, retrying,
       parent_id, delay_until, params, output, error, started_at, completed_at,
       callback_until, operation, callback_secret
FROM trigger_tasks WHERE id = ?;

-- name: trigger_tasks_of_run
SELECT id, run_id, idempotency_key, name, display_key, status, noop, attempts, retrying,
       parent_id, delay_until, params, output, error, started_at, completed_at,
       callback_until, operation, callback_secret
FROM trigger_tasks WHERE run_id = ? ORDER BY started_at, id;

-- name: trigger_task_insert
INSERT INTO trigger_tasks (id, run_id, idempotency_key, name, display_key, status, noop,
                           attempts, parent_id, delay_until, params, output, started_at,
                           completed_at, callback_until, operation, callback_secret)
VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, idempotency_key) DO NOTHING;

-- name: trigger_task_attempt
-- The SDK starts a task again after RETRY_WITH_TASK: its next attempt.
UPDATE trigger_tasks SET attempts = attempts + 1, retrying = 0, status = 'RUNNING', error = NULL
WHERE id = ? AND retrying = 1;

-- name: trigger_task_later
-- A background fetch to be tried again: its next attempt, not before delay_until.
UPDATE trigger_tasks SET attempts = attempts + 1, delay_until = ?, error = ?
WHERE id = ? AND status = 'RUNNING' AND operation IS NOT NULL;

-- name: trigger_task_retry
UPDATE trigger_tasks SET retrying = 1, error = ? WHERE id = ? AND status = 'RUNNING';

-- name: trigger_task_complete
UPDATE trigger_tasks SET status = 'COMPLETED', output = ?, completed_at = ?
WHERE id = ? AND status IN ('RUNNING', 'WAITING');

-- name: trigger_task_complete_of_run
UPDATE trigger_tasks SET status = 'COMPLETED', output = ?, completed_at = ?
WHERE id = ? AND run_id = ? AND status IN ('RUNNING', 'WAITING');

-- name: trigger_task_fail
-- The error is also the task's output, which the SDK reads back from an errored task.
UPDATE trigger_tasks SET status = 'ERRORED', error = ?, output = ?, completed_at = ?
WHERE id = ? AND status IN ('RUNNING', 'WAITING');

-- name: trigger_callback_fail
-- A callback that never came (v2's words are the task's output).
UPDATE trigger_tasks SET status = 'ERRORED', error = ?, output = ?, completed_at = ?
WHERE id = ? AND status = 'WAITING';

-- name: trigger_event_account
SELECT account_id FROM events WHERE id = ?;

-- name: trigger_status_get
SELECT label, state, data, history FROM trigger_statuses WHERE run_id = ? AND status_key = ?;

-- name: trigger_status_put
INSERT INTO trigger_statuses (run_id, status_key, label, state, data, history, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, status_key) DO UPDATE SET label = excluded.label, state = excluded.state,
    data = excluded.data, history = excluded.history;

-- name: trigger_statuses_of_run
SELECT status_key, label, state, data, history FROM trigger_statuses WHERE run_id = ?
ORDER BY created_at, status_key;

-- name: trigger_store_get
SELECT value FROM trigger_store WHERE env_id = ? AND store_key = ?;

-- name: trigger_store_put
INSERT INTO trigger_store (env_id, store_key, value, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (env_id, store_key) DO UPDATE SET value = excluded.value,
    updated_at = excluded.updated_at;

-- name: trigger_store_delete
DELETE FROM trigger_store WHERE env_id = ? AND store_key = ?;
