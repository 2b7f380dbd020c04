-- The current schema, applied as a whole to a fresh database. Every migration must leave a
-- migrated database equal to this (tests/contract/test_migrations.py).

CREATE TABLE environments (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    parent_id TEXT REFERENCES environments (id),
    created_at INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL REFERENCES environments (id),
    kind TEXT NOT NULL CHECK (kind IN ('event', 'api')),
    key_hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER,
    reads_user INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE events (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL REFERENCES environments (id),
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    user_data BLOB,
    user_subject BLOB,
    event_key TEXT,
    ts INTEGER NOT NULL,
    v TEXT,
    source TEXT NOT NULL,
    context BLOB,
    account_id TEXT,
    received_at INTEGER NOT NULL,
    deliver_at INTEGER,
    delivered_at INTEGER,
    cancelled_at INTEGER,
    meta BLOB,
    traceparent TEXT
) WITHOUT ROWID;

CREATE INDEX events_env_id ON events (env_id, id);
CREATE INDEX events_env_name_id ON events (env_id, name, id);
CREATE INDEX events_user_subject ON events (env_id, user_subject, id)
    WHERE user_subject IS NOT NULL;

CREATE TABLE event_idempotency (
    env_id TEXT NOT NULL,
    event_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (env_id, event_key)
) WITHOUT ROWID;

CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE user_keys (
    env_id TEXT NOT NULL,
    subject BLOB NOT NULL,
    wrapped BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (env_id, subject)
) WITHOUT ROWID;

CREATE TABLE functions (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL REFERENCES environments (id),
    app_id TEXT NOT NULL,
    slug TEXT NOT NULL,
    name TEXT NOT NULL,
    queue TEXT NOT NULL,
    url TEXT,
    config TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    archived_at INTEGER,
    UNIQUE (env_id, slug)
);

CREATE TABLE registry (
    name TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL,
    function_id TEXT NOT NULL REFERENCES functions (id),
    queue TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_ids TEXT,
    dedup_key TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    due_at INTEGER,
    lease_owner TEXT,
    lease_until INTEGER,
    lease_token INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    progress_at INTEGER NOT NULL,
    output TEXT,
    error TEXT,
    parent_run_id TEXT,
    parent_step TEXT,
    rerun_of TEXT,
    replay_id TEXT,
    UNIQUE (function_id, dedup_key)
);

CREATE INDEX runs_due ON runs (queue, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX runs_env ON runs (env_id, id);
CREATE INDEX runs_function ON runs (function_id, id);
CREATE INDEX runs_function_status ON runs (function_id, status, id);
CREATE INDEX runs_event ON runs (event_id);
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

CREATE TABLE steps (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    started_at INTEGER,
    ended_at INTEGER,
    kind TEXT NOT NULL DEFAULT 'run',
    PRIMARY KEY (run_id, step)
);

CREATE TABLE pauses (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    env_id TEXT NOT NULL,
    event_name TEXT,
    condition TEXT,
    trigger_event TEXT,
    correlation TEXT,
    since_id TEXT,
    until INTEGER NOT NULL,
    PRIMARY KEY (run_id, step)
);

CREATE INDEX pauses_wait ON pauses (env_id, event_name) WHERE kind = 'wait';
CREATE INDEX pauses_correlation ON pauses (correlation) WHERE correlation IS NOT NULL;

CREATE INDEX events_undelivered ON events (deliver_at)
    WHERE delivered_at IS NULL AND cancelled_at IS NULL;

CREATE TABLE replays (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL,
    function_id TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    until_ms INTEGER NOT NULL,
    statuses TEXT NOT NULL,
    total INTEGER NOT NULL,
    created INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

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

-- Throttle (GCRA: a = theoretical arrival time) and rate limit / idempotency (a fixed window:
-- a = its start, b = runs started in it), one row per key.
CREATE TABLE flow_limits (
    flow_key TEXT PRIMARY KEY,
    a INTEGER NOT NULL,
    b INTEGER NOT NULL DEFAULT 0
);

-- Concurrency: a slot is held while the run still holds the lease it was taken with.
CREATE TABLE flow_slots (
    flow_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    token INTEGER NOT NULL,
    PRIMARY KEY (flow_key, run_id)
);
CREATE INDEX flow_slots_run ON flow_slots (run_id);

-- Why a due run is held back (concurrency, throttled), and since when.
CREATE TABLE flow_waits (
    run_id TEXT PRIMARY KEY,
    flow_key TEXT NOT NULL,
    reason TEXT NOT NULL,
    since INTEGER NOT NULL,
    until INTEGER
);
CREATE INDEX flow_waits_key ON flow_waits (flow_key, since);

-- The open debounce or batch of a function and key: the run that collects events.
CREATE TABLE flow_pending (
    function_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    flow_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    first_at INTEGER NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (function_id, kind, flow_key)
);
CREATE INDEX flow_pending_run ON flow_pending (run_id);

-- The latest run of a singleton function per key.
CREATE TABLE flow_singletons (
    function_id TEXT NOT NULL,
    flow_key TEXT NOT NULL,
    run_id TEXT NOT NULL,
    PRIMARY KEY (function_id, flow_key)
);

-- cancel_on: the events that cancel a run that has not ended.
CREATE TABLE flow_cancels (
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    env_id TEXT NOT NULL,
    event_name TEXT NOT NULL,
    condition TEXT,
    trigger_event TEXT,
    since_id TEXT NOT NULL,
    until INTEGER NOT NULL,
    PRIMARY KEY (run_id, position)
);
CREATE INDEX flow_cancels_event ON flow_cancels (env_id, event_name);

-- Events that did not start a function's run because of its flow control (rate limit,
-- idempotency, singleton): the skip, visible on the event.
CREATE TABLE flow_skips (
    event_id TEXT NOT NULL,
    function_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (event_id, function_id)
);

-- A replay's runs still to rerun, fixed when the replay starts and deleted as their reruns are
-- created: a replay that a stopped process left unfinished is continued by the next to start.
CREATE TABLE replay_sources (
    replay_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    PRIMARY KEY (replay_id, source_id)
) WITHOUT ROWID;

-- Erasures of a person (privacy/erase.py): the audit record names the person only by the blind
-- index of their external_id; erased_runs are the tombstones their runs left.
CREATE TABLE erasures (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL,
    subject BLOB NOT NULL,
    actor TEXT NOT NULL,
    events_mode TEXT NOT NULL,
    key_destroyed INTEGER NOT NULL,
    events INTEGER NOT NULL,
    events_deleted INTEGER NOT NULL DEFAULT 0,
    runs_cancelled INTEGER NOT NULL DEFAULT 0,
    runs_erased INTEGER NOT NULL DEFAULT 0,
    steps_erased INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX erasures_subject ON erasures (env_id, subject);

CREATE TABLE erased_runs (
    run_id TEXT PRIMARY KEY,
    erasure_id TEXT NOT NULL
) WITHOUT ROWID;

-- Each environment's retention (events/retention.py): NULL is the mode's default, 0 forever.
CREATE TABLE env_settings (
    env_id TEXT PRIMARY KEY,
    events_ttl_ms INTEGER,
    runs_ttl_ms INTEGER,
    dedup_window_ms INTEGER,
    updated_at INTEGER NOT NULL
);

-- The runs of batches not ended, which need every event of theirs (housekeeping keeps them).
CREATE INDEX runs_active_batches ON runs (event_id)
    WHERE event_ids IS NOT NULL AND status NOT IN ('Completed', 'Failed', 'Cancelled');

CREATE TABLE step_attempts (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER NOT NULL,
    error TEXT,
    PRIMARY KEY (run_id, step, attempt)
);

-- Trigger.dev v2 keys: sealed (the server presents an app its own key), and hashed to look up.
CREATE TABLE trigger_keys (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL REFERENCES environments (id),
    key_hash TEXT NOT NULL UNIQUE,
    sealed BLOB NOT NULL,
    prefix TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- Connect across processes: the workers connected to each process (its rows, kept fresh by
-- it: seen_at), and the calls one process makes to a worker connected to another (the owner
-- forwards them down the socket and writes the reply back; the caller polls its row).
CREATE TABLE connect_workers (
    connection_id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    functions TEXT NOT NULL,
    sdk TEXT NOT NULL,
    capacity INTEGER,
    status TEXT NOT NULL,
    connected_at INTEGER NOT NULL,
    seen_at INTEGER NOT NULL
);
CREATE INDEX connect_workers_env ON connect_workers (env_id, seen_at);

CREATE TABLE connect_calls (
    request_id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    caller TEXT NOT NULL,
    app TEXT NOT NULL,
    slug TEXT NOT NULL,
    step TEXT NOT NULL,
    run_id TEXT NOT NULL,
    body BLOB NOT NULL,
    lease_id TEXT NOT NULL,
    prev_lease_id TEXT,
    expires_at INTEGER NOT NULL,
    state TEXT NOT NULL,
    reply BLOB,
    created_at INTEGER NOT NULL
);
CREATE INDEX connect_calls_owner ON connect_calls (owner, state);

-- The tasks of Trigger.dev v2 runs (mirrored as steps).
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
    delay_until INTEGER,
    params TEXT,
    output TEXT,
    error TEXT,
    started_at INTEGER NOT NULL,
    completed_at INTEGER,
    callback_until INTEGER,
    operation TEXT,
    callback_secret TEXT,
    UNIQUE (run_id, idempotency_key)
);

-- Trigger.dev v2's key-value store (io.store, client.store): per environment, values as text.
CREATE TABLE trigger_store (
    env_id TEXT NOT NULL,
    store_key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (env_id, store_key)
);

-- The statuses a Trigger.dev v2 run publishes (io.createStatus), with their earlier values.
CREATE TABLE trigger_statuses (
    run_id TEXT NOT NULL,
    status_key TEXT NOT NULL,
    label TEXT NOT NULL,
    state TEXT,
    data TEXT,
    history TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, status_key)
);

-- Dashboard passwords (tidings keys create-dashboard): a scrypt hash of each, found by its
-- lookup id; reads_user: whether its sessions see events' decrypted user.
CREATE TABLE dashboard_passwords (
    id TEXT PRIMARY KEY,
    env_id TEXT NOT NULL REFERENCES environments (id),
    lookup TEXT NOT NULL UNIQUE,
    kdf TEXT NOT NULL,
    reads_user INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- Each environment's encrypt_data setting (sealing.py).
CREATE TABLE data_sealing (
    env_id TEXT PRIMARY KEY,  -- '*': the default of environments without a row
    enabled INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- The keys sealed values name by a short reference (sealing.py).
CREATE TABLE sealing_keys (
    ref BIGINT PRIMARY KEY,
    kid TEXT NOT NULL,
    env_id TEXT NOT NULL,
    generation INTEGER NOT NULL
);
