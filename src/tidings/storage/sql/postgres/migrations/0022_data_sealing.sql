-- Each environment's encrypt_data setting (sealing.py): whether event data, event ids and
-- outputs are stored sealed, and the generation of the environment's key new writes use.
CREATE TABLE data_sealing (
    env_id TEXT PRIMARY KEY,  -- '*': the default of environments without a row
    enabled INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    updated_at BIGINT NOT NULL
);
