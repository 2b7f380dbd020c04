CREATE TABLE apps (
    env_id TEXT NOT NULL REFERENCES environments (id),
    url TEXT NOT NULL,
    app_id TEXT,
    sdk TEXT,
    framework TEXT,
    checksum TEXT,
    status TEXT NOT NULL,
    error TEXT,
    function_count INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    checked_at INTEGER NOT NULL,
    synced_at INTEGER,
    PRIMARY KEY (env_id, url)
);

CREATE TABLE signing_keys (
    env_id TEXT PRIMARY KEY REFERENCES environments (id),
    sealed BLOB NOT NULL,
    fallback BLOB,
    created_at INTEGER NOT NULL
);

CREATE TABLE planned_runs (
    run_id TEXT PRIMARY KEY,
    since INTEGER NOT NULL
);
