-- Inngest's event meta (its sessions, resolved at ingest), as JSON like context. A new column
-- is NULL in every stored row: no table rewrite.
ALTER TABLE events ADD COLUMN meta BLOB;
