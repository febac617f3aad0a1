"""A prune of finished runs that received signals (docs/benchmarks.md, "Runs with signals").

    python -m benchmarks.prune_signals --db URL [--runs 2000] [--signals 100] [--analyze]

Into an emptied database, `--runs` finished runs 40 days old are written in bulk, each with
`--signals` consumed signals (setup, not measured); then `client.prune` deletes them all, timed.
Deleting a run finds its signals by the run's key: its foreign key's ON DELETE CASCADE does, and so
does the prune's own delete. Before migrations 0023 (PostgreSQL) and 0018 (SQLite) only the signals
not yet consumed were indexed by run, and every run deleted read every signal ever sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import cairn
from benchmarks.tables import empty_database
from cairn.bench.scenarios import bulk_runs

DAY = 86_400.0


def _sql(url: str, sql: str) -> None:
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql)
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(sql.encode())


async def measure(url: str, runs: int, signals: int, analyze: bool) -> dict[str, float]:
    await empty_database(url)
    old = time.time() - 40 * DAY
    bulk_runs(url, "p", runs, "completed", old, workflow="benchmarks.prune_signals.made_up")
    _sql(url, f"UPDATE cairn_runs SET completed_at = {old} WHERE id LIKE 'p%'")
    series = (
        f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {signals})"
        if url.startswith("sqlite")
        else f"WITH g(n) AS (SELECT generate_series(1, {signals}))"
    )
    _sql(
        url,
        f"INSERT INTO cairn_signals (run_id, name, payload, created_at, consumed_by) {series} "
        f"SELECT r.id, 'go', '1', {old}, g.n FROM cairn_runs r, g WHERE r.id LIKE 'p%'",
    )
    if analyze:  # as autovacuum would have, long before runs are 40 days old (it is off on this machine)
        _sql(url, "ANALYZE")
    client = cairn.Client(url)
    try:
        t0 = time.perf_counter()
        removed = await client.store.prune(time.time() - 30 * DAY, limit=runs)
        took = time.perf_counter() - t0
    finally:
        await client.close()
    if removed != runs:
        raise RuntimeError(f"the prune removed {removed} runs, not {runs}")
    return {"runs": runs, "signals": runs * signals, "analyzed": analyze, "prune_s": round(took, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--signals", type=int, default=100, help="consumed signals of each run")
    parser.add_argument("--analyze", action="store_true", help="gather the tables' statistics before the prune")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.db, args.runs, args.signals, args.analyze))))


if __name__ == "__main__":
    main()
