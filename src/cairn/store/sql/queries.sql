-- Every statement, by name, for both backends: `cairn.store.sql` adapts the forms that differ
-- (column lists, list parameters, row locks, row writes' {rows}); a backend's own file replaces a
-- statement only where its algorithm differs (none does now). Parameters are always bound (:name);
-- nothing is formatted with values.

-- name: now
SELECT cairn_now()

-- name: claim_plan
-- How a claim transaction wants its walks planned (see postgres.sql); nothing to say on SQLite.
SELECT 1

-- name: claim_plan_end
SELECT 1

-- name: tx_now
-- The clock as this transaction began (one value for all its statements; see cairn_tx_now).
SELECT cairn_tx_now()

-- name: insert_run
-- A new run: at :now, or at the server's clock when the row gives none (a client starting one:
-- one statement, no clock read first). No row when the id exists. With a :lease_owner, the run is
-- born leased to that worker (as if claimed once: token 1) for :lease seconds from the database's
-- clock as the row is written: never from :now, a worker's estimate that a retried commit carries
-- from before an outage. (SQLite needs the WHERE to parse ON CONFLICT after a SELECT.)
-- rows: id text, workflow text, input text, queue text, parent_id text, parent_seq integer, code_version text, lease_owner text, lease double precision, now double precision = cairn_now()
INSERT INTO cairn_runs (id, workflow, status, input, queue, parent_id, parent_seq,
                        created_at, updated_at, code_version, ready_at,
                        lease_owner, lease_until, lease_token)
SELECT x.id, x.workflow, 'pending', x.input, x.queue, x.parent_id, x.parent_seq, x.now, x.now,
       x.code_version, x.now, x.lease_owner,
       CASE WHEN x.lease_owner IS NULL THEN NULL ELSE cairn_now() + x.lease END,
       CASE WHEN x.lease_owner IS NULL THEN 0 ELSE 1 END
FROM {rows} x WHERE true
ON CONFLICT (id) DO NOTHING
RETURNING {run_columns}

-- name: set_run_trace
-- Only with cairn[otel] tracing on: the starter's trace context, in the transaction creating the run.
UPDATE cairn_runs SET trace_context = :trace WHERE id = :id

-- name: run_trace
-- A run's workflow and trace context (a child's own, else its parent's), for its spans.
SELECT r.workflow, COALESCE(r.trace_context, p.trace_context)
FROM cairn_runs r LEFT JOIN cairn_runs p ON p.id = r.parent_id WHERE r.id = :id

-- name: get_run
SELECT {run_columns} FROM cairn_runs WHERE id = :id

