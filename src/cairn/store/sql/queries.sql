-- Named queries shared by both backends. One "-- name: x" header each; parameters are always
-- bound (:name style, converted for psycopg at load time); never formatted with values.
-- A backend file (sqlite.sql, postgres.sql) overrides a query of the same name.

-- name: now
SELECT cairn_now()

-- name: tx_now
-- The clock as this transaction began (one value for all its statements; see cairn_tx_now).
SELECT cairn_tx_now()

-- name: insert_run
-- A new run, created at :now, or at the server's clock when :now is null (a client starting one:
-- one statement, no clock read first). No row when the id exists. With a :lease_owner, the run is
-- born leased to that worker (as if claimed once: token 1). (SQLite needs the WHERE to parse ON
-- CONFLICT after a SELECT.)
INSERT INTO cairn_runs (id, workflow, status, input, queue, parent_id, parent_seq,
                        created_at, updated_at, code_version, ready_at,
                        lease_owner, lease_until, lease_token)
SELECT :id, :workflow, 'pending', :input, :queue, :parent_id, :parent_seq, t.now, t.now,
       :code_version, t.now, t.owner, CASE WHEN t.owner IS NULL THEN NULL ELSE t.now + :lease END,
       CASE WHEN t.owner IS NULL THEN 0 ELSE 1 END
FROM (SELECT COALESCE(CAST(:now AS double precision), cairn_now()) AS now,
             CAST(:lease_owner AS text) AS owner) t WHERE true
ON CONFLICT (id) DO NOTHING
RETURNING id, workflow, status, input, result, error, queue, parent_id, parent_seq, created_at,
          updated_at, started_at, completed_at, activations, properties, code_version, lease_owner,
          lease_token, pause_reason

-- name: set_run_trace
-- Only with cairn[otel] tracing on: the starter's trace context, in the transaction creating the run.
UPDATE cairn_runs SET trace_context = :trace WHERE id = :id

-- name: run_trace
-- A run's workflow and trace context (a child's own, else its parent's), for its spans.
SELECT r.workflow, COALESCE(r.trace_context, p.trace_context)
FROM cairn_runs r LEFT JOIN cairn_runs p ON p.id = r.parent_id WHERE r.id = :id

-- name: get_run
SELECT id, workflow, status, input, result, error, queue, parent_id, parent_seq, created_at,
       updated_at, started_at, completed_at, activations, properties, code_version, lease_owner,
       lease_token, pause_reason
FROM cairn_runs WHERE id = :id

-- name: list_runs
SELECT id, workflow, status, input, result, error, queue, parent_id, parent_seq, created_at,
       updated_at, started_at, completed_at, activations, properties, code_version, lease_owner,
       lease_token, pause_reason
FROM cairn_runs
WHERE (CAST(:status AS text) IS NULL OR status = CAST(:status AS text))
  AND (CAST(:workflow AS text) IS NULL OR workflow = CAST(:workflow AS text))
ORDER BY created_at DESC, id
LIMIT :limit

-- name: list_steps
SELECT run_id, seq, kind, name, args, status, result, error, attempt, delivered_in, delivered_at,
       due_at, queue, options, memory_writes, logs, created_at, started_at, completed_at
FROM cairn_steps WHERE run_id = :run_id ORDER BY seq

-- name: get_memory
SELECT key, value FROM cairn_memory WHERE run_id = :run_id ORDER BY key

-- name: property_history
SELECT activation, properties FROM cairn_properties WHERE run_id = :run_id ORDER BY activation

-- name: insert_signal
INSERT INTO cairn_signals (run_id, name, payload, created_at)
SELECT :run_id, :name, :payload, :now WHERE EXISTS (SELECT 1 FROM cairn_runs WHERE id = :run_id)

-- name: wake_run
UPDATE cairn_runs SET ready_at = :now, updated_at = :now
WHERE id = :id AND status IN ('pending', 'running', 'waiting')

-- name: fence_run
-- An activation commit's first write: the run's lease token is still the one it was claimed with
-- (and the run row is locked from here on). The commit's `finish_activation` advances the token,
-- so a claim that read the run before this commit cannot commit decisions made from that stale
-- read (its fence fails), and vice versa.
UPDATE cairn_runs SET updated_at = :now
WHERE id = :id AND lease_token = :token

-- name: consume_signal_into_step
UPDATE cairn_steps SET status = 'completed', completed_at = :now, result = :payload
WHERE run_id = :run_id AND seq = :seq AND status = 'scheduled'

-- name: mark_signal_consumed
UPDATE cairn_signals SET consumed_by = :seq WHERE id = :signal_id

-- name: deliver_step
UPDATE cairn_steps SET delivered_in = :activation, delivered_at = :delivered_at
WHERE run_id = :run_id AND seq = :seq

