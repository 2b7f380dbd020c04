-- SQLite's own statements for erasing a person (privacy/erase.py).

-- name: privacy_secure_delete_on
-- Deleted rows and freed pages are overwritten with zeros, not left in the file.
PRAGMA secure_delete = ON;

-- name: privacy_secure_delete_off
PRAGMA secure_delete = OFF;
