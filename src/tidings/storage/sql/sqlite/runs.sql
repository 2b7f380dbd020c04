-- SQLite's own versions of reads of one function's runs in id order, newest (or oldest) first,
-- with a LIMIT: each says INDEXED BY runs_function (function_id, id), which gives that order.
-- Without statistics (Tidings runs no ANALYZE) SQLite took runs_function_status (function_id,
-- status, id) for them, which holds the status but not the order: it read every run of the
-- function and sorted them (100,000 at 1,000,000 runs) to keep 51 or 2,000.

-- name: list_runs_of_function
SELECT r.id, r.env_id, r.function_id, r.queue, r.event_id, r.event_ids, r.status, r.attempt,
       r.due_at, r.lease_owner, r.lease_until, r.lease_token, r.created_at, r.started_at,
       r.ended_at, r.progress_at, r.output, r.error, r.parent_run_id, r.parent_step, r.rerun_of,
       r.replay_id, f.slug
FROM runs r INDEXED BY runs_function JOIN functions f ON f.id = r.function_id
WHERE r.function_id = ? AND r.id >= ? AND r.id < ? AND r.status IN (?, ?, ?, ?, ?, ?, ?)
ORDER BY r.id DESC LIMIT ?;

-- name: statuses_of_newest_function_runs
SELECT status, count(*) FROM (SELECT status FROM runs INDEXED BY runs_function
                              WHERE function_id = ? AND id >= ? AND id < ?
                              ORDER BY id DESC LIMIT ?) AS newest GROUP BY status;

-- name: run_marks_of_function
SELECT id, function_id, status, event_id, started_at, ended_at FROM runs INDEXED BY runs_function
WHERE function_id = ? AND id >= ? AND id < ? ORDER BY id DESC LIMIT ?;

-- name: flow_open_runs
SELECT id FROM runs INDEXED BY runs_function
WHERE function_id = ? AND id >= ? AND id < ?
    AND status NOT IN ('Completed', 'Failed', 'Cancelled')
ORDER BY id LIMIT ?;
