-- Trigger.dev v2: io.waitForRequest's task waits for a POST to its callback URL, which
-- carries this secret (anyone holding the URL may complete the task, as on v2).
ALTER TABLE trigger_tasks ADD COLUMN callback_secret TEXT;
