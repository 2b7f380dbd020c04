-- Trigger.dev v2 keys (tr_<env>_...): sealed by the master keyring, not only hashed, because
-- the server presents an app's own key to it (x-trigger-api-key) when it calls the app.
CREATE TABLE trigger_keys (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL REFERENCES environments (id),
    key_hash TEXT NOT NULL UNIQUE,
    sealed BLOB NOT NULL,
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
