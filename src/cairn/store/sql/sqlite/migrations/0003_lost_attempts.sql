-- Attempts lost with their worker (its lease expired while the step ran) are counted apart from
-- attempts that failed, so a retry policy judges the action, not the workers' deaths.
ALTER TABLE cairn_steps ADD COLUMN lost integer NOT NULL DEFAULT 0;
