-- Erasures of a person (DELETE /v1/users/{external_id}): the audit record, which names the
-- person only by the blind index of their external_id, and the runs left as tombstones.
CREATE TABLE erasures (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL,
    subject BYTEA NOT NULL,
    actor TEXT NOT NULL,
    events_mode TEXT NOT NULL,
    key_destroyed INTEGER NOT NULL,
    events BIGINT NOT NULL,
    events_deleted BIGINT NOT NULL DEFAULT 0,
    runs_cancelled BIGINT NOT NULL DEFAULT 0,
    runs_erased BIGINT NOT NULL DEFAULT 0,
    steps_erased BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE INDEX erasures_subject ON erasures (env_id, subject);

CREATE TABLE erased_runs (
    run_id TEXT PRIMARY KEY,
    erasure_id TEXT NOT NULL
);
