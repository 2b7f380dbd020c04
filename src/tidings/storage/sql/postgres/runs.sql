-- PostgreSQL's own versions of shared queries.

-- name: claim_runs
UPDATE runs SET lease_owner = %s, lease_until = %s, lease_token = lease_token + 1,
                started_at = COALESCE(started_at, %s),
                status = CASE WHEN status = 'Queued' THEN 'Running' ELSE status END
WHERE id IN (SELECT id FROM runs WHERE queue = %s AND due_at <= %s
             AND (lease_until IS NULL OR lease_until < %s) ORDER BY due_at LIMIT %s
             FOR UPDATE SKIP LOCKED)
RETURNING id, env_id, function_id, queue, event_id, event_ids, status, attempt, due_at,
          lease_owner, lease_until, lease_token, created_at, started_at, ended_at, progress_at,
          output, error, parent_run_id, parent_step, rerun_of, replay_id;

-- name: undelivered_now
SELECT id FROM events
WHERE delivered_at IS NULL AND cancelled_at IS NULL AND deliver_at IS NULL AND id < %s
ORDER BY id LIMIT %s;

-- name: undelivered_due
SELECT id FROM events
WHERE delivered_at IS NULL AND cancelled_at IS NULL AND deliver_at <= %s
ORDER BY deliver_at LIMIT %s;

-- name: notify
SELECT pg_notify('tidings_runs', %s);

-- name: lock_name_shared
SELECT pg_advisory_xact_lock_shared(hashtext(%s));

-- name: lock_name
SELECT pg_advisory_xact_lock(hashtext(%s));

-- name: deliver_batch
UPDATE events SET delivered_at = %s
WHERE id = ANY(%s) AND delivered_at IS NULL AND cancelled_at IS NULL
    AND (deliver_at IS NULL OR deliver_at <= %s)
RETURNING id, env_id, name, data::text, event_key, ts, v, source, context::text, meta::text;

-- name: event_rows
SELECT id, env_id, name, data::text, user_data, user_subject, event_key, ts, v, source,
       context::text, account_id, received_at, deliver_at, delivered_at, cancelled_at,
       meta::text, traceparent
FROM events WHERE id = ANY(%s);

-- name: try_lock_name
SELECT pg_try_advisory_xact_lock(hashtext(%s));

-- name: flow_waits_done
DELETE FROM flow_waits WHERE run_id = ANY(%s);

-- name: flow_slots_counts
SELECT s.flow_key, count(*) FROM flow_slots s JOIN runs r ON r.id = s.run_id
WHERE s.flow_key = ANY(%s) AND r.lease_token = s.token AND r.lease_until >= %s
GROUP BY s.flow_key;

-- name: lock_names
SELECT count(pg_advisory_xact_lock(hashtext(k)))
FROM (SELECT k FROM unnest(%s::text[]) AS k ORDER BY k) AS sorted;

-- name: flow_lock_slots_of
SELECT count(pg_advisory_xact_lock(hashtext(k)))
FROM (SELECT flow_key AS k FROM flow_slots WHERE run_id = %s ORDER BY 1) AS sorted;

-- name: flow_release
WITH freed AS (DELETE FROM flow_slots WHERE run_id = %s RETURNING flow_key),
waiter AS (
    SELECT DISTINCT ON (w.flow_key) w.run_id FROM flow_waits w JOIN runs r ON r.id = w.run_id
    WHERE w.flow_key IN (SELECT flow_key FROM freed) AND w.reason = 'concurrency'
        AND r.due_at > %s
    ORDER BY w.flow_key, w.since, w.run_id)
UPDATE runs SET due_at = %s
WHERE id IN (SELECT run_id FROM waiter) AND lease_owner IS NULL AND due_at > %s
    AND status NOT IN ('Completed', 'Failed', 'Cancelled');

-- name: listed_runs_by_ids
SELECT r.id, r.env_id, r.function_id, r.queue, r.event_id, r.event_ids, r.status, r.attempt,
       r.due_at, r.lease_owner, r.lease_until, r.lease_token, r.created_at, r.started_at,
       r.ended_at, r.progress_at, r.output, r.error, r.parent_run_id, r.parent_step, r.rerun_of,
       r.replay_id, f.slug
