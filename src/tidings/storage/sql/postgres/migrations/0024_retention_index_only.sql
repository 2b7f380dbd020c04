-- Retention's queries (shared/retention.sql) read only indexes, so housekeeping does not fetch
-- the rows it is about to delete from the heap: the indexes they walk carry the columns they
-- test. Replaced, not added: ingest and runs keep the number of indexes they update (status
-- was indexed already, in runs_active_batches' predicate, so no update loses HOT).
DROP INDEX events_env_id;
CREATE INDEX events_env_id ON events (env_id, id) INCLUDE (event_key, delivered_at, cancelled_at);
DROP INDEX runs_env;
CREATE INDEX runs_env ON runs (env_id, id) INCLUDE (status, ended_at);
DROP INDEX runs_event;
CREATE INDEX runs_event ON runs (event_id) INCLUDE (status);
