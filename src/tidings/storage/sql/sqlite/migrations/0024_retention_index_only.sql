-- PostgreSQL's covering indexes for retention (postgres/migrations/0024): SQLite reads a
-- WITHOUT ROWID events table by its key and has no INCLUDE; nothing changes here.
SELECT 1;
