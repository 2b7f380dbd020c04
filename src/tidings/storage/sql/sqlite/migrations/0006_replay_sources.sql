-- A replay's runs still to rerun, fixed when the replay starts and deleted as their reruns are
-- created: a replay that a stopped process left unfinished is continued by the next to start.
CREATE TABLE replay_sources (
    replay_id TEXT NOT NULL,
    source_id TEXT NOT NULL,
    PRIMARY KEY (replay_id, source_id)
) WITHOUT ROWID;
