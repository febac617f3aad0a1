-- PostgreSQL's own statements, where the backends truly differ.

-- name: claim_plan
-- A claim walks cairn_runs_claim in order and stops after its limit. On a table whose statistics
-- are behind (runs were just started by the thousand), the planner guesses a dozen due runs and
-- picks a bitmap scan and a sort of all of them instead (28 ms at 20,000 pending, against 1 ms):
-- within this transaction only, no bitmap scans, until claim_plan_end.
SET LOCAL enable_bitmapscan = off

-- name: claim_plan_end
-- What the claim took is read by key (its runs' journals, its attempts' memory): bitmap scans
-- again. Left off, a journal read by `run_id = ANY(...)` on a table whose statistics are behind
-- (100,000 runs just finished) was guessed at thousands of rows and read by a sequential scan of
-- every step: a claim of 16 took 85-109 ms, against 4 ms.
SET LOCAL enable_bitmapscan TO DEFAULT

-- name: queue_candidates_plan
-- A limited queue's claim reads its candidates by walks of indexes in claim order that stop after a
-- few rows (queue_candidates, and each key's walk in queue_candidates_by_key). The planner guesses
-- that few of the runs walked pass their tests (the workflow test, written so that no index serves
-- it, is guessed at 0.5%), so that a walk would go to the end anyway, and reads and sorts every
-- pending run of the queue instead: 25 ms behind 5,000 runs of a busy key, against 0.2 ms, once
-- the statistics were gathered. No sort where a walk gives the order, until
-- queue_candidates_plan_end; and no JIT compilation until the claim ends (a statement that only a
-- sort serves, such as the last step of queue_candidates_by_key, is costed past jit_above_cost by
-- that setting, and was compiled at each run: 1.3 s; no statement of a claim is worth compiling).
SELECT set_config('enable_sort', 'off', true), set_config('jit', 'off', true)

-- name: queue_candidates_plan_end
SET LOCAL enable_sort TO DEFAULT

-- name: queue_candidates_by_key
-- A limited queue's pending runs this worker could start, for a claim whose first runs in claim
-- order (queue_candidates) were of keys at their per_key limit, however many wait ahead: of every
-- key not in :full (those at their limit), its first :heads due runs, and the first keyless ones,
-- in claim order. The keys are found by a skip scan of cairn_runs_queued_keys (one step down the
-- index per key, not a read of each key's runs), each key's first runs by a LATERAL walk of it
-- that stops after :heads, so the cost is that of the keys, never of one key's backlog. Each walk
-- is ordered by the index's own columns, so that no other index (which would read every pending
-- run of the queue) can give that order. The first :scan of them in claim order are then locked as
-- queue_candidates locks its rows, and tested again once locked: those tests are written so that
-- no index serves them, and each row is found by its id (a walk of cairn_runs_claim in claim
-- order, testing each pending run for being among the firsts, was the plan on a table not yet
-- analyzed: every run, for every key).
WITH RECURSIVE keys(k) AS (
    SELECT min(queue_key) FROM cairn_runs
    WHERE queue = :queue AND queue <> 'default' AND status = 'pending' AND queue_key IS NOT NULL
    UNION ALL
    SELECT (SELECT min(queue_key) FROM cairn_runs
            WHERE queue = :queue AND queue <> 'default' AND status = 'pending' AND queue_key > keys.k)
    FROM keys WHERE keys.k IS NOT NULL
),
firsts AS (
    SELECT first.id, first.priority, first.ready_at FROM keys CROSS JOIN LATERAL (
        SELECT id, priority, ready_at FROM cairn_runs
        WHERE queue = :queue AND queue <> 'default' AND status = 'pending' AND queue_key = keys.k
          AND ready_at <= cairn_tx_now() AND (lease_until IS NULL OR lease_until < cairn_tx_now())
          AND (workflow || '') = ANY(:workflows)
        ORDER BY queue_key, priority DESC, ready_at
        LIMIT :heads) first
    WHERE keys.k IS NOT NULL AND NOT keys.k = ANY(:full)
    UNION ALL
    (SELECT id, priority, ready_at FROM cairn_runs
     WHERE queue = :queue AND queue <> 'default' AND status = 'pending' AND queue_key IS NULL
       AND ready_at <= cairn_tx_now() AND (lease_until IS NULL OR lease_until < cairn_tx_now())
       AND (workflow || '') = ANY(:workflows)
     ORDER BY queue_key, priority DESC, ready_at
     LIMIT :scan)
)
SELECT id, queue_key FROM cairn_runs
WHERE id = ANY(ARRAY(SELECT id FROM firsts ORDER BY priority DESC, ready_at LIMIT :scan))
  AND (status || '') = 'pending' AND (lease_until IS NULL OR lease_until < cairn_tx_now())
ORDER BY priority DESC, ready_at
FOR UPDATE SKIP LOCKED

-- name: steps_of_runs
-- The journals of the runs a claim took (see queries.sql), each run's found by the primary key in
-- any plan: each id's steps looked up apart (OFFSET 0 keeps the planner from making it one join,
-- which it did as a hash join over a scan of every step). As `run_id = ANY(...)` on a steps table with no
-- statistics yet (thousands of runs just finished), the planner guessed a share of the table for
-- each id, and read all of it and sorted it at every claim (1.6 ms at 15,000 steps, 98 ms at
-- 300,000, against 0.3 ms).
SELECT s.* FROM unnest(CAST(:run_ids AS text[])) AS r(id)
CROSS JOIN LATERAL (SELECT {step_columns} FROM cairn_steps WHERE run_id = r.id OFFSET 0) s
ORDER BY s.run_id, s.seq

-- name: prune_steps
-- As queries.sql's, each row found by its place in the table (ctid): a Tid Scan. Found by the key
-- (`(run_id, seq) IN (...)`), the rows to delete were joined to a sequential scan of the whole
-- table, at each piece of a prune: 32 ms a piece of 5,000 among 200,000 steps (9.6 s to prune
-- three runs of 200,000 steps and 600,000 events, against 2 s in one statement).
DELETE FROM cairn_steps
WHERE ctid = ANY(ARRAY(SELECT ctid FROM cairn_steps WHERE run_id = ANY(:ids) LIMIT :limit))

-- name: prune_events
DELETE FROM cairn_events
WHERE ctid = ANY(ARRAY(SELECT ctid FROM cairn_events WHERE run_id = ANY(:ids) LIMIT :limit))

-- name: prune_properties
DELETE FROM cairn_properties
WHERE ctid = ANY(ARRAY(SELECT ctid FROM cairn_properties WHERE run_id = ANY(:ids) LIMIT :limit))

-- name: prune_memory
DELETE FROM cairn_memory
WHERE ctid = ANY(ARRAY(SELECT ctid FROM cairn_memory WHERE run_id = ANY(:ids) LIMIT :limit))

-- name: prune_signals
DELETE FROM cairn_signals
WHERE ctid = ANY(ARRAY(SELECT ctid FROM cairn_signals WHERE run_id = ANY(:ids) LIMIT :limit))
