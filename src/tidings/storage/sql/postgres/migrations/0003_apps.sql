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
    created_at BIGINT NOT NULL,
    checked_at BIGINT NOT NULL,
    synced_at BIGINT,
    PRIMARY KEY (env_id, url)
);

CREATE TABLE signing_keys (
    env_id TEXT PRIMARY KEY REFERENCES environments (id),
    sealed BYTEA NOT NULL,
    fallback BYTEA,
    created_at BIGINT NOT NULL
);

CREATE TABLE planned_runs (
    run_id TEXT PRIMARY KEY,
    since BIGINT NOT NULL
);
