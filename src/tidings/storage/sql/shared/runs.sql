-- Queries of the run queue, shared by both dialects (`?` becomes `%s` on PostgreSQL).

-- name: registry_version
SELECT version FROM registry WHERE name = 'functions';

-- name: bump_registry
INSERT INTO registry (name, version) VALUES ('functions', 1)
ON CONFLICT (name) DO UPDATE SET version = registry.version + 1;

-- name: upsert_function
INSERT INTO functions (id, env_id, app_id, slug, name, queue, url, config, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (env_id, slug) DO UPDATE SET
    app_id = excluded.app_id, name = excluded.name, queue = excluded.queue, url = excluded.url,
    config = excluded.config, updated_at = excluded.updated_at, archived_at = NULL;

-- name: function_by_slug
SELECT id, env_id, app_id, slug, name, queue, url, config, archived_at
FROM functions WHERE env_id = ? AND slug = ?;

-- name: function_by_id
SELECT id, env_id, app_id, slug, name, queue, url, config, archived_at
FROM functions WHERE id = ?;

-- name: live_functions
SELECT id, env_id, app_id, slug, name, queue, url, config, archived_at
FROM functions WHERE archived_at IS NULL ORDER BY env_id, slug;

-- name: app_functions
SELECT id, env_id, app_id, slug, name, queue, url, config, archived_at
FROM functions WHERE env_id = ? AND app_id = ? AND archived_at IS NULL;

-- name: archive_function
UPDATE functions SET archived_at = ? WHERE id = ? AND archived_at IS NULL;

-- name: insert_run
INSERT INTO runs (id, env_id, function_id, queue, event_id, event_ids, dedup_key, status, due_at,
                  created_at, progress_at, parent_run_id, parent_step, rerun_of, replay_id)
VALUES (?, ?, ?, ?, ?, ?, ?, 'Queued', ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (function_id, dedup_key) DO NOTHING;

-- name: run_by_id
SELECT id, env_id, function_id, queue, event_id, event_ids, status, attempt, due_at,
       lease_owner, lease_until, lease_token, created_at, started_at, ended_at, progress_at,
       output, error, parent_run_id, parent_step, rerun_of, replay_id
FROM runs WHERE id = ?;

-- name: run_for_dedup
SELECT id FROM runs WHERE function_id = ? AND dedup_key = ?;

-- name: claim_runs
UPDATE runs SET lease_owner = ?, lease_until = ?, lease_token = lease_token + 1,
                started_at = COALESCE(started_at, ?),
                status = CASE WHEN status = 'Queued' THEN 'Running' ELSE status END
WHERE id IN (SELECT id FROM runs WHERE queue = ? AND due_at <= ?
             AND (lease_until IS NULL OR lease_until < ?) ORDER BY due_at LIMIT ?)
RETURNING id, env_id, function_id, queue, event_id, event_ids, status, attempt, due_at,
          lease_owner, lease_until, lease_token, created_at, started_at, ended_at, progress_at,
          output, error, parent_run_id, parent_step, rerun_of, replay_id;

-- name: next_due
-- Runs in flight are due too, but not claimable: counting them would make an idle executor
-- poll without pause until their calls end (a lost lease is found on the next idle poll).
SELECT min(due_at) FROM runs WHERE queue = ? AND due_at IS NOT NULL AND lease_until IS NULL;

-- name: renew_lease
-- Only a lease still held: one released or rescheduled (same token) stays free.
UPDATE runs SET lease_until = ? WHERE id = ? AND lease_token = ? AND lease_owner IS NOT NULL;

-- name: leases_of_owner
SELECT id, lease_token FROM runs
WHERE queue = ? AND due_at IS NOT NULL AND lease_owner = ? AND lease_until < ?;

-- name: release_lease
UPDATE runs SET lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_token = ?;

-- name: run_leased
SELECT status FROM runs WHERE id = ? AND lease_token = ?;

-- name: steps_of_run
SELECT step, name, position, status, output, attempts, started_at, ended_at, kind
FROM steps WHERE run_id = ? ORDER BY position;

-- name: invoked_runs
SELECT parent_step, id FROM runs WHERE parent_run_id = ?;

-- name: step_count
SELECT count(*) FROM steps WHERE run_id = ?;

-- name: insert_step
INSERT INTO steps (run_id, step, name, position, status, output, attempts, started_at, ended_at,
                   kind)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, step) DO UPDATE SET
    status = excluded.status, output = excluded.output, kind = excluded.kind,
    attempts = CASE WHEN excluded.attempts > steps.attempts THEN excluded.attempts
                    ELSE steps.attempts END,
    started_at = excluded.started_at, ended_at = excluded.ended_at
WHERE steps.status = 'errored';

-- name: step_attempts
SELECT attempts FROM steps WHERE run_id = ? AND step = ?;

-- name: insert_failed_attempt
INSERT INTO step_attempts (run_id, step, attempt, started_at, ended_at, error)
VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING;

-- name: failed_attempts_of_run
SELECT step, attempt, started_at, ended_at, error FROM step_attempts WHERE run_id = ?
ORDER BY ended_at, step, attempt;

-- name: progress
UPDATE runs SET progress_at = ? WHERE id = ?;

-- name: finish_run
UPDATE runs SET status = ?, output = ?, error = ?, ended_at = ?, due_at = NULL,
                lease_owner = NULL, lease_until = NULL
WHERE id = ? AND lease_token = ?;

-- name: reschedule_run
-- `error`: the error of the attempt that failed, while the run waits to try again; else NULL.
UPDATE runs SET status = ?, attempt = ?, due_at = ?, error = ?, lease_owner = NULL,
    lease_until = NULL
WHERE id = ? AND lease_token = ?;

-- name: hand_back_run
UPDATE runs SET due_at = CASE WHEN due_at < ? THEN ? ELSE due_at END, lease_owner = NULL,
                lease_until = NULL
WHERE id = ? AND lease_token = ?;

-- name: wake_run
UPDATE runs SET due_at = ?, status = 'Running'
WHERE id = ? AND status IN ('Sleeping', 'Waiting', 'Running', 'Queued');

-- name: insert_pause
INSERT INTO pauses (run_id, step, name, kind, env_id, event_name, condition, trigger_event,
                    correlation, since_id, until)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id, step) DO NOTHING;