-- name: insert_step
INSERT INTO cairn_steps (run_id, seq, kind, name, args, status, result, delivered_in, due_at,
                         queue, options, created_at, completed_at, created_in, attempt, lease_owner,
                         started_at)
VALUES (:run_id, :seq, :kind, :name, :args, :status, :result, :delivered_in, :due_at,
        :queue, :options, :now, :completed_at, :activation, :attempt, :lease_owner, :started_at)

-- name: cancel_step
UPDATE cairn_steps
SET status = 'cancelled', completed_at = :now, delivered_in = 0, lease_owner = NULL, cancelled_in = :activation
WHERE run_id = :run_id AND seq = :seq AND status IN ('scheduled', 'running')

-- name: upsert_memory
INSERT INTO cairn_memory (run_id, key, value, step, updated_at)
VALUES (:run_id, :key, :value, :step, :now)
ON CONFLICT (run_id, key) DO UPDATE
SET value = excluded.value, step = excluded.step, updated_at = excluded.updated_at

-- name: insert_properties
INSERT INTO cairn_properties (run_id, activation, after_step, properties)
VALUES (:run_id, :activation, :after_step, :properties)
ON CONFLICT (run_id, activation) DO UPDATE SET properties = excluded.properties

-- name: finish_activation
UPDATE cairn_runs
SET status = :status, result = :result, error = :error, activations = :activations,
    pause_reason = :pause_reason,
    properties = COALESCE(CAST(:properties AS text), properties), updated_at = :now,
    started_at = COALESCE(started_at, :now), completed_at = :completed_at,
    lease_owner = CAST(:lease_owner AS text), lease_until = CAST(:lease_until AS double precision),
    lease_token = lease_token + 1,
    ready_at = CASE
        WHEN :parked = 1 THEN NULL
        WHEN EXISTS (SELECT 1 FROM cairn_steps WHERE run_id = :id AND delivered_in IS NULL
                     AND status IN ('completed', 'failed', 'cancelled')) THEN :now
        ELSE CAST(:wake_at AS double precision) END
WHERE id = :id AND lease_token = :token
RETURNING CASE WHEN ready_at <= :now THEN 1 ELSE 0 END AS due

-- name: resolve_parent_step
UPDATE cairn_steps SET status = :status, result = :result, error = :error, completed_at = :now
WHERE run_id = :run_id AND seq = :seq AND status IN ('scheduled', 'running')

-- name: adopt_child
UPDATE cairn_runs SET parent_id = :parent_id, parent_seq = :parent_seq
WHERE id = :id AND (parent_seq IS NULL OR parent_id = :parent_id)
  AND status NOT IN ('completed', 'failed', 'cancelled')

-- name: release_run
UPDATE cairn_runs SET lease_owner = NULL, lease_until = NULL WHERE id = :id AND lease_token = :token

-- name: complete_step
UPDATE cairn_steps
SET status = :status, result = :result, error = :error, memory_writes = :memory_writes,
    logs = COALESCE(CAST(:logs AS text), logs), completed_at = :completed_at, due_at = :due_at, lease_owner = NULL,
    delivered_in = COALESCE(CAST(:delivered_in AS integer), delivered_in),
    delivered_at = COALESCE(CAST(:delivered_at AS double precision), delivered_at)
WHERE run_id = :run_id AND seq = :seq AND attempt = :attempt AND status = 'running'

-- name: step_logs
SELECT logs FROM cairn_steps WHERE run_id = :run_id AND seq = :seq

-- name: upsert_worker
INSERT INTO cairn_workers (id, host, pid, queues, started_at, heartbeat_at, in_flight, serves)
VALUES (:id, :host, :pid, :queues, :started_at, :now, :in_flight, :serves)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, in_flight = excluded.in_flight

-- name: prune_workers
DELETE FROM cairn_workers WHERE heartbeat_at < :before

-- name: delete_worker
DELETE FROM cairn_workers WHERE id = :id

-- name: hand_over_steps
UPDATE cairn_steps SET due_at = :now, lease_owner = NULL
WHERE lease_owner = :worker AND status = 'running' AND kind = 'action'

-- name: hand_over_runs
UPDATE cairn_runs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = :worker

-- name: list_workers
SELECT id, host, pid, queues, started_at, heartbeat_at, in_flight, serves FROM cairn_workers
WHERE heartbeat_at >= :since ORDER BY started_at

-- name: upsert_workflow
INSERT INTO cairn_workflows (name, description, input_schema, queue, updated_at)
VALUES (:name, :description, :input_schema, :queue, :now)
ON CONFLICT (name) DO UPDATE SET description = excluded.description,
    input_schema = excluded.input_schema, queue = excluded.queue, updated_at = excluded.updated_at

