-- A limited queue's claim reads neither the runs waiting to start nor those of keys at their limit
-- (see queue_tx._claim_runs), however many there are.
-- queue_claimed_at: when the queue's claim last leased the run to start it (a control change clears
-- it). A pending run so marked, under a live lease, is in flight; the pending runs marked are those,
-- and the few whose claim lapsed or was handed back, not yet claimed again. An index of lease_until
-- itself would cost every commit and heartbeat its HOT update (see 0006): this column changes only
-- when a claim starts a run, and a pending run leaves the index when it begins. The runs leased
-- now are marked here; a worker of an older version marks none (they count once they begin).
ALTER TABLE cairn_runs ADD COLUMN queue_claimed_at REAL;
UPDATE cairn_runs SET queue_claimed_at = lease_until
WHERE status = 'pending' AND queue <> 'default' AND lease_until IS NOT NULL;
CREATE INDEX cairn_runs_queue_claimed ON cairn_runs (queue, queue_claimed_at)
    WHERE status = 'pending' AND queue <> 'default' AND queue_claimed_at IS NOT NULL;
-- Pending runs of named queues by key, each key's in claim order (keyless ones together): a claim
-- that found the first runs in claim order all of keys at their limit takes each other key's first
-- runs from here, one short walk per key, rather than reading the backlog ahead of them.
CREATE INDEX cairn_runs_queued_keys ON cairn_runs (queue, queue_key, priority DESC, ready_at)
    WHERE status = 'pending' AND queue <> 'default';
