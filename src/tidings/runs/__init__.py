"""The run queue, kept in the database: runs and their leases (``store``), what each run did and
waits for (``journal``: steps and pauses), what the runs API reads and its levers write
(``admin``), concurrency slots (``slots``), and waking this process's executors (``local``)."""
