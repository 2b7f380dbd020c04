-- Dashboard passwords (tidings keys create-dashboard): each opens one environment's dashboard
-- under serve. Found by its lookup id (the password's public part); only a scrypt hash of its
-- secret part is kept. reads_user: whether its sessions see events' decrypted user.
CREATE TABLE dashboard_passwords (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL REFERENCES environments (id),
    lookup TEXT NOT NULL UNIQUE,
    kdf TEXT NOT NULL,
    reads_user INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
