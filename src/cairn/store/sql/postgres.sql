-- PostgreSQL overrides: SKIP LOCKED claims, arrays bound as parameters, row locks.

-- name: claim_runs
-- Runs under way (woken by a result, a timer, a signal) first, up to :limit; then new runs, at
-- most :new_limit of them (a worker takes new runs only while it has action slots free for their
-- first actions: see Worker._claim). One lateral walk per kind, in that order.
UPDATE cairn_runs r
SET lease_owner = :worker, lease_until = cairn_tx_now() + :lease, lease_token = r.lease_token + 1
FROM (SELECT c.id
      FROM (VALUES (false, CAST(:limit AS integer)), (true, CAST(:new_limit AS integer))) AS k(new, n)
      CROSS JOIN LATERAL (
          SELECT id FROM cairn_runs
          WHERE ready_at <= cairn_tx_now() AND status IN ('pending', 'running', 'waiting')
            AND (status = 'pending') = k.new
            AND (lease_until IS NULL OR lease_until < cairn_tx_now()
                 OR (lease_owner = :worker AND NOT id = ANY(:busy)))
            AND workflow = ANY(:workflows) AND (:any_queue = 1 OR queue = ANY(:queues))
          ORDER BY priority DESC, ready_at
          LIMIT k.n
          FOR UPDATE SKIP LOCKED) c
      LIMIT :limit) c
WHERE r.id = c.id
RETURNING r.id, r.workflow, r.status, r.input, r.result, r.error, r.queue, r.parent_id,
          r.parent_seq, r.created_at, r.updated_at, r.started_at, r.completed_at, r.activations,
          r.properties, r.code_version, r.lease_owner, r.lease_token, r.pause_reason

-- name: claim_actions
UPDATE cairn_steps s
SET status = 'running', attempt = s.attempt + 1, lease_owner = :worker, due_at = cairn_tx_now() + :lease,
    lost = s.lost + CASE WHEN s.status = 'running' THEN 1 ELSE 0 END,
    started_at = cairn_tx_now()
FROM (SELECT run_id, seq FROM cairn_steps
      WHERE kind = 'action' AND status IN ('scheduled', 'running') AND due_at <= cairn_tx_now()
        AND name = ANY(:names) AND (:any_queue = 1 OR queue = ANY(:queues))
        AND EXISTS (SELECT 1 FROM cairn_runs r WHERE r.id = cairn_steps.run_id
                    AND r.status IN ('pending', 'running', 'waiting'))
      ORDER BY due_at
      LIMIT :limit
      FOR UPDATE SKIP LOCKED) c
WHERE s.run_id = c.run_id AND s.seq = c.seq
RETURNING s.run_id, s.seq, s.name, s.args, s.attempt, s.options, s.queue, s.lost

-- name: memory_of_runs
SELECT run_id, key, value FROM cairn_memory WHERE run_id = ANY(:run_ids)

-- name: lock_run
SELECT status FROM cairn_runs WHERE id = :id FOR UPDATE

-- name: next_wake_runs
-- When the next run this worker could claim falls due, after this transaction's claims. Runs
-- leased to others are left to their holder (a lease running out is the safety poll's to see);
-- of this worker's own held runs only future wake-ups count (a due one was just claimed, or is
-- busy). That keeps this a short walk of the ready_at index however many runs are sleeping: the
-- first row in ready_at order that passes, not the MIN of all that do (which reads them all).
-- The workflow test is written so that no index serves it: on a table not yet analyzed, the
-- planner would otherwise read every run of these workflows through the workflow index.
SELECT ready_at FROM cairn_runs
WHERE ready_at IS NOT NULL AND ARRAY[workflow] <@ CAST(:workflows AS text[]) AND (:any_queue = 1 OR queue = ANY(:queues))
  AND (lease_until IS NULL OR lease_until <= ready_at
       OR (lease_owner = :worker AND ready_at > cairn_tx_now() AND NOT id = ANY(:busy)))
ORDER BY ready_at
LIMIT 1

-- name: next_wake_actions
-- Like claim_actions' filter: a step of a paused run is not due, however old its due_at. The
-- first step in due_at order that passes (MIN would join every step in flight to its run).
SELECT due_at FROM cairn_steps
WHERE kind = 'action' AND status IN ('scheduled', 'running') AND name = ANY(:names)
  AND (:any_queue = 1 OR queue = ANY(:queues))
  AND EXISTS (SELECT 1 FROM cairn_runs r WHERE r.id = cairn_steps.run_id
              AND r.status IN ('pending', 'running', 'waiting'))
