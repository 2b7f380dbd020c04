-- Trigger.dev v2: a task that waits for a callback (io.waitForEvent,
-- invokeAndWaitForCompletion) until its timeout; and the statuses a run publishes
-- (io.createStatus), each with the history of its earlier values.
ALTER TABLE trigger_tasks ADD COLUMN callback_until INTEGER;

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
