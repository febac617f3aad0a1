-- Due runs in claim order for each status (priority first, then oldest): a claim walks it and stops
-- after its limit, instead of sorting every due run (see claim_runs). Status leads, so that even a
-- planner without statistics (SQLite never gathers them by itself) prefers it to cairn_runs_status.
CREATE INDEX cairn_runs_claim ON cairn_runs (status, priority DESC, ready_at) WHERE ready_at IS NOT NULL;
