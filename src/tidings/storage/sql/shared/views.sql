-- Reads for listings (the JSON API and the dashboard): searching the event log, summing runs.

-- name: event_ids_by_prefix
SELECT id FROM events
WHERE env_id = ? AND substr(name, 1, ?) = ? AND id >= ? AND id < ?
ORDER BY id DESC LIMIT ?;

-- name: run_statuses_of_event
SELECT status, count(*) FROM runs WHERE event_id = ? GROUP BY status;
