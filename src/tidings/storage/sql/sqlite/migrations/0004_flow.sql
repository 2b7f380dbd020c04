-- Flow control state (docs/EXECUTION_MODEL.md, "Flow control").

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
