-- API keys get the permission dashboard passwords have (tidings keys create --kind api
-- --reads-user): whether what they read through /v1, and the dashboard sessions they sign in,
-- carry events' user decrypted under serve. Without it user is masked. Keys made before this
-- have it not: the permission is given explicitly, never by default.
ALTER TABLE api_keys ADD COLUMN reads_user INTEGER NOT NULL DEFAULT 0;