ORDER BY due_at
LIMIT 1

-- name: notify
-- All of a transaction's notifications, sent (by PostgreSQL) when it commits.
SELECT pg_notify('cairn', p) FROM unnest(CAST(:payloads AS text[])) AS p

-- name: insert_events
-- All of a transaction's event rows in one statement, in the order they were added: one JSON
-- array of {run_id, now, kind, step, detail} objects (one text parameter is far cheaper for the
-- client to send than five arrays, whose elements it would encode one by one). A detail is a
-- nested object, kept as the text it was sent as (json, not jsonb).
INSERT INTO cairn_events (run_id, at, kind, step, detail)
SELECT run_id, now, kind, step, CAST(detail AS text)
FROM ROWS FROM (json_to_recordset(CAST(:events AS json))
                AS (run_id text, now double precision, kind text, step integer, detail json))
     WITH ORDINALITY AS e(run_id, now, kind, step, detail, n)
ORDER BY n

-- name: lock_run_row
SELECT id, workflow, status, input, result, error, queue, parent_id, parent_seq, created_at,
       updated_at, started_at, completed_at, activations, properties, code_version, lease_owner,
       lease_token, pause_reason
FROM cairn_runs WHERE id = :id FOR UPDATE

-- name: extend_step_leases
-- Only the attempts the worker says it is running: one it lost track of (a commit whose outcome
-- is unknown) runs out its lease and is taken over. Rows a commit holds are skipped (that commit
-- is settling them), so a heartbeat never deadlocks one.
UPDATE cairn_steps SET due_at = :until
WHERE (run_id, seq) IN (SELECT run_id, seq FROM cairn_steps
                        WHERE lease_owner = :worker AND status = 'running' AND kind = 'action'
                          AND run_id || ' ' || seq = ANY(:attempts)
                        FOR UPDATE SKIP LOCKED)

-- name: extend_run_leases
UPDATE cairn_runs SET lease_until = :until
WHERE id IN (SELECT id FROM cairn_runs WHERE lease_owner = :worker AND id = ANY(:runs) FOR UPDATE SKIP LOCKED)

-- name: hand_over_steps
UPDATE cairn_steps SET due_at = :now, lease_owner = NULL
WHERE (run_id, seq) IN (SELECT run_id, seq FROM cairn_steps
                        WHERE lease_owner = :worker AND status = 'running' AND kind = 'action'
                        FOR UPDATE SKIP LOCKED)

-- name: hand_over_runs
UPDATE cairn_runs SET lease_owner = NULL, lease_until = NULL
WHERE id IN (SELECT id FROM cairn_runs WHERE lease_owner = :worker FOR UPDATE SKIP LOCKED)

-- The journals of the runs one claim took, in one statement each (not one per run).

-- name: fire_due_timers_of_runs
UPDATE cairn_steps SET status = 'completed', completed_at = :now
WHERE run_id = ANY(:run_ids) AND kind = 'timer' AND status = 'scheduled' AND due_at <= :now
RETURNING run_id, seq

-- name: steps_of_runs
SELECT run_id, seq, kind, name, args, status, result, error, attempt, delivered_in, delivered_at,
       due_at, queue, options, memory_writes, logs, created_at, started_at, completed_at
FROM cairn_steps
WHERE run_id = ANY(:run_ids) ORDER BY run_id, seq

-- name: undelivered_steps_of_runs
SELECT run_id, seq, kind, name, args, status, result, error, attempt, delivered_in, delivered_at,
       due_at, queue, options, memory_writes, logs, created_at, started_at, completed_at
FROM cairn_steps
WHERE run_id = ANY(:run_ids) AND delivered_in IS NULL AND status IN ('completed', 'failed', 'cancelled')
ORDER BY run_id, seq

-- name: open_signals_of_runs
SELECT run_id, id, name, payload FROM cairn_signals
WHERE run_id = ANY(:run_ids) AND consumed_by IS NULL ORDER BY run_id, id

-- Set-wise forms of an activation commit's one-row writes (`Tx.write_row`): each applies all the
-- rows of its name that a group commit holds, sent as one JSON array (:rows), so a transaction
-- carrying many runs' commits sends each of these statements once. Each matches the one-row
-- query of its name in queries.sql, which SQLite runs row by row.

