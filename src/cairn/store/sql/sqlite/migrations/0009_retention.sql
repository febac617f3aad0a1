-- Finished runs by when they finished: retention deletes the oldest in small batches.
CREATE INDEX cairn_runs_finished ON cairn_runs (completed_at) WHERE completed_at IS NOT NULL;
