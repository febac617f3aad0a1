-- PostgreSQL's own statements, where the backends truly differ.

-- name: claim_plan
-- A claim walks cairn_runs_claim in order and stops after its limit. On a table whose statistics
-- are behind (runs were just started by the thousand), the planner guesses a dozen due runs and
-- picks a bitmap scan and a sort of all of them instead (28 ms at 20,000 pending, against 1 ms):
-- within this transaction only, no bitmap scans.
SET LOCAL enable_bitmapscan = off
