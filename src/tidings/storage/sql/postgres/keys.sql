-- name: notify_keys
-- Every process's key gate forgets the keys it checked (``Gate.forget``), at commit.
SELECT pg_notify('tidings_keys', '');
