-- Inngest's event meta (its sessions, resolved at ingest), as JSON like context. A nullable
-- column without a default: no table rewrite.
ALTER TABLE events ADD COLUMN meta JSON;
