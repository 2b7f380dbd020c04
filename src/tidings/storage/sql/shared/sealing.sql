-- Each environment's encrypt_data setting (sealing.py).

-- name: sealing_of_env
-- The environment's own setting, else the default (env_id '*', set by --encrypt-data).
SELECT enabled, generation FROM data_sealing WHERE env_id IN (?, '*')
ORDER BY env_id = '*' LIMIT 1;

-- name: sealing_all
SELECT env_id, enabled, generation FROM data_sealing;

-- name: sealing_save
INSERT INTO data_sealing (env_id, enabled, generation, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (env_id) DO UPDATE SET enabled = excluded.enabled,
    generation = excluded.generation, updated_at = excluded.updated_at;
