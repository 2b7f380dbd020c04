-- What each step is (run, sleep, wait, invoke, send, ai), for the runs API: a column with a
-- constant default, so no table rewrite (steps recorded before it read as "run"). And the runs
-- an invocation started, found from their parent.
ALTER TABLE steps ADD COLUMN kind TEXT NOT NULL DEFAULT 'run';
CREATE INDEX runs_parent ON runs (parent_run_id) WHERE parent_run_id IS NOT NULL;
