-- Steps and events are written only by transactions that hold their run's row (locked by the
-- fence, or inserted by the same commit), so a foreign key's check on each of their inserts
-- (a lookup and a share lock on the run, per row: 14 rows per 3-action workflow) proves nothing
-- that the commit has not already made sure of. It cost about half of each insert's time. What
-- the keys gave besides, removing a deleted run's steps and events, a statement trigger does,
-- once per DELETE rather than once per row.
ALTER TABLE cairn_steps DROP CONSTRAINT cairn_steps_run_id_fkey;
ALTER TABLE cairn_events DROP CONSTRAINT cairn_events_run_id_fkey;

CREATE FUNCTION cairn_runs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM cairn_steps WHERE run_id IN (SELECT id FROM gone);
    DELETE FROM cairn_events WHERE run_id IN (SELECT id FROM gone);
    RETURN NULL;
END
$$;

CREATE TRIGGER cairn_runs_deleted AFTER DELETE ON cairn_runs
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION cairn_runs_deleted();