-- name: insert_run_rows
INSERT INTO cairn_runs (id, workflow, status, input, queue, parent_id, parent_seq,
                        created_at, updated_at, code_version, ready_at,
                        lease_owner, lease_until, lease_token)
SELECT x.id, x.workflow, 'pending', x.input, x.queue, x.parent_id, x.parent_seq, t.now, t.now,
       x.code_version, t.now, x.lease_owner,
       CASE WHEN x.lease_owner IS NULL THEN NULL ELSE t.now + x.lease END,
       CASE WHEN x.lease_owner IS NULL THEN 0 ELSE 1 END
FROM json_to_recordset(CAST(:rows AS json))
     AS x(id text, workflow text, input text, queue text, parent_id text, parent_seq integer,
          now double precision, code_version text, lease_owner text, lease double precision)
     CROSS JOIN LATERAL (SELECT COALESCE(x.now, cairn_now()) AS now) t
ON CONFLICT (id) DO NOTHING
RETURNING 1

-- name: fence_run_rows
-- Locks the rows as an UPDATE would, without writing a row version the commit's finish_activation
-- writes again anyway.
SELECT 1 FROM cairn_runs r
JOIN json_to_recordset(CAST(:rows AS json)) AS x(id text, token bigint, now double precision)
  ON r.id = x.id AND r.lease_token = x.token
FOR NO KEY UPDATE OF r

-- name: complete_step_rows
UPDATE cairn_steps s
SET status = x.status, result = x.result, error = x.error, memory_writes = x.memory_writes,
    logs = COALESCE(x.logs, s.logs), completed_at = x.completed_at, due_at = x.due_at, lease_owner = NULL,
    delivered_in = COALESCE(x.delivered_in, s.delivered_in),
    delivered_at = COALESCE(x.delivered_at, s.delivered_at)
FROM json_to_recordset(CAST(:rows AS json))
     AS x(run_id text, seq integer, attempt integer, status text, result text, error text,
          memory_writes text, logs text, completed_at double precision, due_at double precision,
          delivered_in integer, delivered_at double precision)
WHERE s.run_id = x.run_id AND s.seq = x.seq AND s.attempt = x.attempt AND s.status = 'running'
RETURNING 1

-- name: deliver_step_rows
UPDATE cairn_steps s SET delivered_in = x.activation, delivered_at = x.delivered_at
FROM json_to_recordset(CAST(:rows AS json))
     AS x(run_id text, seq integer, activation integer, delivered_at double precision)
WHERE s.run_id = x.run_id AND s.seq = x.seq

-- name: insert_step_rows
INSERT INTO cairn_steps (run_id, seq, kind, name, args, status, result, delivered_in, due_at,
                         queue, options, created_at, completed_at, created_in, attempt, lease_owner,
                         started_at)
SELECT run_id, seq, kind, name, args, status, result, delivered_in, due_at,
       queue, options, now, completed_at, activation, attempt, lease_owner, started_at
FROM json_to_recordset(CAST(:rows AS json))
     AS x(run_id text, seq integer, kind text, name text, args text, status text, result text,
          delivered_in integer, due_at double precision, queue text, options text,
          now double precision, completed_at double precision, activation integer, attempt integer,
          lease_owner text, started_at double precision)

-- name: finish_activation_rows
UPDATE cairn_runs r
SET status = x.status, result = x.result, error = x.error, activations = x.activations,
    pause_reason = x.pause_reason,
    properties = COALESCE(x.properties, r.properties), updated_at = x.now,
    started_at = COALESCE(r.started_at, x.now), completed_at = x.completed_at,
    lease_owner = x.lease_owner, lease_until = x.lease_until, lease_token = r.lease_token + 1,
    ready_at = CASE
        WHEN x.parked = 1 THEN NULL
        WHEN EXISTS (SELECT 1 FROM cairn_steps s WHERE s.run_id = x.id AND s.delivered_in IS NULL
                     AND s.status IN ('completed', 'failed', 'cancelled')) THEN x.now
        ELSE x.wake_at END
FROM json_to_recordset(CAST(:rows AS json))
     AS x(id text, token bigint, status text, result text, error text, activations integer,
          properties text, now double precision, completed_at double precision, parked integer,
          wake_at double precision, pause_reason text, lease_owner text, lease_until double precision)
WHERE r.id = x.id AND r.lease_token = x.token
RETURNING CASE WHEN r.ready_at <= x.now THEN 1 ELSE 0 END AS due
