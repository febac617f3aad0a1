-- SQLite overrides: lists are bound as one JSON text parameter and expanded with json_each;
-- BEGIN IMMEDIATE (taken by the store) serialises writers, so no row locks are needed.

-- name: claim_runs
-- Runs due, oldest first (by priority), up to :limit, of which at most :new_limit new ones (a
-- worker takes new runs only while it has action slots free for their first actions: see
-- Worker._claim). The oldest of each kind up to its limit (a sort that keeps only that many),
-- then the oldest of both.
UPDATE cairn_runs
SET lease_owner = :worker, lease_until = cairn_tx_now() + :lease, lease_token = lease_token + 1
WHERE id IN (WITH due AS NOT MATERIALIZED (
                 SELECT id, status = 'pending' AS new, priority, ready_at FROM cairn_runs
                 WHERE ready_at <= cairn_tx_now() AND status IN ('pending', 'running', 'waiting')
                   AND (lease_until IS NULL OR lease_until < cairn_tx_now()
                        OR (lease_owner = :worker AND id NOT IN (SELECT value FROM json_each(:busy))))
                   AND workflow IN (SELECT value FROM json_each(:workflows))
                   AND (:any_queue = 1 OR queue IN (SELECT value FROM json_each(:queues))))
             SELECT id FROM (SELECT * FROM (SELECT id, priority, ready_at FROM due WHERE NOT new
                                            ORDER BY priority DESC, ready_at LIMIT :limit)
                             UNION ALL
                             SELECT * FROM (SELECT id, priority, ready_at FROM due WHERE new
                                            ORDER BY priority DESC, ready_at LIMIT :new_limit))
             ORDER BY priority DESC, ready_at
             LIMIT :limit)
RETURNING id, workflow, status, input, result, error, queue, parent_id, parent_seq, created_at,
          updated_at, started_at, completed_at, activations, properties, code_version, lease_owner,
          lease_token, pause_reason

-- name: claim_actions
UPDATE cairn_steps
SET status = 'running', attempt = attempt + 1, lease_owner = :worker, due_at = cairn_tx_now() + :lease,
    lost = lost + CASE WHEN status = 'running' THEN 1 ELSE 0 END,
    started_at = cairn_tx_now()
WHERE (run_id, seq) IN (SELECT run_id, seq FROM cairn_steps
                        WHERE kind = 'action' AND status IN ('scheduled', 'running') AND due_at <= cairn_tx_now()
                          AND name IN (SELECT value FROM json_each(:names))
                          AND (:any_queue = 1 OR queue IN (SELECT value FROM json_each(:queues)))
                          AND EXISTS (SELECT 1 FROM cairn_runs r WHERE r.id = cairn_steps.run_id
                                      AND r.status IN ('pending', 'running', 'waiting'))
                        ORDER BY due_at
                        LIMIT :limit)
RETURNING run_id, seq, name, args, attempt, options, queue, lost

-- name: memory_of_runs
SELECT run_id, key, value FROM cairn_memory WHERE run_id IN (SELECT value FROM json_each(:run_ids))

-- name: lock_run
SELECT status FROM cairn_runs WHERE id = :id

-- name: next_wake_runs
-- When the next run this worker could claim falls due, after this transaction's claims. Runs
-- leased to others are left to their holder (a lease running out is the safety poll's to see);
-- of this worker's own held runs only future wake-ups count (a due one was just claimed, or is
-- busy). That keeps this a short walk of the ready_at index however many runs are sleeping: the
-- first row in ready_at order that passes, not the MIN of all that do (which reads them all).
SELECT ready_at FROM cairn_runs
WHERE ready_at IS NOT NULL AND workflow IN (SELECT value FROM json_each(:workflows))
  AND (:any_queue = 1 OR queue IN (SELECT value FROM json_each(:queues)))
  AND (lease_until IS NULL OR lease_until <= ready_at
       OR (lease_owner = :worker AND ready_at > cairn_tx_now() AND id NOT IN (SELECT value FROM json_each(:busy))))
ORDER BY ready_at
LIMIT 1

