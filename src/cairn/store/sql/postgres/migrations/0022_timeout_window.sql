-- timeout_from: when the run's workflow timeout began counting again after a retry (the retry's
-- time); NULL when it counts from the run's start (started_at). The timeout counted from
-- created_at: a run that waited for a slot in its queue timed out before it began, and a retry
-- came too late for a run created longer ago.
ALTER TABLE cairn_runs ADD COLUMN timeout_from double precision;
