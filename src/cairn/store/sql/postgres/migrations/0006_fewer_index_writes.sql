-- Room on each page of the runs table for the next version of its rows. A commit that leaves a
-- run's indexed columns as they were (status, ready_at: a run still running, its next action
-- already leased) can then write the new version beside the old one without touching any index
-- (a HOT update); with full pages every version went to another page, with an entry in each of
-- the table's five indexes. Pages written from now on keep the room.
ALTER TABLE cairn_runs SET (fillfactor = 70);

-- An event row went into two indexes: its id (the primary key) and (run_id, id), which every
-- read of events uses. The second alone identifies a row as well (ids are unique), so it becomes
-- the primary key and each event row is indexed once.
ALTER TABLE cairn_events DROP CONSTRAINT cairn_events_pkey;
DROP INDEX cairn_events_run;
ALTER TABLE cairn_events ADD PRIMARY KEY (run_id, id);
