-- cairn_apply: an activation commit's one-row writes (Tx.write_row), all of a transaction's at once,
-- in one statement. Before, each kind went as a statement of its own (six of them, then the
-- events and the notifications): the client's cost of a statement in pipeline mode, and the
-- server's, were most of a small commit's. Each argument is one kind's rows as a JSON array (NULL
-- when the transaction has none), in the order they are applied; a *_expect argument is the
-- message a failed check raises with (cairn_expect), when every row of that kind must change one
-- (the two upserts always write one row each: they take no check).
-- The planner's guess for a JSON array is 100 rows, which on a small table picks a hash join over a
-- whole-table scan; the arrays here hold one to a few dozen rows, each found by its key.
CREATE FUNCTION cairn_apply(
    insert_run json, insert_run_expect text,
    fence_run json, fence_run_expect text,
    complete_step json, complete_step_expect text,
    upsert_memory json,
    deliver_step json, deliver_step_expect text,
    insert_step json, insert_step_expect text,
    insert_properties json,
    finish_activation json, finish_activation_expect text, finish_notify text,
    events json,
    notifications text[]
) RETURNS void LANGUAGE plpgsql
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    n bigint;
    due boolean;
BEGIN
    IF insert_run IS NOT NULL THEN
        WITH written AS (
            INSERT INTO cairn_runs (id, workflow, status, input, queue, parent_id, parent_seq,
                                    created_at, updated_at, code_version, ready_at,
                                    lease_owner, lease_until, lease_token)
            SELECT x.id, x.workflow, 'pending', x.input, x.queue, x.parent_id, x.parent_seq, t.now, t.now,
                   x.code_version, t.now, x.lease_owner,
                   CASE WHEN x.lease_owner IS NULL THEN NULL ELSE t.now + x.lease END,
                   CASE WHEN x.lease_owner IS NULL THEN 0 ELSE 1 END
            FROM json_to_recordset(insert_run)
                 AS x(id text, workflow text, input text, queue text, parent_id text, parent_seq integer,
                      now double precision, code_version text, lease_owner text, lease double precision)
                 CROSS JOIN LATERAL (SELECT COALESCE(x.now, cairn_now()) AS now) t
            ON CONFLICT (id) DO NOTHING
            RETURNING 1)
        SELECT count(*) INTO n FROM written;
        PERFORM cairn_expect(insert_run_expect IS NULL OR n = json_array_length(insert_run), insert_run_expect);
    END IF;

    IF fence_run IS NOT NULL THEN
        -- Locks the rows as an UPDATE would, without writing a row version the commit's
        -- finish_activation writes again anyway.
        SELECT count(*) INTO n FROM (
            SELECT 1 FROM cairn_runs r
            JOIN json_to_recordset(fence_run) AS x(id text, token bigint)
              ON r.id = x.id AND r.lease_token = x.token
            FOR NO KEY UPDATE OF r) locked;
        PERFORM cairn_expect(fence_run_expect IS NULL OR n = json_array_length(fence_run), fence_run_expect);
    END IF;

    IF complete_step IS NOT NULL THEN
        WITH written AS (
            UPDATE cairn_steps s
            SET status = x.status, result = x.result, error = x.error, memory_writes = x.memory_writes,
                logs = COALESCE(x.logs, s.logs), completed_at = x.completed_at, due_at = x.due_at,
                lease_owner = NULL,
                delivered_in = COALESCE(x.delivered_in, s.delivered_in),
                delivered_at = COALESCE(x.delivered_at, s.delivered_at)
            FROM json_to_recordset(complete_step)
                 AS x(run_id text, seq integer, attempt integer, status text, result text, error text,
                      memory_writes text, logs text, completed_at double precision, due_at double precision,
                      delivered_in integer, delivered_at double precision)
            WHERE s.run_id = x.run_id AND s.seq = x.seq AND s.attempt = x.attempt AND s.status = 'running'
            RETURNING 1)
        SELECT count(*) INTO n FROM written;
        PERFORM cairn_expect(
            complete_step_expect IS NULL OR n = json_array_length(complete_step), complete_step_expect);
    END IF;

    IF upsert_memory IS NOT NULL THEN
        -- A key written twice in one commit keeps its last value (as writes one by one would).
        INSERT INTO cairn_memory (run_id, key, value, step, updated_at)
        SELECT DISTINCT ON (run_id, key) run_id, key, value, step, now
        FROM ROWS FROM (json_to_recordset(upsert_memory)
                        AS (run_id text, key text, value text, step integer, now double precision))
             WITH ORDINALITY AS m(run_id, key, value, step, now, ord)
        ORDER BY run_id, key, ord DESC
        ON CONFLICT (run_id, key) DO UPDATE
        SET value = excluded.value, step = excluded.step, updated_at = excluded.updated_at;
    END IF;

    IF deliver_step IS NOT NULL THEN
        UPDATE cairn_steps s SET delivered_in = x.activation, delivered_at = x.delivered_at
        FROM json_to_recordset(deliver_step)
             AS x(run_id text, seq integer, activation integer, delivered_at double precision)
        WHERE s.run_id = x.run_id AND s.seq = x.seq;
        GET DIAGNOSTICS n = ROW_COUNT;
        PERFORM cairn_expect(
            deliver_step_expect IS NULL OR n = json_array_length(deliver_step), deliver_step_expect);
    END IF;

    IF insert_step IS NOT NULL THEN
        INSERT INTO cairn_steps (run_id, seq, kind, name, args, status, result, delivered_in, due_at,
                                 queue, options, created_at, completed_at, created_in, attempt, lease_owner,
                                 started_at)
        SELECT run_id, seq, kind, name, args, status, result, delivered_in, due_at,
               queue, options, now, completed_at, activation, attempt, lease_owner, started_at
        FROM json_to_recordset(insert_step)
             AS x(run_id text, seq integer, kind text, name text, args text, status text, result text,
                  delivered_in integer, due_at double precision, queue text, options text,
                  now double precision, completed_at double precision, activation integer, attempt integer,
                  lease_owner text, started_at double precision);
        GET DIAGNOSTICS n = ROW_COUNT;
        PERFORM cairn_expect(insert_step_expect IS NULL OR n = json_array_length(insert_step), insert_step_expect);
    END IF;

    IF insert_properties IS NOT NULL THEN
        INSERT INTO cairn_properties (run_id, activation, after_step, properties)
        SELECT run_id, activation, after_step, properties
        FROM json_to_recordset(insert_properties)
             AS x(run_id text, activation integer, after_step integer, properties text)
        ON CONFLICT (run_id, activation) DO UPDATE SET properties = excluded.properties;
    END IF;

    IF finish_activation IS NOT NULL THEN
        -- A result recorded meanwhile (apart) leaves the run due: finish_notify wakes claim loops.
        WITH written AS (
            UPDATE cairn_runs r
            SET status = x.status, result = x.result, error = x.error, activations = x.activations,
                pause_reason = x.pause_reason,
                properties = COALESCE(x.properties, r.properties), updated_at = x.now,
                started_at = COALESCE(r.started_at, x.now), completed_at = x.completed_at,
                lease_owner = x.lease_owner, lease_until = x.lease_until, lease_token = r.lease_token + 1,
                ready_at = CASE
                    WHEN x.parked = 1 THEN NULL
                    WHEN EXISTS (SELECT 1 FROM cairn_steps s WHERE s.run_id = x.id AND s.delivered_in IS NULL
                                 AND s.status IN ('completed', 'failed', 'cancelled')) THEN x.now
                    ELSE x.wake_at END
            FROM json_to_recordset(finish_activation)
                 AS x(id text, token bigint, status text, result text, error text, activations integer,
                      properties text, now double precision, completed_at double precision, parked integer,
                      wake_at double precision, pause_reason text, lease_owner text, lease_until double precision)
            WHERE r.id = x.id AND r.lease_token = x.token
            RETURNING r.ready_at <= x.now AS due)
        SELECT count(*), coalesce(bool_or(written.due), false) INTO n, due FROM written;
        PERFORM cairn_expect(
            finish_activation_expect IS NULL OR n = json_array_length(finish_activation), finish_activation_expect);
        IF due AND finish_notify IS NOT NULL THEN
            PERFORM pg_notify('cairn', finish_notify);
        END IF;
    END IF;

    IF events IS NOT NULL THEN
        -- In the order they were added. A detail is a nested object, kept as the text it was sent
        -- as (json, not jsonb).
        INSERT INTO cairn_events (run_id, at, kind, step, detail)
        SELECT run_id, now, kind, step, CAST(detail AS text)
        FROM ROWS FROM (json_to_recordset(events)
                        AS (run_id text, now double precision, kind text, step integer, detail json))
             WITH ORDINALITY AS e(run_id, now, kind, step, detail, ord)
        ORDER BY ord;
    END IF;

    IF notifications IS NOT NULL THEN
        PERFORM pg_notify('cairn', p) FROM unnest(notifications) AS p;
    END IF;
END
$$;
