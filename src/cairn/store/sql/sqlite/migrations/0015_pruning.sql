-- pruned_at: set when a prune began deleting the run. Its history (steps, events, properties,
-- memory, signals) goes in transactions of a few thousand rows, so that a run of 200,000 steps
-- never holds the write lock for seconds, and its row goes last: from the first such transaction
-- the run counts as deleted (not shown, not retried or forked), and the next prune finishes it
-- when the process died in between. The index finds those runs, which are few.
ALTER TABLE cairn_runs ADD COLUMN pruned_at REAL;
CREATE INDEX cairn_runs_pruning ON cairn_runs (pruned_at) WHERE pruned_at IS NOT NULL;
