-- pruned_at: set when a prune began deleting the run. Its history (steps, events, properties,
-- memory, signals) goes in transactions of a few thousand rows, so that a run of 200,000 steps
-- never holds a transaction open for seconds, and its row goes last: from the first such
-- transaction the run counts as deleted (not shown, not retried or forked), and the next prune
-- finishes it when the process died in between. The index finds those runs, which are few.
ALTER TABLE cairn_runs ADD COLUMN pruned_at double precision;
CREATE INDEX cairn_runs_pruning ON cairn_runs (pruned_at) WHERE pruned_at IS NOT NULL;

-- The trigger that deletes a deleted run's steps and events (migration 0007) joined the deleted ids
-- to a sequential scan of both tables, once per DELETE of runs: 30 ms at 200,000 events, for each
-- piece of a prune, most of them finding nothing left. As an array, the ids are looked up in the
-- tables' keys (3.5 ms).
CREATE OR REPLACE FUNCTION cairn_runs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM cairn_steps WHERE run_id = ANY(ARRAY(SELECT id FROM gone));
    DELETE FROM cairn_events WHERE run_id = ANY(ARRAY(SELECT id FROM gone));
    RETURN NULL;
END
$$;
