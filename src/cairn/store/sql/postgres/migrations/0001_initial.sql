-- Cairn schema v1 (PostgreSQL).
-- runs: one row per workflow run. ready_at says when it next needs an activation (NULL: nothing to
--   do); lease_owner/lease_until/lease_token fence the worker holding it (token bumps per claim).
-- steps: the journal. (run_id, seq) is the step number in schedule order. due_at is when an action
--   attempt is due (scheduled) or when its lease runs out (running), and when a timer fires.
--   delivered_in is the activation that handed the result to the workflow (0: resolved at once).
CREATE FUNCTION cairn_now() RETURNS double precision LANGUAGE sql VOLATILE AS
$$ SELECT COALESCE(NULLIF(current_setting('cairn.fake_now', true), '')::double precision,
                   extract(epoch from clock_timestamp())::double precision) $$;

CREATE TABLE cairn_runs (
    id            text PRIMARY KEY,
    workflow      text NOT NULL,
    status        text NOT NULL,
    input         text NOT NULL,
    result        text,
    error         text,
    queue         text NOT NULL DEFAULT 'default',
    parent_id     text,
    parent_seq    integer,
    created_at    double precision NOT NULL,
    updated_at    double precision NOT NULL,
    started_at    double precision,
    completed_at  double precision,
    activations   integer NOT NULL DEFAULT 0,
    properties    text,
    code_version  text,
    ready_at      double precision,
    lease_owner   text,
    lease_until   double precision,
    lease_token   bigint NOT NULL DEFAULT 0,
    priority      integer NOT NULL DEFAULT 0
);
CREATE INDEX cairn_runs_ready ON cairn_runs (ready_at) WHERE ready_at IS NOT NULL;
CREATE INDEX cairn_runs_status ON cairn_runs (status, created_at);
CREATE INDEX cairn_runs_workflow ON cairn_runs (workflow, created_at);
CREATE INDEX cairn_runs_parent ON cairn_runs (parent_id) WHERE parent_id IS NOT NULL;

CREATE TABLE cairn_steps (
    run_id        text NOT NULL REFERENCES cairn_runs (id) ON DELETE CASCADE,
    seq           integer NOT NULL,
    kind          text NOT NULL,
    name          text NOT NULL,
    args          text,
    status        text NOT NULL,
    result        text,
    error         text,
    attempt       integer NOT NULL DEFAULT 0,
    delivered_in  integer,
    delivered_at  double precision,
    due_at        double precision,
    queue         text,
    options       text,
    memory_writes text,
    logs          text,
    lease_owner   text,
    created_at    double precision NOT NULL,
    started_at    double precision,
    completed_at  double precision,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX cairn_steps_due_actions ON cairn_steps (due_at)
    WHERE kind = 'action' AND status IN ('scheduled', 'running');
CREATE INDEX cairn_steps_undelivered ON cairn_steps (run_id)
    WHERE delivered_in IS NULL AND status IN ('completed', 'failed', 'cancelled');

CREATE TABLE cairn_memory (
    run_id     text NOT NULL REFERENCES cairn_runs (id) ON DELETE CASCADE,
    key        text NOT NULL,
    value      text NOT NULL,
    step       integer,
    updated_at double precision NOT NULL,
    PRIMARY KEY (run_id, key)
);

CREATE TABLE cairn_signals (
    id          bigserial PRIMARY KEY,
    run_id      text NOT NULL REFERENCES cairn_runs (id) ON DELETE CASCADE,
    name        text NOT NULL,
    payload     text,
    created_at  double precision NOT NULL,
    consumed_by integer
);
CREATE INDEX cairn_signals_open ON cairn_signals (run_id) WHERE consumed_by IS NULL;

CREATE TABLE cairn_properties (
    run_id     text NOT NULL REFERENCES cairn_runs (id) ON DELETE CASCADE,
    activation integer NOT NULL,
    after_step integer NOT NULL,
    properties text NOT NULL,
    PRIMARY KEY (run_id, activation)
);

CREATE TABLE cairn_workers (
    id           text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    queues       text NOT NULL,
    started_at   double precision NOT NULL,
    heartbeat_at double precision NOT NULL,
    in_flight    integer NOT NULL DEFAULT 0
);

CREATE TABLE cairn_workflows (
    name         text PRIMARY KEY,
    description  text NOT NULL,
    input_schema text NOT NULL,
    queue        text NOT NULL,
    updated_at   double precision NOT NULL
);