-- name: next_wake_actions
-- Like claim_actions' filter: a step of a paused run is not due, however old its due_at. The
-- first step in due_at order that passes (MIN would join every step in flight to its run).
SELECT due_at FROM cairn_steps
WHERE kind = 'action' AND status IN ('scheduled', 'running')
  AND name IN (SELECT value FROM json_each(:names))
  AND (:any_queue = 1 OR queue IN (SELECT value FROM json_each(:queues)))
  AND EXISTS (SELECT 1 FROM cairn_runs r WHERE r.id = cairn_steps.run_id
              AND r.status IN ('pending', 'running', 'waiting'))
ORDER BY due_at
LIMIT 1

-- name: lock_run_row
SELECT id, workflow, status, input, result, error, queue, parent_id, parent_seq, created_at,
       updated_at, started_at, completed_at, activations, properties, code_version, lease_owner,
       lease_token, pause_reason
FROM cairn_runs WHERE id = :id

-- The journals of the runs one claim took, in one statement each (not one per run).

-- name: fire_due_timers_of_runs
UPDATE cairn_steps SET status = 'completed', completed_at = :now
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND kind = 'timer' AND status = 'scheduled' AND due_at <= :now
RETURNING run_id, seq

-- name: steps_of_runs
SELECT run_id, seq, kind, name, args, status, result, error, attempt, delivered_in, delivered_at,
       due_at, queue, options, memory_writes, logs, created_at, started_at, completed_at
FROM cairn_steps
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) ORDER BY run_id, seq

-- name: undelivered_steps_of_runs
SELECT run_id, seq, kind, name, args, status, result, error, attempt, delivered_in, delivered_at,
       due_at, queue, options, memory_writes, logs, created_at, started_at, completed_at
FROM cairn_steps
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND delivered_in IS NULL AND status IN ('completed', 'failed', 'cancelled')
ORDER BY run_id, seq

-- name: signal_matches
-- Each open signal wait of these runs paired with a buffered signal of its name: the n-th open
-- wait (in step order) takes the n-th buffered signal (in arrival order), so a burst is received
-- in order, one signal per wait. See journal_tx.consume_signals, the one place they are matched.
SELECT w.run_id, w.seq, w.name, s.id, s.payload
FROM (SELECT run_id, seq, name, row_number() OVER (PARTITION BY run_id, name ORDER BY seq) AS n
      FROM cairn_steps WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND kind = 'signal' AND status = 'scheduled') w
JOIN (SELECT run_id, id, name, payload, row_number() OVER (PARTITION BY run_id, name ORDER BY id) AS n
      FROM cairn_signals WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND consumed_by IS NULL) s
  ON s.run_id = w.run_id AND s.name = w.name AND s.n = w.n
ORDER BY w.run_id, w.seq

-- name: extend_step_leases
-- Only the attempts the worker says it is running: one it lost track of runs out its lease.
UPDATE cairn_steps SET due_at = :until
WHERE lease_owner = :worker AND status = 'running' AND kind = 'action'
  AND run_id || ' ' || seq IN (SELECT value FROM json_each(:attempts))

-- name: extend_run_leases
UPDATE cairn_runs SET lease_until = :until
WHERE lease_owner = :worker AND id IN (SELECT value FROM json_each(:runs))

-- name: needs_of_runs
-- What these runs need a worker for: their workflow while they are not finished, and each action
-- step of theirs waiting to start (due or retrying later).
SELECT id, 'workflow', workflow, queue, CAST(NULL AS integer) FROM cairn_runs
WHERE id IN (SELECT value FROM json_each(:run_ids)) AND status IN ('pending', 'running', 'waiting')
UNION ALL
SELECT run_id, 'action', name, COALESCE(queue, 'default'), seq FROM cairn_steps s
WHERE run_id IN (SELECT value FROM json_each(:run_ids)) AND kind = 'action' AND status = 'scheduled'
  AND EXISTS (SELECT 1 FROM cairn_runs r WHERE r.id = s.run_id AND r.status IN ('pending', 'running', 'waiting'))

-- name: last_steps_of_runs
-- The latest step of each run (the runs list's "current step"); each MAX is one probe of the key.
SELECT run_id, seq, kind, name, args, status, result, error, attempt, delivered_in, delivered_at,
       due_at, queue, options, memory_writes, logs, created_at, started_at, completed_at
FROM cairn_steps s
WHERE run_id IN (SELECT value FROM json_each(:run_ids))
  AND seq = (SELECT MAX(seq) FROM cairn_steps m WHERE m.run_id = s.run_id)
