-- Each environment's encrypt_data setting (sealing.py).

-- name: sealing_of_env
-- The environment's own setting, else the default (env_id '*', set by --encrypt-data).
SELECT enabled, generation FROM data_sealing WHERE env_id IN (?, '*')
ORDER BY env_id = '*' LIMIT 1;

-- name: env_settings_of_env
-- What EnvSettingsCache.read believes, in one statement: the environment's retention settings
-- (all NULL without a row of its own) and its encrypt_data setting (its own, else the
-- default's; NULL without either).
SELECT r.events_ttl_ms, r.runs_ttl_ms, r.dedup_window_ms, s.enabled, s.generation
FROM (SELECT 1 AS one) AS o
LEFT JOIN env_settings r ON r.env_id = ?
LEFT JOIN (SELECT enabled, generation FROM data_sealing WHERE env_id IN (?, '*')
           ORDER BY env_id = '*' LIMIT 1) AS s ON 1 = 1;

-- name: sealing_all
SELECT env_id, enabled, generation FROM data_sealing;

-- name: sealing_save
INSERT INTO data_sealing (env_id, enabled, generation, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (env_id) DO UPDATE SET enabled = excluded.enabled,
    generation = excluded.generation, updated_at = excluded.updated_at;

-- name: sealing_key_save
-- A key's reference (DataSeals.register); a row there already, maybe another key's whose
-- reference is the same, stays.
INSERT INTO sealing_keys (ref, kid, env_id, generation) VALUES (?, ?, ?, ?)
ON CONFLICT (ref) DO NOTHING;

-- name: sealing_key_of
SELECT kid, env_id, generation FROM sealing_keys WHERE ref = ?;

-- name: sealing_keys_all
SELECT ref, kid, env_id, generation FROM sealing_keys;