-- name: shown_run
-- A run as it is shown and waited for: none once a prune began deleting it (see pruned_runs).
-- That is the one rule of every read of runs for users (a run, its result, a page, the counts, a
-- schedule's last run): a run being pruned is gone. A statement reading runs' rows tests
-- `pruned_at IS NULL`; one counting them from an index alone subtracts the runs being pruned, found
-- by the cairn_runs_pruning index (few), instead: tested row by row, a count read every run's row
-- (2.5-4x: 7 -> 17 ms for a workflow's 60,000 runs on SQLite, 9 -> 25 ms on PostgreSQL).
SELECT {run_columns} FROM cairn_runs WHERE id = :id AND pruned_at IS NULL

-- name: id_holder
-- The run a start's id was refused for, and whether a prune began deleting it.
SELECT {run_columns}, pruned_at IS NOT NULL FROM cairn_runs WHERE id = :id

-- name: runs_by_ids
-- Result waits read the runs they wait for in one statement, only the ended ones on a safety round;
-- as shown_run, none a prune began deleting (its wait fails with RunNotFound, as status() does).
SELECT {run_columns} FROM cairn_runs
WHERE id = ANY(:ids) AND (:finished_only = 0 OR status IN ('completed', 'failed', 'cancelled'))
  AND pruned_at IS NULL

-- name: list_steps
SELECT {step_columns} FROM cairn_steps WHERE run_id = :run_id ORDER BY seq

-- name: steps_after
-- A page of a run's steps, by the primary key (run_id, seq): the steps after :after, oldest first.
SELECT {step_columns} FROM cairn_steps WHERE run_id = :run_id AND seq > :after ORDER BY seq LIMIT :limit

-- name: last_steps_of_run
-- A run's :limit latest steps, newest first (a long run's tail: `cairn show`).
SELECT {step_columns} FROM cairn_steps WHERE run_id = :run_id ORDER BY seq DESC LIMIT :limit

-- name: run_logs
-- The log lines of each step that wrote some (a run's logs, without reading its values).
SELECT seq, name, logs FROM cairn_steps WHERE run_id = :run_id AND logs IS NOT NULL ORDER BY seq

-- name: get_memory
SELECT key, value FROM cairn_memory WHERE run_id = :run_id ORDER BY key

-- name: property_history
SELECT activation, properties FROM cairn_properties WHERE run_id = :run_id ORDER BY activation

-- name: last_properties_of_run
-- A run's :limit latest property snapshots, newest first (a run page shows the latest).
SELECT activation, properties FROM cairn_properties WHERE run_id = :run_id ORDER BY activation DESC LIMIT :limit

-- name: run_sizes
-- How much a run has recorded: steps, events and property snapshots (each counted on its key's index).
SELECT (SELECT count(*) FROM cairn_steps WHERE run_id = :run_id),
       (SELECT count(*) FROM cairn_events WHERE run_id = :run_id),
       (SELECT count(*) FROM cairn_properties WHERE run_id = :run_id)

-- name: insert_signal
-- Buffered only for a run that can still receive it: a finished run never waits again. A client's
-- send carries its :request id, and is stored once: sent again after its COMMIT was cut off, it
-- stores nothing if the first landed (see journal_tx.signal).
INSERT INTO cairn_signals (run_id, name, payload, created_at, request)
SELECT :run_id, :name, :payload, :now, :request
 WHERE EXISTS (SELECT 1 FROM cairn_runs WHERE id = :run_id AND status NOT IN ('completed', 'failed', 'cancelled'))
   AND NOT EXISTS (SELECT 1 FROM cairn_signals WHERE request = :request)

-- name: signal_request
-- Whether the client's send :request was stored (settles a send whose COMMIT was cut off).
SELECT 1 FROM cairn_signals WHERE request = :request

-- name: set_code_version
-- The code a run started on, when whoever started it did not have it (a start by name, a child, a tick).
UPDATE cairn_runs SET code_version = :version WHERE id = :id AND code_version IS NULL

-- name: wake_run
-- A paused run is not made ready, but its row says it changed: a step of it ended (the dashboard's
-- run page follows a run by its updated_at, and showed the step running until reloaded).
UPDATE cairn_runs SET ready_at = CASE WHEN status = 'paused' THEN ready_at ELSE :now END, updated_at = :now
WHERE id = :id AND status IN ('pending', 'running', 'waiting', 'paused')

-- name: fence_run
-- An activation commit's first write: the run's lease token is still the one it was claimed with,
-- and the run's row is locked from here on (as an UPDATE would, without writing a version that the
-- commit's finish_activation writes again). finish_activation advances the token, so a claim that
-- read the run before this commit cannot commit decisions made from that stale read (its fence
-- fails), and vice versa.
-- The runs of a group commit are locked in id order (bytewise, as the batcher sorts its pieces,
-- whatever the database's collation), as every commit locks runs (see journal_tx.lock_in_order).
-- rows: id text, token bigint
SELECT 1 FROM cairn_runs r JOIN {rows} x ON r.id = x.id AND r.lease_token = x.token
ORDER BY r.id COLLATE "C"
FOR NO KEY UPDATE OF r

-- name: consume_signal_into_step
UPDATE cairn_steps SET status = 'completed', completed_at = :received_at, result = :payload
WHERE run_id = :run_id AND seq = :seq AND status = 'scheduled'

-- name: mark_signal_consumed
UPDATE cairn_signals SET consumed_by = :seq WHERE id = :signal_id

-- name: return_signal_of_step
-- A signal wait the workflow stopped before it took the signal matched to it (see
-- journal_tx._cancel_step): cancelled, its completed_at kept (the journal's delivery order uses it).
UPDATE cairn_steps SET status = 'cancelled', result = NULL, cancelled_in = :activation
WHERE run_id = :run_id AND seq = :seq AND kind = 'signal' AND status = 'completed'
RETURNING seq

-- name: unconsume_signal
UPDATE cairn_signals SET consumed_by = NULL WHERE run_id = :run_id AND consumed_by = :seq

-- name: deliver_step
-- rows: run_id text, seq integer, activation integer, delivered_at double precision
UPDATE cairn_steps AS s SET delivered_in = x.activation, delivered_at = x.delivered_at
FROM {rows} x
WHERE s.run_id = x.run_id AND s.seq = x.seq

-- name: insert_step
-- A step born running (leased to :lease_owner) is leased for :lease seconds from the database's
-- clock as the row is written (see insert_run); any other step is due at :due_at.
-- rows: run_id text, seq integer, kind text, name text, args text, status text, result text, delivered_in integer, due_at double precision, queue text, options text, now double precision, completed_at double precision, activation integer, attempt integer, lease_owner text, lease double precision, started_at double precision
INSERT INTO cairn_steps (run_id, seq, kind, name, args, status, result, delivered_in, due_at,
                         queue, options, created_at, completed_at, created_in, attempt, lease_owner,
                         started_at)
SELECT x.run_id, x.seq, x.kind, x.name, x.args, x.status, x.result, x.delivered_in,
       CASE WHEN x.lease IS NULL THEN x.due_at ELSE cairn_now() + x.lease END,
       x.queue, x.options, x.now, x.completed_at, x.activation, x.attempt, x.lease_owner, x.started_at
FROM {rows} x

-- name: cancel_step
-- A step the workflow stopped waiting for; its kind and options say whether a child is to be stopped.
-- An attempt running then did not fail: it counts as lost (see cancel_open_steps).
UPDATE cairn_steps
SET status = 'cancelled', completed_at = :now, delivered_in = 0, lease_owner = NULL, cancelled_in = :activation,
    lost = lost + CASE WHEN status = 'running' THEN 1 ELSE 0 END
WHERE run_id = :run_id AND seq = :seq AND status IN ('scheduled', 'running')
RETURNING kind, options

-- name: upsert_memory
-- rows: run_id text, key text, value text, step integer, now double precision; last wins on run_id, key
INSERT INTO cairn_memory (run_id, key, value, step, updated_at)
SELECT x.run_id, x.key, x.value, x.step, x.now FROM {rows} x WHERE true
ON CONFLICT (run_id, key) DO UPDATE
SET value = excluded.value, step = excluded.step, updated_at = excluded.updated_at

-- name: insert_properties
-- rows: run_id text, activation integer, after_step integer, properties text; last wins on run_id, activation
INSERT INTO cairn_properties (run_id, activation, after_step, properties)
SELECT x.run_id, x.activation, x.after_step, x.properties FROM {rows} x WHERE true
ON CONFLICT (run_id, activation) DO UPDATE SET properties = excluded.properties

-- name: finish_activation
-- The run's new state, ending an activation commit: the token advances (see fence_run). The run
-- is next ready now when a result arrived meanwhile (recorded apart, or a signal matched to its
-- wait by this commit), else at its next timer; `due` says it is ready now, for the wake-up.
-- A sticky lease runs :lease seconds from the database's clock as the row is written (see insert_run).
-- rows: id text, token bigint, status text, result text, error text, activations integer, properties text, now double precision, started_at double precision, completed_at double precision, parked integer, wake_at double precision, pause_reason text, lease_owner text, lease double precision
UPDATE cairn_runs AS r
SET status = x.status, result = x.result, error = x.error, activations = x.activations,
    pause_reason = x.pause_reason, properties = COALESCE(x.properties, r.properties), updated_at = x.now,
    started_at = COALESCE(r.started_at, x.started_at), completed_at = x.completed_at,
    lease_owner = x.lease_owner, lease_until = cairn_now() + x.lease, lease_token = r.lease_token + 1,
    ready_at = CASE
        WHEN x.parked = 1 THEN NULL
        WHEN EXISTS (SELECT 1 FROM cairn_steps s WHERE s.run_id = x.id AND s.delivered_in IS NULL
                     AND s.status IN ('completed', 'failed', 'cancelled')) THEN x.now
        ELSE x.wake_at END
FROM {rows} x
WHERE r.id = x.id AND r.lease_token = x.token
RETURNING CASE WHEN ready_at <= updated_at THEN 1 ELSE 0 END AS due

-- name: child_step_options
-- The options of a parent's step that waits for a child: they name the child's run.
SELECT options FROM cairn_steps WHERE run_id = :run_id AND seq = :seq AND kind = 'child'

-- name: run_due
-- Whether a run is due now or within a second (`now` is a commit's estimate of the database's
-- clock, which may run a little ahead or behind the claim that skipped it): see resolve_parent.
SELECT 1 FROM cairn_runs WHERE id = :id AND ready_at <= :now + 1.0 AND status IN ('pending', 'running', 'waiting')

-- name: resolve_parent_step
UPDATE cairn_steps SET status = :status, result = :result, error = :error, completed_at = :now
WHERE run_id = :run_id AND seq = :seq AND status IN ('scheduled', 'running')

-- name: adopt_child
-- An existing run becomes the child a parent's step waits for. Its token advances, as a control
-- operation's does: a commit of it built before (which knew of no parent step to resolve as it
-- ends) fails its fence and is made again from the row as it is now; a run held by a worker is
-- claimable at once rather than when its lease runs out. Only a run of no parent, or of this
-- parent: a run hands its outcome to one parent (a detached child is its parent's to join).
UPDATE cairn_runs
SET parent_id = :parent_id, parent_seq = :parent_seq, lease_token = lease_token + 1,
    ready_at = CASE WHEN lease_owner IS NULL THEN ready_at ELSE :now END, lease_owner = NULL, lease_until = NULL
WHERE id = :id AND (parent_id IS NULL OR parent_id = :parent_id)
  AND status NOT IN ('completed', 'failed', 'cancelled')

-- name: release_run
UPDATE cairn_runs SET lease_owner = NULL, lease_until = NULL WHERE id = :id AND lease_token = :token

-- name: complete_step
-- An attempt's outcome, fenced by its number: only the attempt the step is running under writes,
-- and only to a step created before the attempt was leased (`ActionClaim.started_at`: not one of
-- a run started again under the id of one deleted since). A second of slack: a step's creation is
-- stamped with its worker's idea of the database's clock, which may run a little ahead of it.
-- rows: run_id text, seq integer, attempt integer, started_at double precision, status text, result text, error text, memory_writes text, logs text, completed_at double precision, due_at double precision, delivered_in integer, delivered_at double precision
UPDATE cairn_steps AS s
SET status = x.status, result = x.result, error = x.error, memory_writes = x.memory_writes,
    logs = COALESCE(x.logs, s.logs), completed_at = x.completed_at, due_at = x.due_at, lease_owner = NULL,
    delivered_in = COALESCE(x.delivered_in, s.delivered_in), delivered_at = COALESCE(x.delivered_at, s.delivered_at)
FROM {rows} x
WHERE s.run_id = x.run_id AND s.seq = x.seq AND s.attempt = x.attempt AND s.status = 'running'
  AND (x.started_at IS NULL OR s.created_at <= x.started_at + 1)
RETURNING 1

-- name: step_state
-- Where an attempt stands, read when recording its outcome failed with the outcome unknown.
SELECT status, attempt FROM cairn_steps WHERE run_id = :run_id AND seq = :seq

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
WHERE (run_id, seq) IN (SELECT run_id, seq FROM cairn_steps
                        WHERE lease_owner = :worker AND status IN ('scheduled', 'running') AND status = 'running'
                          AND kind = 'action'
                        FOR UPDATE SKIP LOCKED)

-- name: hand_over_attempts
-- The attempts a stopping worker stopped (the others it still runs keep their lease).
UPDATE cairn_steps SET due_at = :now, lease_owner = NULL
WHERE (run_id, seq) IN (SELECT run_id, seq FROM cairn_steps
                        WHERE lease_owner = :worker AND status IN ('scheduled', 'running') AND status = 'running'
                          AND kind = 'action'
                          AND run_id || ' ' || seq = ANY(:attempts)
                        FOR UPDATE SKIP LOCKED)

-- name: hand_over_runs
-- Only an unfinished run is ever leased (a run's last commit and every control change let go of
-- it); testing the status walks the status index instead of every run ever (16 ms on PostgreSQL
-- with 100,000 finished runs, three times as a worker stopped).
UPDATE cairn_runs SET lease_owner = NULL, lease_until = NULL
WHERE id IN (SELECT id FROM cairn_runs WHERE status IN ('pending', 'running', 'waiting', 'paused')
                                         AND lease_owner = :worker FOR UPDATE SKIP LOCKED)

-- The journals of the runs one claim took, in one statement each (not one per run).

-- name: list_workers
SELECT id, host, pid, queues, started_at, heartbeat_at, in_flight, serves FROM cairn_workers
WHERE heartbeat_at >= :since ORDER BY started_at

-- name: upsert_workflow
INSERT INTO cairn_workflows (name, description, input_schema, queue, derives_id, updated_at)
VALUES (:name, :description, :input_schema, :queue, :derives_id, :now)
ON CONFLICT (name) DO UPDATE SET description = excluded.description,
    input_schema = excluded.input_schema, queue = excluded.queue, derives_id = excluded.derives_id,
    updated_at = excluded.updated_at

-- name: list_workflows
SELECT name, description, input_schema, queue, derives_id FROM cairn_workflows ORDER BY name

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

-- name: events_after
-- A page of a run's events, by (run_id, id): those after :after, of the steps :first_step to
-- :last_step only when those are given (a run page's steps), oldest first.
SELECT id, at, kind, step, detail FROM cairn_events
WHERE run_id = :run_id AND id > :after
  AND (CAST(:first_step AS integer) IS NULL OR step BETWEEN :first_step AND :last_step)
ORDER BY id LIMIT :limit

-- name: last_events_of_run
-- A run's :limit latest events, newest first.
SELECT id, at, kind, step, detail FROM cairn_events WHERE run_id = :run_id ORDER BY id DESC LIMIT :limit

-- name: set_control
-- A control change lets go of the run's lease, and of a queue's claim of it (queue_claimed_at): a
-- run paused before it began, resumed or retried waits to be claimed again.
UPDATE cairn_runs
SET status = :status, pause_reason = :pause_reason, error = :error, completed_at = :completed_at,
    ready_at = CAST(:ready_at AS double precision), lease_owner = NULL, lease_until = NULL,
    lease_token = lease_token + 1, updated_at = :now, queue_claimed_at = NULL
WHERE id = :id

-- name: open_timeout_window
-- A retry gives the run its whole timeout again, counted from the retry (before any retry, the
-- timeout counts from the run's start: see RunRow.deadline).
UPDATE cairn_runs SET timeout_from = :now WHERE id = :id

-- name: cancel_open_steps
-- An attempt running then did not fail: it counts as lost, as one whose worker died does, so that a
-- retry that opens the step again gives it the attempts its policy allows (its number still goes
-- up: the number fences out the cancelled attempt, should it end after the next one began).
UPDATE cairn_steps
SET status = 'cancelled', completed_at = :now, delivered_in = 0, lease_owner = NULL, cancelled_in = :activation,
    lost = lost + CASE WHEN status = 'running' THEN 1 ELSE 0 END
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

-- name: open_child_steps
SELECT seq, name, args, queue, options FROM cairn_steps
WHERE run_id = :run_id AND kind = 'child' AND status IN ('scheduled', 'running') ORDER BY seq

-- name: set_step_options
UPDATE cairn_steps SET options = :options WHERE run_id = :run_id AND seq = :seq

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

-- name: ended_children_of_open_steps
SELECT r.id FROM cairn_steps s JOIN cairn_runs r ON r.parent_id = s.run_id AND r.parent_seq = s.seq
WHERE s.run_id = :run_id AND s.kind = 'child' AND s.status IN ('scheduled', 'running')
  AND r.status IN ('completed', 'failed', 'cancelled') AND r.pruned_at IS NULL
ORDER BY s.seq

-- name: awaited_child
-- The child a parent's step waits for while it is still going (a child started with start_child
-- has no parent step: it is not the parent's to stop).
SELECT id FROM cairn_runs
WHERE parent_id = :parent_id AND parent_seq = :seq AND status IN ('pending', 'running', 'waiting', 'paused')


-- name: due_needs
-- Work that is due and free to take now: runs ready for an activation, and action attempts ready to
-- start (the first :limit of each). What no live worker serves among them is reported. The steps'
-- status is tested as the due-actions index is defined, as well: SQLite uses a partial index only
-- for a query that repeats its condition, and otherwise read every step ever at every heartbeat.
-- The runs are walked by ready_at and the walk stops at the limit: the clock is the transaction's
-- (cairn_now() is volatile, and PostgreSQL then walked every sleeping run, testing each: 100 ms a
-- heartbeat with 100,000 asleep), and the status is no index's key (SQLite read every active run
-- by status and sorted them: 40 ms with 30,000 asleep).
SELECT * FROM (SELECT id, 'workflow', workflow, queue, CAST(NULL AS integer) FROM cairn_runs
               WHERE ready_at <= cairn_tx_now() AND (status || '') IN ('pending', 'running', 'waiting')
                 AND (lease_until IS NULL OR lease_until < cairn_tx_now())
               ORDER BY ready_at LIMIT :limit) runs
UNION ALL
SELECT * FROM (SELECT run_id, 'action', name, COALESCE(queue, 'default'), seq FROM cairn_steps s
               WHERE kind = 'action' AND status IN ('scheduled', 'running') AND status = 'scheduled'
                 AND due_at <= cairn_tx_now()
                 AND EXISTS (SELECT 1 FROM cairn_runs r WHERE r.id = s.run_id
                             AND r.status IN ('pending', 'running', 'waiting'))
               ORDER BY due_at LIMIT :limit) steps

-- name: runs_being_pruned
-- A prune finishes first what an earlier one began (pruned_at set: see pruned_runs) and did not end,
-- its process gone between two of its transactions; at most :limit, those another prune holds now
-- skipped. The cairn_runs_pruning index finds them.
SELECT id FROM cairn_runs WHERE pruned_at IS NOT NULL ORDER BY pruned_at, id LIMIT :limit FOR UPDATE SKIP LOCKED

-- name: prunable_runs
-- Retention: the oldest finished runs (of :status, when given) that finished before :before, at most
-- :limit of them, but none that is the parent of a run still going, nor the child of one (a parent
-- that started it detached reads its outcome later: pruned, the parent failed with RunNotFound).
-- Locked (another prune skips them), and tested again once locked: a run retried meanwhile stays.
SELECT id FROM cairn_runs r
WHERE completed_at < :before AND status IN ('completed', 'failed', 'cancelled') AND pruned_at IS NULL
  AND (CAST(:status AS text) IS NULL OR status = CAST(:status AS text))
  AND NOT EXISTS (SELECT 1 FROM cairn_runs c WHERE c.parent_id = r.id
                  AND c.status NOT IN ('completed', 'failed', 'cancelled'))
  AND NOT EXISTS (SELECT 1 FROM cairn_runs p WHERE p.id = r.parent_id
                  AND p.status NOT IN ('completed', 'failed', 'cancelled'))
ORDER BY completed_at
LIMIT :limit
FOR UPDATE SKIP LOCKED

-- name: prune_steps
-- A piece of the history of the runs being pruned, :ids: at most :limit rows, found by the table's
-- key (run_id first), as in prune_events, prune_properties and prune_memory. A run's history is
-- deleted in such pieces, each transaction of a prune bounded by rows, not by runs.
DELETE FROM cairn_steps WHERE (run_id, seq) IN (
    SELECT run_id, seq FROM cairn_steps WHERE run_id = ANY(:ids) LIMIT :limit)

-- name: prune_events
DELETE FROM cairn_events WHERE (run_id, id) IN (
    SELECT run_id, id FROM cairn_events WHERE run_id = ANY(:ids) LIMIT :limit)

-- name: prune_properties
DELETE FROM cairn_properties WHERE (run_id, activation) IN (
    SELECT run_id, activation FROM cairn_properties WHERE run_id = ANY(:ids) LIMIT :limit)

-- name: prune_memory
DELETE FROM cairn_memory WHERE (run_id, key) IN (
    SELECT run_id, key FROM cairn_memory WHERE run_id = ANY(:ids) LIMIT :limit)

-- name: prune_signals
DELETE FROM cairn_signals WHERE id IN (SELECT id FROM cairn_signals WHERE run_id = ANY(:ids) LIMIT :limit)

-- name: pruned_runs
-- Runs whose history a prune began deleting and did not finish in this transaction: deleted from
-- now on, as far as anyone can tell (not shown nor listed, not retried nor forked), and finished by
-- the next transaction of a prune, whichever process makes it.
UPDATE cairn_runs SET pruned_at = :now WHERE id = ANY(:ids) AND pruned_at IS NULL

-- name: delete_pruned_runs
-- The runs themselves, once nothing they recorded is left (their row last: a run is never seen
-- with part of its history).
DELETE FROM cairn_runs WHERE id = ANY(:ids)

-- name: count_runs
-- From the status's index alone, less the runs being pruned (see shown_run).
SELECT (SELECT count(*) FROM cairn_runs WHERE status = :status)
     - (SELECT count(*) FROM cairn_runs WHERE pruned_at IS NOT NULL AND status = :status)

-- Reads for the HTTP API and dashboard (keyset pages, counts, children); migrations 0005 (SQLite) and 0010 (PostgreSQL) index them.

-- name: runs_page_newest
-- A page of runs, newest first, after the keyset (:after_at, :after_id) when given (never OFFSET:
-- each page costs the same however deep). Every filter is optional (NULL: any). The keyset test
-- is written as a range on created_at plus a tie-break, so the (created_at, id) index serves it.
-- With a status, runs_page_newest_of_status walks the (status, created_at) index instead: with
-- the status test skippable, SQLite walked the runs of all statuses, newest first, testing each
-- (58 ms for a page of paused runs of one workflow among 100,000 runs). With a workflow and no
-- status, runs_page_newest_of_workflow walks the (workflow, created_at) index: a workflow of few
-- runs was found by a walk of every run (38-45 ms at 100,000 runs). With both,
-- runs_page_newest_of_workflow_and_status walks the (workflow, status, created_at, id) index: the
-- status's index, tested run by run for the workflow, read every run of a common status to find
-- the few of a workflow (16 ms at 60,000 waiting runs, 35 ms at 99,000). A page after another
-- (`after_at`) has the `_after_at` variants, whose keyset test seeks in those indexes: skippable,
-- SQLite walked from the top down to the page (6.3 ms for a page after 99,900 runs).
-- indexed when given: status
-- indexed when given: workflow
-- indexed when given: workflow and status
-- indexed when given: after_at
-- indexed when given: status and after_at
-- indexed when given: workflow and after_at
-- indexed when given: workflow and status and after_at
SELECT {run_columns}
FROM cairn_runs
WHERE (CAST(:status AS text) IS NULL OR status = CAST(:status AS text))
  AND (CAST(:workflow AS text) IS NULL OR workflow = CAST(:workflow AS text))
  AND (CAST(:id_prefix AS text) IS NULL OR substr(id, 1, length(CAST(:id_prefix AS text))) = CAST(:id_prefix AS text))
  AND (CAST(:since AS double precision) IS NULL OR created_at >= CAST(:since AS double precision))
  AND (CAST(:until AS double precision) IS NULL OR created_at < CAST(:until AS double precision))
  AND (CAST(:after_at AS double precision) IS NULL
       OR (created_at, id) < (CAST(:after_at AS double precision), :after_id))
  AND pruned_at IS NULL
ORDER BY created_at DESC, id DESC
LIMIT :limit

-- name: runs_page_oldest
-- As runs_page_newest, oldest first.
-- indexed when given: status
-- indexed when given: workflow
-- indexed when given: workflow and status
-- indexed when given: after_at
-- indexed when given: status and after_at
-- indexed when given: workflow and after_at
-- indexed when given: workflow and status and after_at
SELECT {run_columns}
FROM cairn_runs
WHERE (CAST(:status AS text) IS NULL OR status = CAST(:status AS text))
  AND (CAST(:workflow AS text) IS NULL OR workflow = CAST(:workflow AS text))
  AND (CAST(:id_prefix AS text) IS NULL OR substr(id, 1, length(CAST(:id_prefix AS text))) = CAST(:id_prefix AS text))
  AND (CAST(:since AS double precision) IS NULL OR created_at >= CAST(:since AS double precision))
  AND (CAST(:until AS double precision) IS NULL OR created_at < CAST(:until AS double precision))
  AND (CAST(:after_at AS double precision) IS NULL
       OR (created_at, id) > (CAST(:after_at AS double precision), :after_id))
  AND pruned_at IS NULL
ORDER BY created_at, id
LIMIT :limit

-- name: run_counts_by_status
-- Of the runs a page of runs_page_newest shows (every filter but the status, which it counts by):
-- those runs counted from an index alone, less those of them being pruned (see shown_run), so
-- each filter is written twice, once for each count.
-- indexed when given: workflow
SELECT '' AS key, status, sum(n) FROM (
    SELECT status, count(*) AS n FROM cairn_runs
    WHERE (CAST(:workflow AS text) IS NULL OR workflow = CAST(:workflow AS text))
      AND (CAST(:id_prefix AS text) IS NULL OR substr(id, 1, length(CAST(:id_prefix AS text))) = CAST(:id_prefix AS text))
      AND (CAST(:since AS double precision) IS NULL OR created_at >= CAST(:since AS double precision))
      AND (CAST(:until AS double precision) IS NULL OR created_at < CAST(:until AS double precision))
    GROUP BY status
    UNION ALL
    SELECT status, -count(*) FROM cairn_runs
    WHERE pruned_at IS NOT NULL
      AND (CAST(:workflow AS text) IS NULL OR workflow = CAST(:workflow AS text))
      AND (CAST(:id_prefix AS text) IS NULL OR substr(id, 1, length(CAST(:id_prefix AS text))) = CAST(:id_prefix AS text))
      AND (CAST(:since AS double precision) IS NULL OR created_at >= CAST(:since AS double precision))
      AND (CAST(:until AS double precision) IS NULL OR created_at < CAST(:until AS double precision))
    GROUP BY status) counted
GROUP BY status
HAVING sum(n) > 0

-- name: run_counts_by_workflow
-- As run_counts_by_status: all runs, less those being pruned.
SELECT workflow, status, sum(n) FROM (
    SELECT workflow, status, count(*) AS n FROM cairn_runs GROUP BY workflow, status
    UNION ALL
    SELECT workflow, status, -count(*) FROM cairn_runs WHERE pruned_at IS NOT NULL GROUP BY workflow, status) counted
GROUP BY workflow, status
HAVING sum(n) > 0

-- name: run_counts_by_queue
SELECT queue, status, sum(n) FROM (
    SELECT queue, status, count(*) AS n FROM cairn_runs GROUP BY queue, status
    UNION ALL
    SELECT queue, status, -count(*) FROM cairn_runs WHERE pruned_at IS NOT NULL GROUP BY queue, status) counted
GROUP BY queue, status
HAVING sum(n) > 0

-- name: children_of_run
SELECT {run_columns}
FROM cairn_runs WHERE parent_id = :id AND pruned_at IS NULL ORDER BY created_at, id LIMIT :limit

-- name: claim_runs
-- Runs due, oldest first (by priority), up to :limit, of which at most :new_limit new ones (a
-- worker takes new runs only while it has action slots free for their first actions: see
-- Worker._claim). Each status is a walk of cairn_runs_claim in claim order that stops after its
-- limit, so a claim costs the same however many runs are due or were ever run (a sort of every due
-- run cost 2.6 ms at 100 pending and 90 ms at 20,000); then the oldest of all. The workflow test
-- is written so that no index serves it (the workflow index would read every run of the workflow
-- ever). Rows a walk locked but the limit leaves are free again when the claim ends. Waiting runs
-- (the sleepers: most of them not due) are walked at the default priority by ready_at alone, a
-- range of the index that ends at the clock; ordered by priority first, the walk read every
-- sleeping run when fewer than the limit were due (2 ms on SQLite with 20,000 asleep). Those of
-- a higher and of a lower priority, few, are walks of their own (each a range of the index too).
-- A new run leased to this worker less than :settle seconds ago is not retaken: :busy is listed as
-- the claim begins, and a run started in the worker's process while the claim is under way is
-- born leased to it, its first activation already on its way (see SqlStore.claim_work).
WITH running AS (
    SELECT id, priority, ready_at FROM cairn_runs
    WHERE status = 'running' AND ready_at <= cairn_tx_now()
      AND (lease_until IS NULL OR lease_until < cairn_tx_now() OR (lease_owner = :worker AND NOT id = ANY(:busy)))
      AND (workflow || '') = ANY(:workflows) AND (:any_queue = 1 OR queue = ANY(:queues))
    ORDER BY priority DESC, ready_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED),
waiting AS (
    SELECT id, priority, ready_at FROM cairn_runs
    WHERE status = 'waiting' AND priority = 0 AND ready_at <= cairn_tx_now()
      AND (lease_until IS NULL OR lease_until < cairn_tx_now() OR (lease_owner = :worker AND NOT id = ANY(:busy)))
      AND (workflow || '') = ANY(:workflows) AND (:any_queue = 1 OR queue = ANY(:queues))
    ORDER BY ready_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED),
waiting_first AS (
    SELECT id, priority, ready_at FROM cairn_runs
    WHERE status = 'waiting' AND priority > 0 AND ready_at <= cairn_tx_now()
      AND (lease_until IS NULL OR lease_until < cairn_tx_now() OR (lease_owner = :worker AND NOT id = ANY(:busy)))
      AND (workflow || '') = ANY(:workflows) AND (:any_queue = 1 OR queue = ANY(:queues))
    ORDER BY priority DESC, ready_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED),
waiting_last AS (
    SELECT id, priority, ready_at FROM cairn_runs
    WHERE status = 'waiting' AND priority < 0 AND ready_at <= cairn_tx_now()
      AND (lease_until IS NULL OR lease_until < cairn_tx_now() OR (lease_owner = :worker AND NOT id = ANY(:busy)))
      AND (workflow || '') = ANY(:workflows) AND (:any_queue = 1 OR queue = ANY(:queues))
    ORDER BY priority DESC, ready_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED),
new_runs AS (
    SELECT id, priority, ready_at FROM cairn_runs
    WHERE status = 'pending' AND ready_at <= cairn_tx_now()
      AND (lease_until IS NULL OR lease_until < cairn_tx_now()
           OR (lease_owner = :worker AND NOT id = ANY(:busy) AND lease_until < cairn_tx_now() + :lease - :settle))
      AND (workflow || '') = ANY(:workflows) AND (:any_queue = 1 OR queue = ANY(:queues))
      AND NOT queue IN (SELECT name FROM cairn_queues WHERE limited = 1)
    ORDER BY priority DESC, ready_at
    LIMIT :new_limit
    FOR UPDATE SKIP LOCKED)
UPDATE cairn_runs
SET lease_owner = :worker, lease_until = cairn_tx_now() + :lease, lease_token = lease_token + 1
WHERE id IN (SELECT id FROM (SELECT id, priority, ready_at FROM running
                             UNION ALL
                             SELECT id, priority, ready_at FROM waiting
                             UNION ALL
                             SELECT id, priority, ready_at FROM waiting_first
                             UNION ALL
                             SELECT id, priority, ready_at FROM waiting_last
                             UNION ALL
                             SELECT id, priority, ready_at FROM new_runs) picked
             ORDER BY priority DESC, ready_at
             LIMIT :limit)
RETURNING {run_columns}

-- name: claim_actions
UPDATE cairn_steps AS s
SET status = 'running', attempt = s.attempt + 1, lease_owner = :worker, due_at = cairn_tx_now() + :lease,
    lost = s.lost + CASE WHEN s.status = 'running' THEN 1 ELSE 0 END,
    started_at = cairn_tx_now()
FROM (SELECT run_id AS claimed_run, seq AS claimed_seq FROM cairn_steps
      WHERE kind = 'action' AND status IN ('scheduled', 'running') AND due_at <= cairn_tx_now()
        AND name = ANY(:names) AND (:any_queue = 1 OR queue = ANY(:queues))
        AND (:gated = 0 OR queue IS NULL OR NOT queue IN (SELECT name FROM cairn_queues WHERE limited = 1))
        AND EXISTS (SELECT 1 FROM cairn_runs r WHERE r.id = cairn_steps.run_id
                    AND r.status IN ('pending', 'running', 'waiting'))
      ORDER BY due_at
      LIMIT :limit
      FOR UPDATE SKIP LOCKED) c
WHERE s.run_id = c.claimed_run AND s.seq = c.claimed_seq
RETURNING run_id, seq, name, args, attempt, options, queue, lost, started_at

-- name: memory_of_runs
SELECT run_id, key, value FROM cairn_memory WHERE run_id = ANY(:run_ids)

-- name: lock_run
SELECT status FROM cairn_runs WHERE id = :id FOR UPDATE

-- name: lock_runs
-- A commit's first statement when it writes runs other than its own (see journal_tx.lock_in_order):
-- those runs, its own, and the open children awaited at the steps it cancels, locked in id order
-- (the rows are sorted first, bytewise as fence_run sorts them, then locked one after the other).
SELECT id FROM cairn_runs
WHERE id = ANY(:ids)
   OR (parent_id = ANY(:parents) AND parent_id || ' ' || parent_seq = ANY(:children)
       AND status IN ('pending', 'running', 'waiting', 'paused'))
ORDER BY id COLLATE "C"
FOR UPDATE

-- name: lock_run_nowait
-- A control operation's further locks (see control._lock): refused at once when held elsewhere.
SELECT status FROM cairn_runs WHERE id = :id FOR UPDATE NOWAIT

-- name: busy_due
-- Of this worker's busy runs (not claimed: an activation or commit of theirs is under way), those
-- due now or within a second, e.g. by that very commit (a signal it matched, a child it found
-- ended): the worker claims again when they are no longer busy, as no later wake-up will say they
-- are due. Within a second: a commit dates what it makes due by its worker's estimate of the
-- database's clock, which may run a little ahead.
SELECT id FROM cairn_runs
WHERE id = ANY(:busy) AND lease_owner = :worker AND ready_at <= cairn_tx_now() + 1.0

-- name: next_wake_runs
-- When the next run this worker could claim falls due, after this transaction's claims: only
-- future wake-ups count. A run due now that the claims left was left for a reason that brings
-- its own wake-up: another worker's claim under way holds it (SKIP LOCKED; it takes the run, or its
-- rollback leaves it to the safety poll), capacity cut the claim short (the worker claims again
-- as slots free), it is busy here (see Worker._passed_over), or leased to another worker (a lease
-- running out is the safety poll's to see). Counted as due now, a run another claim held made
-- the worker claim again within a millisecond until that claim committed: 3.2-4.4 claims a start
-- with two workers instead of 2. That keeps this a short walk of the ready_at index from the
-- clock on, however many runs are sleeping: the first row in ready_at order that passes, not the
-- MIN of all that do (which reads them all). The workflow test is written so that no index
-- serves it: on a table not yet analyzed (and on SQLite), the planner would otherwise read every
-- run of these workflows through the workflow index.
SELECT ready_at FROM cairn_runs
WHERE ready_at > cairn_tx_now() AND (workflow || '') = ANY(:workflows) AND (:any_queue = 1 OR queue = ANY(:queues))
  AND (lease_until IS NULL OR lease_until <= ready_at OR (lease_owner = :worker AND NOT id = ANY(:busy)))
  AND NOT (status = 'pending' AND queue IN (SELECT name FROM cairn_queues WHERE limited = 1))
ORDER BY ready_at
LIMIT 1

-- name: next_wake_actions
-- Like claim_actions' filter: a step of a paused run is not due, however old its due_at. Only
-- future due times count, as for next_wake_runs: an attempt due now that claim_actions left is
-- held by another worker's claim under way, or was left for want of slots, or waits in a queue
-- with limits (whose claim says when to look again). The first step in due_at order that passes
-- (MIN would join every step in flight to its run).
SELECT due_at FROM cairn_steps
WHERE kind = 'action' AND status IN ('scheduled', 'running') AND name = ANY(:names)
  AND (:any_queue = 1 OR queue = ANY(:queues)) AND due_at > cairn_tx_now()
  AND EXISTS (SELECT 1 FROM cairn_runs r WHERE r.id = cairn_steps.run_id
              AND r.status IN ('pending', 'running', 'waiting'))
ORDER BY due_at
LIMIT 1

-- name: lock_run_row
-- None once a prune began deleting the run (see pruned_runs): it is not to be retried or forked.
SELECT {run_columns}
FROM cairn_runs WHERE id = :id AND pruned_at IS NULL FOR UPDATE

-- name: lock_run_row_nowait
SELECT {run_columns}
FROM cairn_runs WHERE id = :id AND pruned_at IS NULL FOR UPDATE NOWAIT

-- name: extend_step_leases
-- Only the attempts the worker says it is running: one it lost track of (a commit whose outcome
-- is unknown) runs out its lease and is taken over. Rows a commit holds are skipped (that commit
-- is settling them), so a heartbeat never deadlocks one. Leases run from the database's clock.
-- The attempts' runs (:attempt_runs) find their steps by key: tested on "run seq" text alone, every
-- step ever was read at every heartbeat (60 ms each on SQLite with 100,000 finished runs).
UPDATE cairn_steps SET due_at = cairn_now() + :lease
WHERE (run_id, seq) IN (SELECT run_id, seq FROM cairn_steps
                        WHERE run_id = ANY(:attempt_runs)
                          AND lease_owner = :worker AND status = 'running' AND kind = 'action'
                          AND run_id || ' ' || seq = ANY(:attempts)
                        FOR UPDATE SKIP LOCKED)

-- name: lost_attempts
-- Of the attempts a worker runs (as in extend_step_leases), those it no longer holds: their step was
-- cancelled with its run, or its lease lapsed (the worker stopped past it: SIGSTOP, a long pause)
-- and another worker runs the step now. The worker stops them rather than let them run on for
-- nothing, beside the attempt that took over. (Not "any state but running under this worker": an
-- attempt retried here starts before the commit that marks it running lands, its step still
-- scheduled, and stopping it there left the step running for ever.)
SELECT run_id, seq FROM cairn_steps
WHERE run_id = ANY(:attempt_runs) AND kind = 'action'
  AND (status = 'cancelled' OR (status = 'running' AND lease_owner <> :worker))
  AND run_id || ' ' || seq = ANY(:attempts)

-- name: extend_run_leases
UPDATE cairn_runs SET lease_until = cairn_now() + :lease
WHERE id IN (SELECT id FROM cairn_runs WHERE lease_owner = :worker AND id = ANY(:runs) FOR UPDATE SKIP LOCKED)

-- name: fire_due_timers_of_runs
UPDATE cairn_steps SET status = 'completed', completed_at = :now
WHERE run_id = ANY(:run_ids) AND kind = 'timer' AND status = 'scheduled' AND due_at <= :now
RETURNING run_id, seq

-- name: steps_of_runs
SELECT {step_columns}
FROM cairn_steps
WHERE run_id = ANY(:run_ids) ORDER BY run_id, seq

-- name: undelivered_steps_of_runs
SELECT {step_columns}
FROM cairn_steps
WHERE run_id = ANY(:run_ids) AND delivered_in IS NULL AND status IN ('completed', 'failed', 'cancelled')
ORDER BY run_id, seq

-- name: signal_matches
-- Each open signal wait of these runs paired with a buffered signal of its name: the n-th open
-- wait (in step order) takes the n-th buffered signal (in arrival order), so a burst is received
-- in order, one signal per wait. See journal_tx.consume_signals, the one place they are matched.
-- With each pair, the earliest due time of a timer of its run that has come due by :now and not
-- yet reached the workflow (fired or not): a signal after it waits for it (journal_tx.after_the_timers).
-- Read for pairs only, by the run's key, as fire_due_timers_of_runs reads its timers.
SELECT w.run_id, w.seq, w.name, s.id, s.payload, w.created_at, s.created_at,
       (SELECT MIN(t.due_at) FROM cairn_steps t
        WHERE t.run_id = w.run_id AND t.kind = 'timer' AND t.due_at <= :now
          AND (t.status = 'scheduled' OR (t.status = 'completed' AND t.delivered_in IS NULL))) AS timer_due
FROM (SELECT run_id, seq, name, created_at, row_number() OVER (PARTITION BY run_id, name ORDER BY seq) AS n
      FROM cairn_steps WHERE run_id = ANY(:run_ids) AND kind = 'signal' AND status = 'scheduled') w
JOIN (SELECT run_id, id, name, payload, created_at, row_number() OVER (PARTITION BY run_id, name ORDER BY id) AS n
      FROM cairn_signals WHERE run_id = ANY(:run_ids) AND consumed_by IS NULL) s
  ON s.run_id = w.run_id AND s.name = w.name AND s.n = w.n
ORDER BY w.run_id, w.seq

-- name: needs_of_runs
-- What these runs need a worker for: their workflow while they are not finished, and each action
-- step of theirs waiting to start (due or retrying later).
SELECT id, 'workflow', workflow, queue, CAST(NULL AS integer) FROM cairn_runs
WHERE id = ANY(:run_ids) AND status IN ('pending', 'running', 'waiting')
UNION ALL
SELECT run_id, 'action', name, COALESCE(queue, 'default'), seq FROM cairn_steps s
WHERE run_id = ANY(:run_ids) AND kind = 'action' AND status = 'scheduled'
  AND EXISTS (SELECT 1 FROM cairn_runs r WHERE r.id = s.run_id AND r.status IN ('pending', 'running', 'waiting'))

-- name: last_steps_of_runs
-- The latest step of each run (the runs list's "current step"); each MAX is one probe of the key.
SELECT {step_columns}
FROM cairn_steps s
WHERE run_id = ANY(:run_ids)
  AND seq = (SELECT MAX(seq) FROM cairn_steps m WHERE m.run_id = s.run_id)

-- Schedules (cairn.schedules): declared in code or made through the client, fired by workers.

-- name: upsert_schedule
-- A schedule as declared now. A changed expression or time zone moves its next tick to :next_fire_at
-- (computed from now); otherwise the next tick stays. Pausing is the operator's, never undone here.
INSERT INTO cairn_schedules (id, workflow, queue, cron, every, tz, input, overlap, catchup, catchup_window,
                             source, next_fire_at, created_at, updated_at)
VALUES (:id, :workflow, :queue, :cron, :every, :tz, :input, :overlap, :catchup, :catchup_window,
        :source, :next_fire_at, :now, :now)
ON CONFLICT (id) DO UPDATE
SET workflow = excluded.workflow, queue = excluded.queue, input = excluded.input, overlap = excluded.overlap,
    catchup = excluded.catchup, catchup_window = excluded.catchup_window, source = excluded.source,
    next_fire_at = CASE WHEN cairn_schedules.cron IS NOT DISTINCT FROM excluded.cron
                             AND cairn_schedules.every IS NOT DISTINCT FROM excluded.every
                             AND cairn_schedules.tz = excluded.tz
                        THEN cairn_schedules.next_fire_at ELSE excluded.next_fire_at END,
    cron = excluded.cron, every = excluded.every, tz = excluded.tz, updated_at = excluded.updated_at

-- name: list_schedules
SELECT s.id, s.workflow, s.queue, s.cron, s.every, s.tz, s.input, s.overlap, s.catchup, s.catchup_window,
       s.source, s.paused, s.next_fire_at, s.last_fire_at, s.last_run_id, s.buffered_at, r.status
FROM cairn_schedules s LEFT JOIN cairn_runs r ON r.id = s.last_run_id AND r.pruned_at IS NULL
ORDER BY s.id

-- name: list_schedules_by_id
SELECT id, workflow, queue, cron, every, tz, input, overlap, catchup, catchup_window
FROM cairn_schedules WHERE id = :id

-- name: due_schedules
-- Schedules with a tick due (or a buffered one) that this worker fires: its workflows, and for one
-- declared in code, only while this worker still declares it. Taken one worker at a time.
SELECT id, workflow, queue, cron, every, tz, input, overlap, catchup, catchup_window, next_fire_at,
       last_run_id, buffered_at
FROM cairn_schedules
WHERE paused = 0 AND (next_fire_at <= cairn_now() OR buffered_at IS NOT NULL)
  AND workflow = ANY(:workflows) AND (source <> 'code' OR id = ANY(:declared))
ORDER BY next_fire_at
FOR UPDATE SKIP LOCKED

-- name: workers_up_at
-- The workers that were up at a moment: registered before it (by the database's clock), and
-- heartbeating since (see `schedule_tx._late_not_missed`).
SELECT serves FROM cairn_workers WHERE started_at <= :at AND heartbeat_at >= :at

-- name: next_schedule_fire
SELECT min(next_fire_at) FROM cairn_schedules
WHERE paused = 0 AND workflow = ANY(:workflows) AND (source <> 'code' OR id = ANY(:declared))

-- name: schedule_fired
UPDATE cairn_schedules
SET next_fire_at = :next_fire_at, last_fire_at = COALESCE(:last_fire_at, last_fire_at),
    last_run_id = COALESCE(:last_run_id, last_run_id), buffered_at = :buffered_at, updated_at = :now
WHERE id = :id

-- name: pause_schedule
-- Only a change: resuming a schedule that was not paused moved its next tick past now, and the
-- ticks it had to catch up were lost.
UPDATE cairn_schedules SET paused = :paused, updated_at = :now,
    next_fire_at = CASE WHEN :paused = 0 THEN :next_fire_at ELSE next_fire_at END
WHERE id = :id AND paused <> :paused

-- name: delete_schedule
DELETE FROM cairn_schedules WHERE id = :id

-- name: schedule_input
SELECT workflow, queue, input FROM cairn_schedules WHERE id = :id


-- Queues with flow control (cairn.queues; the claim of a limited queue is store/queue_tx.py). The
-- queries of one queue repeat the predicates of cairn_runs_queued / cairn_steps_queued literally,
-- so that both planners may use those partial indexes. A run is in flight in its queue from the
-- claim that starts it (a pending run leased, its lease live) until it ends, sleeping and waiting
-- included; an attempt while it runs under a live lease. A dead worker's pending claims and
-- attempts stop counting when their leases run out.

-- name: get_queue
SELECT name, concurrency, per_worker, per_key, rate_n, rate_period, priority, rate_next_at, rate_starts,
       declared_by, updated_at
FROM cairn_queues WHERE name = :name

-- name: list_queues
SELECT name, concurrency, per_worker, per_key, rate_n, rate_period, priority, rate_next_at, rate_starts,
       declared_by, updated_at
FROM cairn_queues ORDER BY name

-- name: upsert_queue
-- A rate that changes moves the next start to the last start plus the new spacing: kept, a deploy from
-- one start an hour to ten a second still waited out the hour.
INSERT INTO cairn_queues (name, concurrency, per_worker, per_key, rate_n, rate_period, priority, limited,
                          declared_by, updated_at)
VALUES (:name, :concurrency, :per_worker, :per_key, :rate_n, :rate_period, :priority, :limited, :declared_by,
        cairn_now())
ON CONFLICT (name) DO UPDATE SET
    concurrency = excluded.concurrency, per_worker = excluded.per_worker, per_key = excluded.per_key,
    rate_n = excluded.rate_n, rate_period = excluded.rate_period, priority = excluded.priority,
    limited = excluded.limited, declared_by = excluded.declared_by, updated_at = excluded.updated_at,
    rate_next_at = CASE
        WHEN cairn_queues.rate_n = excluded.rate_n AND cairn_queues.rate_period = excluded.rate_period
            THEN cairn_queues.rate_next_at
        WHEN cairn_queues.rate_n IS NULL OR excluded.rate_n IS NULL THEN NULL
        ELSE cairn_queues.rate_next_at - cairn_queues.rate_period / cairn_queues.rate_n
             + excluded.rate_period / excluded.rate_n
    END

-- name: limited_queues_to_claim
-- The limited queues this worker serves (its claim of each goes through the queue's row).
SELECT name FROM cairn_queues
WHERE limited = 1 AND (:any_queue = 1 OR name = ANY(:queues))
ORDER BY name

-- name: lock_queue
-- The queue's row, locked by this claim: claims of this queue take turns (one busy elsewhere is
-- skipped this round), claims of other queues never wait on it.
SELECT concurrency, per_worker, per_key, rate_n, rate_period, rate_next_at, rate_starts
FROM cairn_queues WHERE name = :queue AND limited = 1
FOR UPDATE SKIP LOCKED

-- name: queue_runs_in_flight
-- The queue's runs in flight, per key: how many, and how many are leased to this worker. Those that
-- began, of each status, from cairn_runs_queued, and those the queue's claim leased that have not
-- begun yet (pending, marked by the claim, the lease live) from cairn_runs_queue_claimed: the runs
-- waiting to start, however many, are not read (a test of their leases read every one of them).
-- Each status is an equality, so that both planners walk the index by it, never by the queue alone.
SELECT queue_key, count(*), sum(CASE WHEN lease_owner = :worker AND lease_until >= cairn_tx_now() THEN 1 ELSE 0 END)
FROM (SELECT queue_key, lease_owner, lease_until FROM cairn_runs
      WHERE queue = :queue AND queue <> 'default' AND status = 'running'
        AND status IN ('pending', 'running', 'waiting', 'paused')
      UNION ALL
      SELECT queue_key, lease_owner, lease_until FROM cairn_runs
      WHERE queue = :queue AND queue <> 'default' AND status = 'waiting'
        AND status IN ('pending', 'running', 'waiting', 'paused')
      UNION ALL
      SELECT queue_key, lease_owner, lease_until FROM cairn_runs
      WHERE queue = :queue AND queue <> 'default' AND status = 'paused' AND activations > 0
        AND status IN ('pending', 'running', 'waiting', 'paused')
      UNION ALL
      SELECT queue_key, lease_owner, lease_until FROM cairn_runs
      WHERE queue = :queue AND queue <> 'default' AND status = 'pending' AND queue_claimed_at IS NOT NULL
        AND lease_until >= cairn_tx_now()) flying
GROUP BY queue_key

-- name: queue_is_limited
-- Whether a run of this queue starts only through the queue's claim (see control._going_on).
SELECT 1 FROM cairn_queues WHERE name = :name AND limited = 1

-- name: queue_candidates_plan
-- How a claim of a limited queue wants its candidates planned (see postgres.sql); nothing to say on
-- SQLite. queue_candidates_plan_end undoes it once they are read.
SELECT 1

-- name: queue_candidates_plan_end
SELECT 1

-- name: queue_candidates
-- The queue's pending runs this worker could start, in claim order (lower client priority first:
-- the column holds its negation; then first in, first out), more than it may take: the limits
-- per key are applied to them in order by the claim. When :scan of them were there and they leave
-- the claim room (keys at their limit), queue_candidates_by_key (each backend's own) reads the
-- first runs of every key below its limit instead, however many runs wait ahead of them.
SELECT id, queue_key FROM cairn_runs
WHERE queue = :queue AND queue <> 'default' AND status IN ('pending', 'running', 'waiting', 'paused')
  AND status = 'pending' AND ready_at <= cairn_tx_now()
  AND (lease_until IS NULL OR lease_until < cairn_tx_now())
  AND (workflow || '') = ANY(:workflows)
ORDER BY priority DESC, ready_at
LIMIT :scan
FOR UPDATE SKIP LOCKED

-- name: lease_queue_runs
-- A start: the run is in flight from now, under its lease (marked for queue_runs_in_flight).
UPDATE cairn_runs
SET lease_owner = :worker, lease_until = cairn_tx_now() + :lease, lease_token = lease_token + 1,
    queue_claimed_at = cairn_tx_now()
WHERE id = ANY(:ids)
RETURNING {run_columns}

-- name: queue_attempts_in_flight
SELECT count(*), sum(CASE WHEN lease_owner = :worker THEN 1 ELSE 0 END)
FROM cairn_steps
WHERE queue = :queue AND kind = 'action' AND status IN ('scheduled', 'running') AND queue <> 'default'
  AND status = 'running' AND due_at >= cairn_tx_now()

-- name: queue_rate
UPDATE cairn_queues SET rate_next_at = :rate_next_at, rate_starts = rate_starts + :started WHERE name = :queue

-- name: queue_run_counts
-- Per queue of a limit: runs waiting to start (pending, unclaimed or their claim lapsed) and in flight
-- (as queue_runs_in_flight counts them: a run paused before its first activation holds no place).
SELECT queue,
       sum(CASE WHEN status = 'pending' AND (lease_until IS NULL OR lease_until < cairn_now()) THEN 1 ELSE 0 END),
       sum(CASE WHEN status = 'pending' AND (lease_until IS NULL OR lease_until < cairn_now()) THEN 0
                WHEN status = 'paused' AND activations = 0 THEN 0 ELSE 1 END)
FROM cairn_runs
WHERE queue IN (SELECT name FROM cairn_queues) AND queue <> 'default'
  AND status IN ('pending', 'running', 'waiting', 'paused')
GROUP BY queue

-- name: queue_attempt_counts
SELECT queue,
       sum(CASE WHEN status = 'running' AND due_at >= cairn_now() THEN 0 ELSE 1 END),
       sum(CASE WHEN status = 'running' AND due_at >= cairn_now() THEN 1 ELSE 0 END)
FROM cairn_steps
WHERE queue IN (SELECT name FROM cairn_queues) AND kind = 'action' AND status IN ('scheduled', 'running')
  AND queue <> 'default'
GROUP BY queue

-- name: insert_queued_run
-- A run started with a key, a priority or a dedup_key (never born claimed: the queue's claim starts
-- it). No row when its id, or an unfinished run's (queue, dedup_key), is taken.
INSERT INTO cairn_runs (id, workflow, status, input, queue, parent_id, parent_seq, created_at, updated_at,
                        code_version, ready_at, lease_token, priority, queue_key, dedup_key)
VALUES (:id, :workflow, 'pending', :input, :queue, :parent_id, :parent_seq, cairn_now(), cairn_now(),
        :code_version, cairn_now(), 0, :priority, :queue_key, :dedup_key)
ON CONFLICT DO NOTHING
RETURNING id

-- name: run_by_dedup_key
SELECT {run_columns} FROM cairn_runs
WHERE queue = :queue AND dedup_key = :dedup_key AND status IN ('pending', 'running', 'waiting', 'paused')

-- name: dedup_holder
-- The unfinished run, other than this one, holding this run's dedup_key in its queue: retried,
-- this run would hold it too.
SELECT other.id, other.dedup_key, other.queue FROM cairn_runs AS this
JOIN cairn_runs AS other ON other.queue = this.queue AND other.dedup_key = this.dedup_key
WHERE this.id = :id AND other.id <> this.id AND other.status IN ('pending', 'running', 'waiting', 'paused')
