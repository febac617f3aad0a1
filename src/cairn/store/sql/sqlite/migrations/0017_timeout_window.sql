-- timeout_from: when the run's workflow timeout began counting, the clock of its first activation
-- (its started_at), or of its first activation since its last retry; NULL before (a run pending in
-- its queue does not time out). The timeout counted from created_at: a run that waited for a slot
-- timed out before it began, and a retry came too late for a run created longer ago. A run under
-- way as this runs counts from its start.
ALTER TABLE cairn_runs ADD COLUMN timeout_from REAL;
UPDATE cairn_runs SET timeout_from = started_at WHERE completed_at IS NULL AND started_at IS NOT NULL;
