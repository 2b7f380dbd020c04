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

-- name: statuses_of_newest_runs
-- The statuses of an environment's newest runs created in a range, at most LIMIT of them: the
-- counts a list page shows come from one index range, whatever the table holds.
SELECT status, count(*) FROM (SELECT status FROM runs WHERE env_id = ? AND id >= ? AND id < ?
                              ORDER BY id DESC LIMIT ?) AS newest GROUP BY status;

-- name: statuses_of_newest_function_runs
-- The same for the runs of one function.
SELECT status, count(*) FROM (SELECT status FROM runs WHERE function_id = ? AND id >= ?
                              AND id < ? ORDER BY id DESC LIMIT ?) AS newest GROUP BY status;

-- name: branches_of
-- The branch environments of an environment (named "parent/branch"), for the switcher.
SELECT id, name, parent_id, created_at FROM environments WHERE parent_id = ? ORDER BY name;

-- name: newest_runs_of_event
-- The runs an event started, newest first, at most LIMIT (an event page shows a page of them).
SELECT r.id, r.env_id, r.function_id, r.queue, r.event_id, r.event_ids, r.status, r.attempt,
       r.due_at, r.lease_owner, r.lease_until, r.lease_token, r.created_at, r.started_at,
       r.ended_at, r.progress_at, r.output, r.error, r.parent_run_id, r.parent_step, r.rerun_of,
       r.replay_id, f.slug
FROM runs r JOIN functions f ON f.id = r.function_id
WHERE r.env_id = ? AND r.event_id = ? ORDER BY r.id DESC LIMIT ?;

-- name: run_marks_of_env
-- What the runs list's filters look at, for an environment's newest runs in an id range (index
-- runs_env), at most LIMIT of them: the filters on app, event, started or ended time are applied
-- to these light rows, and only the matching runs are read in full.
SELECT id, function_id, status, event_id, started_at, ended_at FROM runs
WHERE env_id = ? AND id >= ? AND id < ? ORDER BY id DESC LIMIT ?;

-- name: run_marks_of_function
-- The same for the runs of one function (index runs_function).
SELECT id, function_id, status, event_id, started_at, ended_at FROM runs
WHERE function_id = ? AND id >= ? AND id < ? ORDER BY id DESC LIMIT ?;

-- name: run_marks_of_event
-- The same for the runs an event started (index runs_event; an event starts few runs).
SELECT id, function_id, status, event_id, started_at, ended_at FROM runs
WHERE env_id = ? AND event_id = ? AND id >= ? AND id < ? ORDER BY id DESC LIMIT ?;

-- name: functions_of_app
-- Every function an app has had in an environment, archived ones too (their runs stay listed).
SELECT id FROM functions WHERE env_id = ? AND app_id = ?;

-- name: listed_runs_by_ids
SELECT r.id, r.env_id, r.function_id, r.queue, r.event_id, r.event_ids, r.status, r.attempt,
       r.due_at, r.lease_owner, r.lease_until, r.lease_token, r.created_at, r.started_at,
       r.ended_at, r.progress_at, r.output, r.error, r.parent_run_id, r.parent_step, r.rerun_of,
       r.replay_id, f.slug
FROM runs r JOIN functions f ON f.id = r.function_id
WHERE r.id IN (SELECT value FROM json_each(?)) ORDER BY r.id DESC;
