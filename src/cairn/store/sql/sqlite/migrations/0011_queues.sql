-- Queues with flow control. cairn_queues: each queue's limits as its declarations upserted them
-- (NULL: no limit; the last declaration wins; limited: any limit at all) and its rate: starts are
-- spaced rate_period / rate_n apart, rate_next_at being when the next may be claimed (rate_starts:
-- starts counted). A claim of a limited queue locks its row, so claims of one queue take turns
-- while claims of other queues never wait on it.
CREATE TABLE cairn_queues (
    name         text PRIMARY KEY,
    concurrency  integer,
    per_worker   integer,
    per_key      integer,
    rate_n       integer,
    rate_period  REAL,
    priority     integer NOT NULL DEFAULT 0,
    limited      integer NOT NULL DEFAULT 0,
    rate_next_at REAL,
    rate_starts integer NOT NULL DEFAULT 0,
    declared_by  text,
    updated_at   REAL NOT NULL
);
-- A run's key (per_key counts runs at once per key) and its dedup_key: one unfinished run per
-- (queue, dedup_key); a run that ends leaves the index, so the key is free again.
ALTER TABLE cairn_runs ADD COLUMN queue_key text;
ALTER TABLE cairn_runs ADD COLUMN dedup_key text;
CREATE UNIQUE INDEX cairn_runs_dedup ON cairn_runs (queue, dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('pending', 'running', 'waiting', 'paused');
-- Unfinished runs of named queues, in claim order: a limited queue's claim walks its pending runs
-- and counts those in flight here. The default queue takes no limits and stays out of it, so its
-- runs cost no entry (the queries repeat "queue <> 'default'" so that the planner may use it).
CREATE INDEX cairn_runs_queued ON cairn_runs (queue, status, priority DESC, ready_at)
    WHERE queue <> 'default' AND status IN ('pending', 'running', 'waiting', 'paused');
-- Action attempts of named queues, by holder: in flight across the cluster and in one worker.
CREATE INDEX cairn_steps_queued ON cairn_steps (queue, status, lease_owner)
    WHERE kind = 'action' AND status IN ('scheduled', 'running') AND queue <> 'default';
