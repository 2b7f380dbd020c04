-- A function's runs by status, newest last: a bulk cancel's or replay's preview counts the runs
-- of one function in the statuses it touches along this index alone (it read the status of
-- every run of the function: 0.4-0.8 s per 100,000 runs), and a status-filtered list of one
-- function's runs reads the matching runs only.
CREATE INDEX runs_function_status ON runs (function_id, status, id);
