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
