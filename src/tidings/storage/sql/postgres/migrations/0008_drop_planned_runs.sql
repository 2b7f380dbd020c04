-- Runs are no longer marked for step planning after parallel steps: as on Inngest,
-- `disable_immediate_execution` is set only on the requests of a parallel group's steps.
DROP TABLE planned_runs;