-- name: pauses_of_run
SELECT step, name, kind, until, correlation FROM pauses WHERE run_id = ?;

-- name: delete_pause
DELETE FROM pauses WHERE run_id = ? AND step = ?;

-- name: delete_pause_group
-- The other pauses of a step waiting on any of several (``journal.ANY_OF``).
DELETE FROM pauses WHERE run_id = ? AND step LIKE ?;

-- name: delete_pauses_of_run
DELETE FROM pauses WHERE run_id = ?;

-- name: waits_for_event
SELECT run_id, step, name, condition, trigger_event, since_id
FROM pauses WHERE env_id = ? AND event_name = ? AND kind = 'wait';

-- name: pause_by_correlation
SELECT run_id, step, name, env_id FROM pauses WHERE correlation = ?;

-- name: min_pause_until
SELECT min(until) FROM pauses WHERE run_id = ?;

-- name: undelivered_now
SELECT id FROM events INDEXED BY events_undelivered
WHERE delivered_at IS NULL AND cancelled_at IS NULL AND deliver_at IS NULL AND id < ?
ORDER BY id LIMIT ?;

-- name: undelivered_due
SELECT id FROM events
WHERE delivered_at IS NULL AND cancelled_at IS NULL AND deliver_at <= ?
ORDER BY deliver_at LIMIT ?;

-- name: next_delivery
SELECT min(deliver_at) FROM events
WHERE delivered_at IS NULL AND cancelled_at IS NULL AND deliver_at IS NOT NULL;

-- name: events_since
SELECT id FROM events WHERE env_id = ? AND name = ? AND id >= ? ORDER BY id LIMIT 1000;

-- name: cancel_event
UPDATE events SET cancelled_at = ? WHERE env_id = ? AND id = ? AND delivered_at IS NULL
    AND cancelled_at IS NULL;

-- name: lock_name_shared
SELECT ?;

-- name: lock_name
SELECT ?;

-- name: event_for_routing
SELECT id, env_id, name, data, event_key, ts, v, source, context, meta, deliver_at
FROM events WHERE id = ?;

-- name: event_state
SELECT delivered_at, cancelled_at FROM events WHERE env_id = ? AND id = ?;

-- name: notify
SELECT ?;

-- name: insert_event
INSERT INTO events (id, env_id, name, data, user_data, user_subject, event_key, ts, v, source,
                    context, account_id, received_at, deliver_at, delivered_at, meta)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING;

-- name: runs_of_env
SELECT id, env_id, function_id, queue, event_id, event_ids, status, attempt, due_at,
       lease_owner, lease_until, lease_token, created_at, started_at, ended_at, progress_at,
       output, error, parent_run_id, parent_step, rerun_of, replay_id
FROM runs WHERE env_id = ? ORDER BY id;

-- name: list_runs
SELECT r.id, r.env_id, r.function_id, r.queue, r.event_id, r.event_ids, r.status, r.attempt,
       r.due_at, r.lease_owner, r.lease_until, r.lease_token, r.created_at, r.started_at,
       r.ended_at, r.progress_at, r.output, r.error, r.parent_run_id, r.parent_step, r.rerun_of,
       r.replay_id, f.slug
FROM runs r JOIN functions f ON f.id = r.function_id
WHERE r.env_id = ? AND r.id >= ? AND r.id < ? AND r.status IN (?, ?, ?, ?, ?, ?, ?)
ORDER BY r.id DESC LIMIT ?;

