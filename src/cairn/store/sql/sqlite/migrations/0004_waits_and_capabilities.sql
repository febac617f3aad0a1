-- Open signal waits, found by their run at every claim and commit that matches signals to waits.
CREATE INDEX cairn_steps_signal_waits ON cairn_steps (run_id, name, seq) WHERE kind = 'signal' AND status = 'scheduled';
-- What each worker serves (JSON: {"workflows": [...], "actions": [...]}), so that work no live
-- worker can do is reported instead of waiting silently.
ALTER TABLE cairn_workers ADD COLUMN serves text;
