-- The run list filtered by both a workflow and a status (the dashboard, `cairn runs --workflow W
-- --status S`, GET /api/runs?workflow=&status=) walks the runs of that pair in keyset order: the
-- status's index, tested run by run for the workflow, read every run of a common status to find a
-- workflow's few (16 ms at 60,000 waiting runs, 22-35 ms at 99,000). With the id, a page is read in
-- order without a sort, and counts by status of a workflow (the dashboard's tabs) from the index
-- alone (20-27 ms for a workflow of 60,000 runs among 100,000, 5-7 ms so).
CREATE INDEX cairn_runs_workflow_status ON cairn_runs (workflow, status, created_at, id);
-- A page after another seeks to its keyset, (created_at, id), in the index of its filter: the
-- indexes by status and by workflow alone had no id, so SQLite sorted each run of a page with the
-- runs created at the same time as it (all of them, for runs started together in one batch).
DROP INDEX cairn_runs_status;
CREATE INDEX cairn_runs_status ON cairn_runs (status, created_at, id);
DROP INDEX cairn_runs_workflow;
CREATE INDEX cairn_runs_workflow ON cairn_runs (workflow, created_at, id);
