-- Erasing a person (privacy/erase.py).

-- name: privacy_env_by_name
SELECT id FROM environments WHERE name = ?;

-- name: privacy_user_key
SELECT wrapped FROM user_keys WHERE env_id = ? AND subject = ?;

-- name: privacy_blank_user_key
-- The key's bytes are overwritten before the row is deleted, so no older version of the row
-- holds them (with SQLite's secure_delete, the deleted row is zeroed as well).
UPDATE user_keys SET wrapped = ? WHERE env_id = ? AND subject = ?;

-- name: privacy_delete_user_key
DELETE FROM user_keys WHERE env_id = ? AND subject = ?;

-- name: privacy_count_events
SELECT count(*) FROM events WHERE env_id = ? AND user_subject = ?;

-- name: privacy_events_chunk
-- The next chunk of the person's events, in id order: the statements below take the chunk as
-- "their events up to the last id of it" (env_id, subject, last id, received by), so each is
-- one statement walking the events_user_subject index, not one per event.
SELECT id, event_key FROM events
WHERE env_id = ? AND user_subject = ? AND received_at <= ? ORDER BY id LIMIT ?;

-- name: privacy_runs_of_chunk
SELECT r.id, r.status, r.ended_at FROM events e JOIN runs r ON r.event_id = e.id
WHERE e.env_id = ? AND e.user_subject = ? AND e.id <= ? AND e.received_at <= ?;

-- name: privacy_delete_chunk_skips
DELETE FROM flow_skips WHERE event_id IN (
    SELECT id FROM events WHERE env_id = ? AND user_subject = ? AND id <= ? AND received_at <= ?);

-- name: privacy_delete_chunk
DELETE FROM events WHERE env_id = ? AND user_subject = ? AND id <= ? AND received_at <= ?;

-- name: privacy_blank_run_output
UPDATE runs SET output = ? WHERE id = ? AND output IS NOT NULL;

-- name: privacy_blank_run_error
UPDATE runs SET error = ? WHERE id = ? AND error IS NOT NULL;

-- name: privacy_blank_steps
UPDATE steps SET output = ? WHERE run_id = ? AND output IS NOT NULL;

-- name: privacy_blank_trigger_tasks
-- A Trigger.dev v2 run's tasks (its steps): what they were given, returned and failed with.
UPDATE trigger_tasks SET params = CASE WHEN params IS NULL THEN NULL ELSE ? END,
                         output = CASE WHEN output IS NULL THEN NULL ELSE ? END,
                         error = CASE WHEN error IS NULL THEN NULL ELSE ? END
WHERE run_id = ? AND (params IS NOT NULL OR output IS NOT NULL OR error IS NOT NULL);

-- name: privacy_blank_trigger_statuses
-- A Trigger.dev v2 run's statuses: their data, now and in their history.
UPDATE trigger_statuses SET data = CASE WHEN data IS NULL THEN NULL ELSE ? END, history = '[]'
WHERE run_id = ?;

-- name: privacy_mark_run
INSERT INTO erased_runs (run_id, erasure_id) VALUES (?, ?) ON CONFLICT (run_id) DO NOTHING;

-- name: privacy_run_erasure
SELECT erasure_id FROM erased_runs WHERE run_id = ?;

-- name: privacy_delete_claim
DELETE FROM event_idempotency WHERE env_id = ? AND event_key = ? AND event_id = ?;

-- name: privacy_delete_event
DELETE FROM events WHERE env_id = ? AND id = ?;

-- name: privacy_insert_erasure
INSERT INTO erasures (id, env_id, subject, actor, events_mode, key_destroyed, events,
                      created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?);

-- name: privacy_erasure_progress
UPDATE erasures SET events_deleted = events_deleted + ?, runs_cancelled = runs_cancelled + ?,
                    runs_erased = runs_erased + ?, steps_erased = steps_erased + ?
WHERE id = ?;

-- name: privacy_erasure_done
UPDATE erasures SET finished_at = ? WHERE id = ?;

-- name: privacy_erasure
SELECT id, env_id, subject, actor, events_mode, key_destroyed, events, events_deleted,
       runs_cancelled, runs_erased, steps_erased, created_at, finished_at
FROM erasures WHERE id = ?;

-- name: privacy_person_events
-- A page of a person's events, newest first, before a cursor.
SELECT id FROM events WHERE env_id = ? AND user_subject = ? AND id < ? ORDER BY id DESC LIMIT ?;
