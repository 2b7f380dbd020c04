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
