-- The keys sealed values name by a short reference (sealing.py): a reference is a hash of the
-- key's name (master key id, environment, generation), and this table lets a process that
-- did not make it find the name again.
CREATE TABLE sealing_keys (
    ref BIGINT PRIMARY KEY,
    kid TEXT NOT NULL,
    env_id TEXT NOT NULL,
    generation INTEGER NOT NULL
);
