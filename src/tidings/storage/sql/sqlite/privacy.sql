-- SQLite's own statements for erasing a person (privacy/erase.py).

-- name: privacy_secure_delete_on
-- Deleted rows and freed pages are overwritten with zeros, not left in the file.
PRAGMA secure_delete = ON;

-- name: privacy_secure_delete_off
PRAGMA secure_delete = OFF;

-- name: privacy_lifecycle_events
-- The lifecycle events a run emitted when it ended (tidings/function.finished, failed,
-- cancelled): their ids start with its end time, their data names the run (sealed data,
-- sealing.py, is opened and checked by the caller; binary, it is not JSON to look into).
SELECT id, data FROM events
WHERE env_id = ? AND id >= ? AND id < ? AND source = 'tidings'
  AND CASE WHEN substr(data, 1, 1) = x'00' THEN 1
      ELSE json_extract(data, '$.run_id') = ? OR json_type(data) = 'text' END;

-- name: retention_freelist
SELECT freelist_count FROM pragma_freelist_count;

-- name: retention_free_page
-- One free page returned to the file system (Python's sqlite3 steps a pragma once, so
-- incremental_vacuum(N) would free one page anyway).
PRAGMA incremental_vacuum(1);
