-- The HTTP API's and dashboard's run lists page by keyset on (created_at, id), newest or oldest
-- first. Neither column ever changes once a run is written, so this index costs one entry per run
-- inserted and nothing on the updates of the hot path.
CREATE INDEX cairn_runs_created ON cairn_runs (created_at, id);
