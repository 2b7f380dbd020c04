-- Queries of SDK apps (sync records and signing keys), shared by both
-- dialects (`?` becomes `%s` on PostgreSQL).

-- name: app_by_url
SELECT env_id, url, app_id, sdk, framework, checksum, status, error, function_count,
       created_at, checked_at, synced_at
FROM apps WHERE env_id = ? AND url = ?;

-- name: apps_of_env
SELECT env_id, url, app_id, sdk, framework, checksum, status, error, function_count,
       created_at, checked_at, synced_at
FROM apps WHERE env_id = ? ORDER BY url;

-- name: app_synced
INSERT INTO apps (env_id, url, app_id, sdk, framework, checksum, status, error, function_count,
                  created_at, checked_at, synced_at)
VALUES (?, ?, ?, ?, ?, ?, 'synced', NULL, ?, ?, ?, ?)
ON CONFLICT (env_id, url) DO UPDATE SET
    app_id = excluded.app_id, sdk = excluded.sdk, framework = excluded.framework,
    checksum = excluded.checksum, status = 'synced', error = NULL,
    function_count = excluded.function_count, checked_at = excluded.checked_at,
    synced_at = excluded.synced_at;

-- name: app_checked
INSERT INTO apps (env_id, url, status, error, created_at, checked_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (env_id, url) DO UPDATE SET
    status = excluded.status, error = excluded.error, checked_at = excluded.checked_at;

-- name: app_moved
DELETE FROM apps WHERE env_id = ? AND app_id = ? AND url <> ?;

-- name: signing_keys_of_env
SELECT sealed, fallback FROM signing_keys WHERE env_id = ?;

-- name: all_signing_keys
SELECT env_id, sealed, fallback FROM signing_keys;

-- name: put_signing_keys
INSERT INTO signing_keys (env_id, sealed, fallback, created_at) VALUES (?, ?, ?, ?)
ON CONFLICT (env_id) DO UPDATE SET
    sealed = excluded.sealed, fallback = excluded.fallback, created_at = excluded.created_at;

-- name: rewrap_signing_keys
-- Only if the row is still the one that was read: a key created meanwhile is left as it is.
UPDATE signing_keys SET sealed = ?, fallback = ? WHERE env_id = ? AND sealed = ?;

-- name: listed_functions
-- The live functions of an environment, with when their definition was written and when their
-- app last synced (none for native functions: they register as their process starts).
SELECT f.id, f.env_id, f.app_id, f.slug, f.name, f.queue, f.url, f.config, f.archived_at,
       f.created_at, f.updated_at, a.synced_at
FROM functions f LEFT JOIN apps a ON a.env_id = f.env_id AND a.app_id = f.app_id
WHERE f.env_id = ? AND f.archived_at IS NULL ORDER BY f.slug;

-- name: listed_function
SELECT f.id, f.env_id, f.app_id, f.slug, f.name, f.queue, f.url, f.config, f.archived_at,
       f.created_at, f.updated_at, a.synced_at
FROM functions f LEFT JOIN apps a ON a.env_id = f.env_id AND a.app_id = f.app_id
WHERE f.env_id = ? AND f.slug = ?;
