-- The run list filtered by both a workflow and a status (the dashboard, `cairn runs --workflow W
-- --status S`, GET /api/runs?workflow=&status=) walks the runs of that pair in keyset order, and
-- counts by status of a workflow (the dashboard's tabs) are an index-only scan of it (20 ms for a
-- workflow of 60,000 runs among 100,000, 9-10 ms so).
CREATE INDEX cairn_runs_workflow_status ON cairn_runs (workflow, status, created_at, id);
-- The planner takes a workflow and a status for independent: a common workflow and a common status
-- whose runs together are few (the waiting runs of a workflow that mostly completes, among another's
-- sleepers) it expected on every other run, and walked every run newest first to find them (10-12
-- ms at 100,000 runs, with the index above too). The pairs' own frequencies, gathered by ANALYZE
-- (autovacuum's included), let it walk their index (0.5 ms).
CREATE STATISTICS cairn_runs_workflow_status (mcv) ON workflow, status FROM cairn_runs;
-- A page after another seeks to its keyset, (created_at, id), in the index of its filter: the
-- indexes by status and by workflow alone had no id, so SQLite sorted each run of a page with the
-- runs created at the same time as it (all of them, for runs started together in one batch).
DROP INDEX cairn_runs_status;
CREATE INDEX cairn_runs_status ON cairn_runs (status, created_at, id);
DROP INDEX cairn_runs_workflow;
CREATE INDEX cairn_runs_workflow ON cairn_runs (workflow, created_at, id);
