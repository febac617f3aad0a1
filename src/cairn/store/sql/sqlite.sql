-- SQLite's own form of the one statement whose algorithm differs by backend: PostgreSQL claims each
-- kind of run with a lateral walk under SKIP LOCKED; SQLite, whose writers BEGIN IMMEDIATE
-- serialises, keeps the first N of each kind with a sort. Everything else is in queries.sql.

-- name: claim_runs
-- Runs due, oldest first (by priority), up to :limit, of which at most :new_limit new ones (a
-- worker takes new runs only while it has action slots free for their first actions: see
-- Worker._claim). The oldest of each kind up to its limit (a sort that keeps only that many),
-- then the oldest of both.
UPDATE cairn_runs
SET lease_owner = :worker, lease_until = cairn_tx_now() + :lease, lease_token = lease_token + 1
WHERE id IN (WITH due AS NOT MATERIALIZED (
                 SELECT id, status = 'pending' AS new, priority, ready_at FROM cairn_runs
                 WHERE ready_at <= cairn_tx_now() AND status IN ('pending', 'running', 'waiting')
                   AND (lease_until IS NULL OR lease_until < cairn_tx_now()
                        OR (lease_owner = :worker AND id NOT IN (SELECT value FROM json_each(:busy))))
                   AND workflow IN (SELECT value FROM json_each(:workflows))
                   AND (:any_queue = 1 OR queue IN (SELECT value FROM json_each(:queues))))
             SELECT id FROM (SELECT * FROM (SELECT id, priority, ready_at FROM due WHERE NOT new
                                            ORDER BY priority DESC, ready_at LIMIT :limit)
                             UNION ALL
                             SELECT * FROM (SELECT id, priority, ready_at FROM due WHERE new
                                            ORDER BY priority DESC, ready_at LIMIT :new_limit))
             ORDER BY priority DESC, ready_at
             LIMIT :limit)
RETURNING {run_columns}
