-- name: insert_env
INSERT INTO environments (id, name, parent_id, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO NOTHING;

-- name: env_by_name
SELECT id, name, parent_id, created_at FROM environments WHERE name = ?;

-- name: env_by_id
SELECT id, name, parent_id, created_at FROM environments WHERE id = ?;

-- name: insert_key
INSERT INTO api_keys (id, env_id, kind, key_hash, prefix, created_at) VALUES (?, ?, ?, ?, ?, ?);

-- name: key_by_hash
SELECT k.id, k.env_id, e.name, k.kind, k.key_hash, k.prefix, k.created_at, k.revoked_at
FROM api_keys k JOIN environments e ON e.id = k.env_id WHERE k.key_hash = ?;

-- name: list_keys
SELECT k.id, k.env_id, e.name, k.kind, k.key_hash, k.prefix, k.created_at, k.revoked_at
FROM api_keys k JOIN environments e ON e.id = k.env_id ORDER BY k.created_at, k.id;

-- name: revoke_key
UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL;

-- name: claim_event_key
INSERT INTO event_idempotency (env_id, event_key, event_id, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (env_id, event_key) DO UPDATE
    SET event_id = excluded.event_id, expires_at = excluded.expires_at
    WHERE event_idempotency.expires_at <= ?
RETURNING event_id;

-- name: event_id_for_key
SELECT event_id FROM event_idempotency WHERE env_id = ? AND event_key = ?;

-- name: insert_event
INSERT INTO events (id, env_id, name, data, user_data, user_subject, event_key, ts, v, source,
                    context, account_id, received_at, deliver_at, delivered_at, meta,
                    traceparent)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING;

-- name: get_event
SELECT id, env_id, name, data, user_data, user_subject, event_key, ts, v, source, context,
       account_id, received_at, deliver_at, delivered_at, cancelled_at, meta
FROM events WHERE env_id = ? AND id = ?;

-- name: get_secret
SELECT value FROM secrets WHERE name = ?;

-- name: insert_secret
INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING;

-- name: replace_secret
INSERT INTO secrets (name, value) VALUES (?, ?)
ON CONFLICT (name) DO UPDATE SET value = excluded.value;

-- name: insert_user_key
INSERT INTO user_keys (env_id, subject, wrapped, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (env_id, subject) DO NOTHING;

-- name: get_user_key
SELECT wrapped FROM user_keys WHERE env_id = ? AND subject = ?;

-- name: delete_user_key
DELETE FROM user_keys WHERE env_id = ? AND subject = ?;

-- name: list_user_keys
SELECT env_id, subject, wrapped FROM user_keys ORDER BY env_id, subject;

-- name: update_user_key
UPDATE user_keys SET wrapped = ? WHERE env_id = ? AND subject = ?;

-- name: list_events
SELECT id, env_id, name, data, user_data, user_subject, event_key, ts, v, source, context,
       account_id, received_at, deliver_at, delivered_at, cancelled_at, meta
FROM events WHERE env_id = ? AND id >= ? AND id < ? ORDER BY id DESC LIMIT ?;

-- name: list_events_by_name
SELECT id, env_id, name, data, user_data, user_subject, event_key, ts, v, source, context,
       account_id, received_at, deliver_at, delivered_at, cancelled_at, meta
FROM events WHERE env_id = ? AND name = ? AND id >= ? AND id < ? ORDER BY id DESC LIMIT ?;
