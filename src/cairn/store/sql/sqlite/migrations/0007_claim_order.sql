-- Each kind of due run in claim order (priority first, then oldest): a claim walks its index and
-- stops after its limit, instead of sorting every due run (see claim_runs).
CREATE INDEX cairn_runs_due_new ON cairn_runs (priority DESC, ready_at) WHERE status = 'pending' AND ready_at IS NOT NULL;
CREATE INDEX cairn_runs_due_under_way ON cairn_runs (priority DESC, ready_at)
    WHERE status IN ('running', 'waiting') AND ready_at IS NOT NULL;
