"""Functions as Tidings knows them: definitions (``model``), their registration in the database
(``registration``), the registry of live functions each process routes with (``registry``),
and what a definition holds: flow control settings (``flow_config``), CEL expressions
(``expressions``, ``cel_check``), payload filters (``filters``) and cron schedules (``cron``)."""
