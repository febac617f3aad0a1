-- Schedules: a workflow started on a cron expression or at an interval, fired by the workers.
-- source: "code" (declared with cairn.Schedule, upserted by workers that import it; fired only by
-- workers that still declare it) or "api" (client.create_schedule). next_fire_at: the next tick;
-- buffered_at: a tick held back by overlap="buffer_one" until the last run ends.
CREATE TABLE cairn_schedules (
    id             text PRIMARY KEY,
    workflow       text NOT NULL,
    queue          text NOT NULL,
    cron           text,
    every          double precision,
    tz             text NOT NULL,
    input          text NOT NULL,
    overlap        text NOT NULL,
    catchup        text NOT NULL,
    catchup_window double precision,
    source         text NOT NULL,
    paused         integer NOT NULL DEFAULT 0,
    next_fire_at   double precision,
    last_fire_at   double precision,
    last_run_id    text,
    buffered_at    double precision,
    created_at     double precision NOT NULL,
    updated_at     double precision NOT NULL
);
CREATE INDEX cairn_schedules_due ON cairn_schedules (next_fire_at);
