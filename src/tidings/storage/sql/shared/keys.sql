-- Environments, event and API keys, secrets and users' data keys (``tidings/keys.py``,
-- ``tidings/vault.py``).

-- name: insert_env
INSERT INTO environments (id, name, parent_id, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO NOTHING;

-- name: env_by_name
SELECT id, name, parent_id, created_at FROM environments WHERE name = ?;

-- name: env_by_id
SELECT id, name, parent_id, created_at FROM environments WHERE id = ?;

-- name: insert_key
INSERT INTO api_keys (id, env_id, kind, key_hash, prefix, created_at, reads_user)
VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: key_by_hash
SELECT k.id, k.env_id, e.name, k.kind, k.key_hash, k.prefix, k.created_at, k.revoked_at,
       k.reads_user
FROM api_keys k JOIN environments e ON e.id = k.env_id WHERE k.key_hash = ?;

-- name: list_keys
SELECT k.id, k.env_id, e.name, k.kind, k.key_hash, k.prefix, k.created_at, k.revoked_at,
       k.reads_user
FROM api_keys k JOIN environments e ON e.id = k.env_id ORDER BY k.created_at, k.id;

-- name: revoke_key
UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL;

-- name: notify_keys
-- Tell other processes a key was revoked: nothing to tell on SQLite (see postgres/keys.sql).
SELECT 1;

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

-- name: insert_dashboard_password
INSERT INTO dashboard_passwords (id, env_id, lookup, kdf, reads_user, created_at)
VALUES (?, ?, ?, ?, ?, ?);

-- name: dashboard_password_by_lookup
SELECT p.id, p.env_id, e.name, p.lookup, p.kdf, p.reads_user, p.created_at, p.revoked_at
FROM dashboard_passwords p JOIN environments e ON e.id = p.env_id WHERE p.lookup = ?;

-- name: dashboard_password_by_id
SELECT p.id, p.env_id, e.name, p.lookup, p.kdf, p.reads_user, p.created_at, p.revoked_at
FROM dashboard_passwords p JOIN environments e ON e.id = p.env_id WHERE p.id = ?;

-- name: list_dashboard_passwords
SELECT p.id, p.env_id, e.name, p.lookup, p.kdf, p.reads_user, p.created_at, p.revoked_at
FROM dashboard_passwords p JOIN environments e ON e.id = p.env_id ORDER BY p.created_at, p.id;

-- name: revoke_dashboard_password
UPDATE dashboard_passwords SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL;