FROM runs r JOIN functions f ON f.id = r.function_id
WHERE r.id = ANY(%s) ORDER BY r.id DESC;

-- name: list_runs_of_function
-- A function's runs in an id range, newest first, along runs_function (function_id, id).
-- Written as function_id = the function, PostgreSQL walks runs_pkey backwards instead and
-- filters the function: ids follow the table's order (correlation 1) while one function's
-- rows look scattered (function_id's correlation is low), so it prices the pkey's reads as
-- sequential and runs_function's as random. At 1,000,000 runs of 10 functions that read 10
-- rows per row kept, and every run of the table when a status filter matched none (951 ms
-- p95). As = ANY(ARRAY[the function]), the function is no constant of the sort, so only
-- runs_function gives the order asked for, in a custom plan and in the generic one a
-- prepared statement would switch to (a row-value range instead picks another index there).
-- Planned on each call: a generic plan prices the id range at a 200th of the table, and
-- list_runs_of_function went back to runs_pkey with a sort (2.8 s at 1,000,000 runs).
SELECT r.id, r.env_id, r.function_id, r.queue, r.event_id, r.event_ids, r.status, r.attempt,
       r.due_at, r.lease_owner, r.lease_until, r.lease_token, r.created_at, r.started_at,
       r.ended_at, r.progress_at, r.output, r.error, r.parent_run_id, r.parent_step, r.rerun_of,
       r.replay_id, f.slug
FROM runs r JOIN functions f ON f.id = r.function_id
WHERE r.function_id = ANY(ARRAY[%s]) AND r.id >= %s AND r.id < %s
    AND r.status IN (%s, %s, %s, %s, %s, %s, %s)
ORDER BY r.function_id DESC, r.id DESC LIMIT %s;

-- name: statuses_of_newest_function_runs
-- The same range, counted (see list_runs_of_function). Planned on each call. It reads a
-- column runs_function_status does not hold (event_id) on purpose: else, the table vacuumed,
-- PostgreSQL read that index only, every run of the function, and sorted them by id (78 ms at
-- 1,000,000 runs against 1 ms along runs_function).
SELECT status, count(event_id) FROM (SELECT status, event_id FROM runs
                              WHERE function_id = ANY(ARRAY[%s]) AND id >= %s AND id < %s
                              ORDER BY function_id DESC, id DESC LIMIT %s) AS newest
GROUP BY status;

-- name: run_marks_of_function
-- The same range, a few columns (see list_runs_of_function). Planned on each call.
SELECT id, function_id, status, event_id, started_at, ended_at FROM runs
WHERE function_id = ANY(ARRAY[%s]) AND id >= %s AND id < %s
ORDER BY function_id DESC, id DESC LIMIT %s;

-- name: run_marks_of_functions
-- run_marks_of_function for several functions in one statement: the newest LIMIT runs of
-- each (the app filter). Planned on each call.
SELECT m.id, m.function_id, m.status, m.event_id, m.started_at, m.ended_at
FROM unnest(%s::text[]) AS f(id) CROSS JOIN LATERAL (
    SELECT id, function_id, status, event_id, started_at, ended_at FROM runs
    WHERE function_id = ANY(ARRAY[f.id]) AND id >= %s AND id < %s
    ORDER BY function_id DESC, id DESC LIMIT %s) AS m;

-- name: flow_open_runs
-- A bulk cancel's next runs of a function that have not ended, oldest first, along
-- runs_function (see list_runs_of_function): written as function_id = the function,
-- PostgreSQL walked runs_pkey and filtered the function and the status, every run of the
-- table when the function had none open (2.5 s at 1,000,000 runs). Planned on each call.
-- It reads event_id, which runs_function_status does not hold: else PostgreSQL read that index
-- only, every run of the function, and sorted them by id (see
-- statuses_of_newest_function_runs). The caller takes the first column.
SELECT id, event_id FROM runs
WHERE function_id = ANY(ARRAY[%s]) AND id >= %s AND id < %s
    AND status NOT IN ('Completed', 'Failed', 'Cancelled')
ORDER BY function_id, id LIMIT %s;
