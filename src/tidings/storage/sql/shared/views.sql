-- Reads for listings (the JSON API and the dashboard): searching the event log, summing runs.

-- name: event_ids_by_prefix
SELECT id FROM events
WHERE env_id = ? AND substr(name, 1, ?) = ? AND id >= ? AND id < ?
ORDER BY id DESC LIMIT ?;

-- name: run_statuses_of_event
SELECT status, count(*) FROM runs WHERE event_id = ? GROUP BY status;

-- name: count_runs_of_function
-- What a bulk cancel or replay would touch (its preview): runs of a function created in a
-- range, in the given statuses (padded with NULL to seven).
SELECT count(*) FROM runs
WHERE function_id = ? AND id >= ? AND id < ? AND status IN (?, ?, ?, ?, ?, ?, ?);

-- name: count_runs_by_status
-- Runs of an environment created in a range in one status, the count capped (the inner
-- LIMIT): a list page shows "10,000+" rather than scan a million runs.
SELECT count(*) FROM (SELECT 1 FROM runs WHERE env_id = ? AND status = ? AND id >= ? AND id < ?
                      LIMIT ?) AS capped;

-- name: count_function_runs_by_status
-- The same for the runs of one function.
SELECT count(*) FROM (SELECT 1 FROM runs WHERE function_id = ? AND status = ? AND id >= ?
                      AND id < ? LIMIT ?) AS capped;

-- name: branches_of
-- The branch environments of an environment (named "parent/branch"), for the switcher.
SELECT id, name, parent_id, created_at FROM environments WHERE parent_id = ? ORDER BY name;
