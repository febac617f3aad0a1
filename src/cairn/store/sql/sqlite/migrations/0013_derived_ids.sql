-- derives_id: 1 when the workflow's class derives a run's id from its input (`id(self, ...)`). That
-- code runs only where the workflow is imported: a start by name elsewhere (the CLI, the HTTP API)
-- without an id is refused rather than given a new id each time, which broke idempotent starts.
ALTER TABLE cairn_workflows ADD COLUMN derives_id INTEGER NOT NULL DEFAULT 0;
