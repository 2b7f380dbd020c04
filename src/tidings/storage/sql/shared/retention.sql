-- Retention (events/retention.py, engine/housekeeping.py).

-- name: retention_of_env
SELECT events_ttl_ms, runs_ttl_ms, dedup_window_ms FROM env_settings WHERE env_id = ?;

-- name: retention_all
SELECT env_id, events_ttl_ms, runs_ttl_ms, dedup_window_ms FROM env_settings;

-- name: retention_save
INSERT INTO env_settings (env_id, events_ttl_ms, runs_ttl_ms, dedup_window_ms, updated_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (env_id) DO UPDATE SET events_ttl_ms = excluded.events_ttl_ms,
    runs_ttl_ms = excluded.runs_ttl_ms, dedup_window_ms = excluded.dedup_window_ms,
    updated_at = excluded.updated_at;

-- name: retention_envs
SELECT e.id, s.events_ttl_ms, s.runs_ttl_ms FROM environments e
LEFT JOIN env_settings s ON s.env_id = e.id ORDER BY e.id;

-- name: retention_batched_floor
-- The oldest first event of a batch not ended: events from there on may be in one.
SELECT min(event_id) FROM runs
WHERE event_ids IS NOT NULL AND status NOT IN ('Completed', 'Failed', 'Cancelled');

-- name: retention_expired_events
-- Expired events nothing needs: not the trigger of a run that has not ended, not a delayed
-- event still to deliver (the batch floor is the caller's).
SELECT e.id, e.event_key FROM events e
WHERE e.env_id = ? AND e.id < ?
  AND NOT (e.delivered_at IS NULL AND e.cancelled_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_id = e.id
                  AND r.status NOT IN ('Completed', 'Failed', 'Cancelled'))
ORDER BY e.id LIMIT ?;

-- name: retention_delete_expired_events
-- The chunk retention_expired_events found, as one statement: the same expired events up to
-- its last id (env_id, last id: below the cutoff, and the only bound, so that SQLite walks
-- events_env_id up to it, not on to the cutoff).
DELETE FROM events
WHERE env_id = ? AND id <= ?
  AND NOT (delivered_at IS NULL AND cancelled_at IS NULL)
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.event_id = events.id
                  AND r.status NOT IN ('Completed', 'Failed', 'Cancelled'));

-- name: retention_delete_orphan_skips
-- The flow-control skips of a chunk's events once they are deleted: from its first id to its
-- last, those whose event is gone. A walk of flow_skips' key (usually empty), where matching
-- the chunk's own test walked its events a second time (a sixth of the chunk's CPU).
DELETE FROM flow_skips WHERE event_id >= ? AND event_id <= ?
  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = flow_skips.event_id);

-- name: retention_delete_claim
DELETE FROM event_idempotency WHERE env_id = ? AND event_key = ? AND event_id = ?;

-- name: retention_expired_runs
-- Runs that ended before the cutoff (created before it too, which the index walks); not
-- those a replay still has to rerun.
SELECT r.id FROM runs r
WHERE r.env_id = ? AND r.id < ? AND r.ended_at < ?
  AND r.status IN ('Completed', 'Failed', 'Cancelled')
  AND NOT EXISTS (SELECT 1 FROM replay_sources s WHERE s.source_id = r.id)
ORDER BY r.id LIMIT ?;

-- name: retention_delete_run
DELETE FROM runs WHERE id = ?;

-- name: retention_delete_steps
DELETE FROM steps WHERE run_id = ?;

-- name: retention_delete_trigger_tasks
DELETE FROM trigger_tasks WHERE run_id = ?;

-- name: retention_delete_trigger_statuses
DELETE FROM trigger_statuses WHERE run_id = ?;

-- name: retention_delete_erased_run
DELETE FROM erased_runs WHERE run_id = ?;