-- name: list_workflows
SELECT name, description, input_schema, queue FROM cairn_workflows ORDER BY name

-- name: upsert_action
INSERT INTO cairn_actions (id, name, description, queue, updated_at)
VALUES (:id, :name, :description, :queue, :now)
ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,
    queue = excluded.queue, updated_at = excluded.updated_at

-- name: list_actions
SELECT id, name, description, queue FROM cairn_actions ORDER BY id

-- name: insert_event
INSERT INTO cairn_events (run_id, at, kind, step, detail) VALUES (:run_id, :now, :kind, :step, :detail)

-- name: list_events
SELECT id, at, kind, step, detail FROM cairn_events WHERE run_id = :run_id ORDER BY id

-- name: set_control
UPDATE cairn_runs
SET status = :status, pause_reason = :pause_reason, error = :error, completed_at = :completed_at,
    ready_at = CAST(:ready_at AS double precision), lease_owner = NULL, lease_until = NULL,
    lease_token = lease_token + 1, updated_at = :now
WHERE id = :id

-- name: cancel_open_steps
UPDATE cairn_steps
SET status = 'cancelled', completed_at = :now, delivered_in = 0, lease_owner = NULL, cancelled_in = :activation
WHERE run_id = :run_id AND status IN ('scheduled', 'running')

-- name: open_children
SELECT id FROM cairn_runs
WHERE parent_id = :id AND status IN ('pending', 'running', 'waiting', 'paused') ORDER BY id

-- name: failed_steps
SELECT seq, kind, options FROM cairn_steps
WHERE run_id = :run_id AND status = 'failed' AND (delivered_in IS NULL OR delivered_in > :k)
ORDER BY seq

-- name: reset_step
UPDATE cairn_steps
SET status = 'scheduled', attempt = 0, error = NULL, result = NULL, completed_at = NULL,
    delivered_in = NULL, delivered_at = NULL, due_at = :now, lease_owner = NULL
WHERE run_id = :run_id AND seq = :seq

-- name: rewind_delete_steps
DELETE FROM cairn_steps WHERE run_id = :run_id AND created_in > :k

-- name: rewind_undeliver
UPDATE cairn_steps SET delivered_in = NULL, delivered_at = NULL WHERE run_id = :run_id AND delivered_in > :k

-- name: rewind_uncancel
UPDATE cairn_steps
SET status = 'scheduled', completed_at = NULL, cancelled_in = NULL, delivered_in = NULL, lease_owner = NULL,
    due_at = CASE WHEN kind = 'timer' THEN due_at ELSE :now END
WHERE run_id = :run_id AND cancelled_in > :k

-- name: reschedule_running
UPDATE cairn_steps SET status = 'scheduled', lease_owner = NULL, due_at = :now
WHERE run_id = :run_id AND status = 'running'

-- name: rewind_properties
DELETE FROM cairn_properties WHERE run_id = :run_id AND activation > :k

-- name: unconsume_orphan_signals
UPDATE cairn_signals SET consumed_by = NULL
WHERE run_id = :run_id AND consumed_by IS NOT NULL
  AND consumed_by NOT IN (SELECT seq FROM cairn_steps WHERE run_id = :run_id)

-- name: set_activations
UPDATE cairn_runs SET activations = :k, properties = (
    SELECT properties FROM cairn_properties WHERE run_id = :id ORDER BY activation DESC LIMIT 1)
WHERE id = :id

-- name: delete_memory
DELETE FROM cairn_memory WHERE run_id = :run_id

-- name: memory_sources
SELECT seq, kind, name, args, memory_writes FROM cairn_steps
WHERE run_id = :run_id AND (kind = 'memory' OR memory_writes IS NOT NULL)
ORDER BY COALESCE(completed_at, created_at), seq

-- name: min_created_after
SELECT MIN(created_in) FROM cairn_steps WHERE run_id = :run_id AND seq > :n

-- name: max_seq
SELECT MAX(seq) FROM cairn_steps WHERE run_id = :run_id

-- name: copy_steps
INSERT INTO cairn_steps (run_id, seq, kind, name, args, status, result, error, attempt, delivered_in,
                         delivered_at, due_at, queue, options, memory_writes, logs, created_at,
                         started_at, completed_at, created_in, cancelled_in)
SELECT :new_id, seq, kind, name, args, status, result, error, attempt, delivered_in, delivered_at,
       due_at, queue, options, memory_writes, logs, created_at, started_at, completed_at, created_in,
       cancelled_in
FROM cairn_steps WHERE run_id = :run_id AND seq <= :n AND COALESCE(created_in, 0) <= :k

-- name: copy_properties
INSERT INTO cairn_properties (run_id, activation, after_step, properties)
SELECT :new_id, activation, after_step, properties FROM cairn_properties
WHERE run_id = :run_id AND activation <= :k

