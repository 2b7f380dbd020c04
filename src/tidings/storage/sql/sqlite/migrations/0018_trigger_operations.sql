-- Trigger.dev v2: a task whose HTTP request Tidings performs (io.backgroundFetch,
-- io.backgroundFetchResponse, io.backgroundPoll): fetch, fetch-response or fetch-poll.
ALTER TABLE trigger_tasks ADD COLUMN operation TEXT;
