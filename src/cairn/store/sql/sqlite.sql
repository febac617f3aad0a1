-- SQLite's own statements, where the backends truly differ.

-- name: queue_candidates_by_key
-- As PostgreSQL's (see postgres.sql), without LATERAL: each key's first runs are the runs whose id
-- is in its walk of cairn_runs_queued_keys, stopped after :heads. The keys come first (CROSS JOIN
-- keeps that order), so that each walk is run once per key.
WITH RECURSIVE keys(k) AS (
    SELECT min(queue_key) FROM cairn_runs
    WHERE queue = :queue AND queue <> 'default' AND status = 'pending' AND queue_key IS NOT NULL
    UNION ALL
    SELECT (SELECT min(queue_key) FROM cairn_runs
            WHERE queue = :queue AND queue <> 'default' AND status = 'pending' AND queue_key > keys.k)
    FROM keys WHERE keys.k IS NOT NULL
),
firsts AS (
    SELECT r.id, r.priority, r.ready_at FROM keys CROSS JOIN cairn_runs r
    WHERE keys.k IS NOT NULL AND NOT keys.k = ANY(:full)
      AND r.id IN (SELECT id FROM cairn_runs
                   WHERE queue = :queue AND queue <> 'default' AND status = 'pending' AND queue_key = keys.k
                     AND ready_at <= cairn_tx_now() AND (lease_until IS NULL OR lease_until < cairn_tx_now())
                     AND (workflow || '') = ANY(:workflows)
                   ORDER BY queue_key, priority DESC, ready_at
                   LIMIT :heads)
    UNION ALL
    SELECT * FROM (SELECT id, priority, ready_at FROM cairn_runs
                   WHERE queue = :queue AND queue <> 'default' AND status = 'pending' AND queue_key IS NULL
                     AND ready_at <= cairn_tx_now() AND (lease_until IS NULL OR lease_until < cairn_tx_now())
                     AND (workflow || '') = ANY(:workflows)
                   ORDER BY queue_key, priority DESC, ready_at
                   LIMIT :scan)
)
SELECT r.id, r.queue_key FROM (SELECT id FROM firsts ORDER BY priority DESC, ready_at LIMIT :scan) first
CROSS JOIN cairn_runs r
WHERE r.id = first.id
ORDER BY r.priority DESC, r.ready_at
