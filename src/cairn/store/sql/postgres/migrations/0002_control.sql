-- Control plane: the run's event list, and what lets a run be rewound to an earlier activation
-- (retry from the failed step, fork from step N): the activation that created or cancelled a step.
CREATE TABLE cairn_events (
    id      bigserial PRIMARY KEY,
    run_id  text NOT NULL REFERENCES cairn_runs (id) ON DELETE CASCADE,
    at      double precision NOT NULL,
    kind    text NOT NULL,
    step    integer,
    detail  text
);
CREATE INDEX cairn_events_run ON cairn_events (run_id, id);
ALTER TABLE cairn_steps ADD COLUMN created_in integer;
ALTER TABLE cairn_steps ADD COLUMN cancelled_in integer;
ALTER TABLE cairn_runs ADD COLUMN pause_reason text;
