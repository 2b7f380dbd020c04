-- Reading the event log (``tidings/events/reads.py``). Ids are ULIDs: a range of ids is a range
-- of time, and a page walks ``events_env_id`` (or ``events_env_name_id``) backwards.

-- name: get_event
SELECT id, env_id, name, data, user_data, user_subject, event_key, ts, v, source, context,
       account_id, received_at, deliver_at, delivered_at, cancelled_at, meta
FROM events WHERE env_id = ? AND id = ?;

-- name: list_events
SELECT id, env_id, name, data, user_data, user_subject, event_key, ts, v, source, context,
       account_id, received_at, deliver_at, delivered_at, cancelled_at, meta
FROM events WHERE env_id = ? AND id >= ? AND id < ? ORDER BY id DESC LIMIT ?;

-- name: list_events_by_name
SELECT id, env_id, name, data, user_data, user_subject, event_key, ts, v, source, context,
       account_id, received_at, deliver_at, delivered_at, cancelled_at, meta
FROM events WHERE env_id = ? AND name = ? AND id >= ? AND id < ? ORDER BY id DESC LIMIT ?;
