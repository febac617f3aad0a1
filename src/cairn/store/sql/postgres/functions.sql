-- cairn_apply: an activation commit's one-row writes (Tx.write_row), all of a transaction's at once,
-- with its events and notifications: one statement, which PostgreSQL runs as a transaction of its
-- own on an autocommit connection. Re-created at every open (CREATE OR REPLACE), never migrated:
-- `cairn.store.sql.apply_function` fills in the row writes from their own text in queries.sql
-- (the same text SQLite runs row by row), and names the function by a hash of the result.
-- Each write gets its rows as a JSON array (NULL when the transaction has none), applies them in
-- one statement and, when every row must change one, checks the count (cairn_expect, which fails
-- the statement: nothing of it is written).
-- The planner's guess for a JSON array is 100 rows, which on a small table picks a hash join over
-- a whole-table scan; the arrays here hold one to a few dozen rows, each found by its key. With
-- hash and merge joins off it still chose, on a steps table of 24,000 rows (not 48,000), a nested
-- loop over the whole table read once (against 100 key lookups): every commit that completed a
-- step read every step (1,300 rows a workflow in `cairn bench`'s naive run), so scans are off too.
-- And each write's rows are LIMITed to the array's length (see `_all_rows`): a plan made while
-- the tables were empty, kept by the connection as they grew, read the whole primary key instead.
-- Plans are generic, made once per connection: with a LIMIT that depends on the values, the plan
-- cache found a plan made for each call's values cheaper and planned every statement at every
-- call (0.48 against 0.18 ms a commit).
CREATE OR REPLACE FUNCTION {name}({parameters}) RETURNS void LANGUAGE plpgsql
SET enable_hashjoin = off SET enable_mergejoin = off SET enable_seqscan = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    n bigint;
    is_due boolean;
BEGIN
{row_writes}

    IF events IS NOT NULL THEN
        -- In the order they were added. A detail is a nested object, kept as the text it was sent
        -- as (json, not jsonb), or that text as a JSON string when it holds a NUL (see
        -- PostgresDatabase._apply).
        INSERT INTO cairn_events (run_id, at, kind, step, detail)
        SELECT run_id, now, kind, step,
               CASE WHEN json_typeof(detail) = 'string' THEN detail #>> '{}' ELSE CAST(detail AS text) END
        FROM ROWS FROM (json_to_recordset(events)
                        AS (run_id text, now double precision, kind text, step integer, detail json))
             WITH ORDINALITY AS e(run_id, now, kind, step, detail, ord)
        ORDER BY ord;
    END IF;

    IF notifications IS NOT NULL THEN
        -- Each on the channel beside it (cairn.store.sql.channel: a run's news apart from the rest).
        PERFORM pg_notify(c, p) FROM unnest(notify_channels, notifications) AS n(c, p);
    END IF;
END
$$;