-- name: list_runs_of_function
SELECT r.id, r.env_id, r.function_id, r.queue, r.event_id, r.event_ids, r.status, r.attempt,
       r.due_at, r.lease_owner, r.lease_until, r.lease_token, r.created_at, r.started_at,
       r.ended_at, r.progress_at, r.output, r.error, r.parent_run_id, r.parent_step, r.rerun_of,
       r.replay_id, f.slug
FROM runs r JOIN functions f ON f.id = r.function_id
WHERE r.function_id = ? AND r.id >= ? AND r.id < ? AND r.status IN (?, ?, ?, ?, ?, ?, ?)
ORDER BY r.id DESC LIMIT ?;

-- name: listed_run
SELECT r.id, r.env_id, r.function_id, r.queue, r.event_id, r.event_ids, r.status, r.attempt,
       r.due_at, r.lease_owner, r.lease_until, r.lease_token, r.created_at, r.started_at,
       r.ended_at, r.progress_at, r.output, r.error, r.parent_run_id, r.parent_step, r.rerun_of,
       r.replay_id, f.slug
FROM runs r JOIN functions f ON f.id = r.function_id
WHERE r.id = ?;

-- name: listed_runs_of_event
SELECT r.id, r.env_id, r.function_id, r.queue, r.event_id, r.event_ids, r.status, r.attempt,
       r.due_at, r.lease_owner, r.lease_until, r.lease_token, r.created_at, r.started_at,
       r.ended_at, r.progress_at, r.output, r.error, r.parent_run_id, r.parent_step, r.rerun_of,
       r.replay_id, f.slug
FROM runs r JOIN functions f ON f.id = r.function_id
WHERE r.env_id = ? AND r.event_id = ? ORDER BY r.id DESC;

-- name: pause_details
SELECT step, name, kind, event_name, condition, correlation, until
FROM pauses WHERE run_id = ? ORDER BY until, step;

-- name: cancel_run_fenced
UPDATE runs SET status = 'Cancelled', error = ?, ended_at = ?, due_at = NULL,
                lease_owner = NULL, lease_until = NULL, lease_token = lease_token + 1
WHERE id = ? AND status NOT IN ('Completed', 'Failed', 'Cancelled');

-- name: insert_replay_sources
-- The tombstones that erasing a person left (erased_runs) have no event to replay.
INSERT INTO replay_sources (replay_id, source_id)
SELECT ?, id FROM runs WHERE function_id = ? AND id >= ? AND id < ? AND status IN (?, ?, ?)
  AND id NOT IN (SELECT run_id FROM erased_runs);

-- name: next_replay_sources
SELECT source_id FROM replay_sources WHERE replay_id = ? ORDER BY source_id LIMIT ?;

-- name: drop_replay_sources
DELETE FROM replay_sources WHERE replay_id = ? AND source_id <= ?;

-- name: unfinished_replays
SELECT p.id, p.function_id FROM replays p
WHERE EXISTS (SELECT 1 FROM replay_sources s WHERE s.replay_id = p.id) ORDER BY p.id;

-- name: insert_replay
INSERT INTO replays (id, env_id, function_id, since_ms, until_ms, statuses, total, created,
                     created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?);

-- name: replay_progress
UPDATE replays SET created = created + ? WHERE id = ?;

-- name: replay_by_id
SELECT p.id, p.env_id, p.function_id, f.slug, p.since_ms, p.until_ms, p.statuses, p.total,
       p.created, p.created_at
FROM replays p JOIN functions f ON f.id = p.function_id
WHERE p.id = ?;

-- name: event_row
SELECT id, env_id, name, data, user_data, user_subject, event_key, ts, v, source, context,
       account_id, received_at, deliver_at, delivered_at, cancelled_at, meta
FROM events WHERE id = ?;

-- name: deliver_batch
UPDATE events SET delivered_at = ?
WHERE id IN (SELECT value FROM json_each(?)) AND delivered_at IS NULL AND cancelled_at IS NULL
    AND (deliver_at IS NULL OR deliver_at <= ?)
RETURNING id, env_id, name, data, event_key, ts, v, source, context, meta;

-- name: event_rows
SELECT id, env_id, name, data, user_data, user_subject, event_key, ts, v, source, context,
       account_id, received_at, deliver_at, delivered_at, cancelled_at, meta, traceparent
FROM events WHERE id IN (SELECT value FROM json_each(?));

-- name: insert_run_leased
INSERT INTO runs (id, env_id, function_id, queue, event_id, event_ids, dedup_key, status, due_at,
                  created_at, progress_at, parent_run_id, parent_step, rerun_of, replay_id,
                  lease_owner, lease_until, lease_token, started_at)
VALUES (?, ?, ?, ?, ?, ?, ?, 'Running', ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)
ON CONFLICT (function_id, dedup_key) DO NOTHING;