-- name: child_of_step
SELECT id FROM cairn_runs WHERE parent_id = :parent_id AND parent_seq = :seq


-- name: due_needs
-- Work that is due and free to take now: runs ready for an activation, and action attempts ready to
-- start (the first :limit of each). What no live worker serves among them is reported.
SELECT * FROM (SELECT id, 'workflow', workflow, queue, CAST(NULL AS integer) FROM cairn_runs
               WHERE ready_at <= cairn_now() AND status IN ('pending', 'running', 'waiting')
                 AND (lease_until IS NULL OR lease_until < cairn_now())
               ORDER BY ready_at LIMIT :limit) runs
UNION ALL
SELECT * FROM (SELECT run_id, 'action', name, COALESCE(queue, 'default'), seq FROM cairn_steps s
               WHERE kind = 'action' AND status = 'scheduled' AND due_at <= cairn_now()
                 AND EXISTS (SELECT 1 FROM cairn_runs r WHERE r.id = s.run_id
                             AND r.status IN ('pending', 'running', 'waiting'))
               ORDER BY due_at LIMIT :limit) steps

-- name: count_runs
SELECT count(*) FROM cairn_runs WHERE status = :status

-- Reads for the HTTP API and dashboard (keyset pages, counts, children); migrations 0005 (SQLite) and 0010 (PostgreSQL) index them.

-- name: runs_page_newest
-- A page of runs, newest first, after the keyset (:after_at, :after_id) when given (never OFFSET:
-- each page costs the same however deep). Every filter is optional (NULL: any). The keyset test
-- is written as a range on created_at plus a tie-break, so the (created_at, id) index serves it.
SELECT id, workflow, status, input, result, error, queue, parent_id, parent_seq, created_at,
       updated_at, started_at, completed_at, activations, properties, code_version, lease_owner,
       lease_token, pause_reason
FROM cairn_runs
WHERE (CAST(:status AS text) IS NULL OR status = CAST(:status AS text))
  AND (CAST(:workflow AS text) IS NULL OR workflow = CAST(:workflow AS text))
  AND (CAST(:id_prefix AS text) IS NULL OR substr(id, 1, length(CAST(:id_prefix AS text))) = CAST(:id_prefix AS text))
  AND (CAST(:since AS double precision) IS NULL OR created_at >= CAST(:since AS double precision))
  AND (CAST(:until AS double precision) IS NULL OR created_at < CAST(:until AS double precision))
  AND (CAST(:after_at AS double precision) IS NULL
       OR (created_at <= CAST(:after_at AS double precision)
           AND (created_at < CAST(:after_at AS double precision) OR id < CAST(:after_id AS text))))
ORDER BY created_at DESC, id DESC
LIMIT :limit

-- name: runs_page_oldest
-- As runs_page_newest, oldest first.
SELECT id, workflow, status, input, result, error, queue, parent_id, parent_seq, created_at,
       updated_at, started_at, completed_at, activations, properties, code_version, lease_owner,
       lease_token, pause_reason
FROM cairn_runs
WHERE (CAST(:status AS text) IS NULL OR status = CAST(:status AS text))
  AND (CAST(:workflow AS text) IS NULL OR workflow = CAST(:workflow AS text))
  AND (CAST(:id_prefix AS text) IS NULL OR substr(id, 1, length(CAST(:id_prefix AS text))) = CAST(:id_prefix AS text))
  AND (CAST(:since AS double precision) IS NULL OR created_at >= CAST(:since AS double precision))
  AND (CAST(:until AS double precision) IS NULL OR created_at < CAST(:until AS double precision))
  AND (CAST(:after_at AS double precision) IS NULL
       OR (created_at >= CAST(:after_at AS double precision)
           AND (created_at > CAST(:after_at AS double precision) OR id > CAST(:after_id AS text))))
ORDER BY created_at, id
LIMIT :limit

-- name: run_counts_by_status
SELECT '' AS key, status, count(*) FROM cairn_runs
WHERE (CAST(:workflow AS text) IS NULL OR workflow = CAST(:workflow AS text))
GROUP BY status

-- name: run_counts_by_workflow
SELECT workflow, status, count(*) FROM cairn_runs GROUP BY workflow, status

-- name: run_counts_by_queue
SELECT queue, status, count(*) FROM cairn_runs GROUP BY queue, status

-- name: children_of_run
SELECT id, workflow, status, input, result, error, queue, parent_id, parent_seq, created_at,
       updated_at, started_at, completed_at, activations, properties, code_version, lease_owner,
       lease_token, pause_reason
FROM cairn_runs WHERE parent_id = :id ORDER BY created_at, id LIMIT :limit
