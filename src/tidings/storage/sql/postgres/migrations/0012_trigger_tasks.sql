-- The tasks of Trigger.dev v2 runs, as the SDK creates and completes them through
-- /api/v1/runs/{id}/tasks while its job executes; each is mirrored as a step of the run.
CREATE TABLE trigger_tasks (
    id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    name TEXT NOT NULL,
    display_key TEXT,
    status TEXT NOT NULL,
    noop INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    retrying INTEGER NOT NULL DEFAULT 0,
    parent_id TEXT,
    delay_until BIGINT,
    params TEXT,
    output TEXT,
    error TEXT,
    started_at BIGINT NOT NULL,
    completed_at BIGINT,
    UNIQUE (run_id, idempotency_key)
);

-- Trigger.dev v2's key-value store (io.store, client.store): per environment, values as text.
CREATE TABLE trigger_store (
    env_id TEXT NOT NULL,
    store_key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (env_id, store_key)
);
