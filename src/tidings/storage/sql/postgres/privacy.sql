-- PostgreSQL's own statements for erasing a person (privacy/erase.py).

-- name: privacy_lifecycle_events
-- The lifecycle events a run emitted when it ended (tidings/function.finished, failed,
-- cancelled): their ids start with its end time, their data names the run (sealed data,
-- sealing.py, is opened and checked by the caller).
SELECT id, data FROM events
WHERE env_id = %s AND id >= %s AND id < %s AND source = 'tidings'
  AND (data ->> 'run_id' = %s OR json_typeof(data) = 'string');
