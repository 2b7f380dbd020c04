-- The append path (``postgres.py``): idempotency claims, event inserts and COPY; and the
-- NOTIFY that tells other processes this one committed (``storage/changes.py``).

-- name: notify_live
SELECT pg_notify('tidings_live', %s);

-- name: claim_event_key
INSERT INTO event_idempotency (env_id, event_key, event_id, expires_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (env_id, event_key) DO UPDATE
    SET event_id = excluded.event_id, expires_at = excluded.expires_at
    WHERE event_idempotency.expires_at <= %s
RETURNING event_id;

-- name: event_id_for_key
SELECT event_id FROM event_idempotency WHERE env_id = %s AND event_key = %s;

-- name: insert_event
INSERT INTO events (id, env_id, name, data, user_data, user_subject, event_key, ts, v, source,
                    context, account_id, received_at, deliver_at, delivered_at, meta,
                    traceparent)
VALUES (%s, %s, %s, %s::json, %s, %s, %s, %s, %s, %s, %s::json, %s, %s, %s, %s, %s::json, %s)
ON CONFLICT (id) DO NOTHING;

-- name: copy_events
COPY events (id, env_id, name, data, user_data, user_subject, event_key, ts, v, source, context,
             account_id, received_at, deliver_at, delivered_at, meta, traceparent) FROM STDIN;
