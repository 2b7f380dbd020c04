-- A person's events newest first (GET /v1/users/{external_id}/events), page by page.
DROP INDEX events_user_subject;
CREATE INDEX events_user_subject ON events (env_id, user_subject, id)
    WHERE user_subject IS NOT NULL;

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
