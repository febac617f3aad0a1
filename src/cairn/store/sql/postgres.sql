-- PostgreSQL's own form of the one statement whose algorithm differs by backend (see sqlite.sql).

-- name: claim_runs
-- Runs due, oldest first (by priority), up to :limit, of which at most :new_limit new ones (a
-- worker takes new runs only while it has action slots free for their first actions: see
-- Worker._claim). One lateral walk per kind, then the oldest of both; rows a walk locked but the
-- limit leaves are free again when this transaction ends.
UPDATE cairn_runs r
SET lease_owner = :worker, lease_until = cairn_tx_now() + :lease, lease_token = r.lease_token + 1
FROM (SELECT c.id
      FROM (VALUES (false, CAST(:limit AS integer)), (true, CAST(:new_limit AS integer))) AS k(new, n)
      CROSS JOIN LATERAL (
          SELECT id, priority, ready_at FROM cairn_runs
          WHERE ready_at <= cairn_tx_now() AND status IN ('pending', 'running', 'waiting')
            AND (status = 'pending') = k.new
            AND (lease_until IS NULL OR lease_until < cairn_tx_now()
                 OR (lease_owner = :worker AND NOT id = ANY(:busy)))
            AND workflow = ANY(:workflows) AND (:any_queue = 1 OR queue = ANY(:queues))
          ORDER BY priority DESC, ready_at
          LIMIT k.n
          FOR UPDATE SKIP LOCKED) c
      ORDER BY c.priority DESC, c.ready_at
      LIMIT :limit) c
WHERE r.id = c.id
RETURNING {run_columns:r}
