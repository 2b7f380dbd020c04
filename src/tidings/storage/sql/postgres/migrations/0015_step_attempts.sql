-- Every failed attempt of a step, with its error, for the run's timeline (the steps table keeps
-- only a step's latest attempt). Numbered 0012 so as not to collide with migrations written
-- at the same time on other branches; the runner applies every version it has not applied.
CREATE TABLE step_attempts (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    started_at BIGINT,
    ended_at BIGINT NOT NULL,
    error JSON,
    PRIMARY KEY (run_id, step, attempt)
);
