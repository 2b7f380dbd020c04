-- The current schema, applied as a whole to a fresh database. Every migration must leave a
-- migrated database equal to this (tests/contract/test_migrations.py).

CREATE TABLE environments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    parent_id TEXT REFERENCES environments (id),
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL REFERENCES environments (id),
    kind TEXT NOT NULL CHECK (kind IN ('event', 'api')),
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL REFERENCES environments (id),
    name TEXT NOT NULL,
    data JSON NOT NULL,
    user_data BYTEA,
    user_subject BYTEA,
    event_key TEXT,
    ts BIGINT NOT NULL,
    v TEXT,
    source TEXT NOT NULL,
    context JSON,
    account_id TEXT,
    received_at BIGINT NOT NULL,
    deliver_at BIGINT,
    delivered_at BIGINT,
    cancelled_at BIGINT
);

CREATE INDEX events_env_id ON events (env_id, id);
CREATE INDEX events_env_name_id ON events (env_id, name, id);
CREATE INDEX events_user_subject ON events (env_id, user_subject) WHERE user_subject IS NOT NULL;

CREATE TABLE event_idempotency (
    env_id TEXT NOT NULL,
    event_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (env_id, event_key)
);

CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

CREATE TABLE user_keys (
    env_id TEXT NOT NULL,
    subject BYTEA NOT NULL,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (env_id, subject)
);
