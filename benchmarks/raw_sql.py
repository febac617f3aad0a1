"""Raw-database reference for ``cairn bench``: what PostgreSQL itself can do for one step.

Why: a durable-workflow engine's figures mean little on their own; the same run should say how
far they are from the floor set by the database and the client library. The least a durable
step can cost is one queue cycle of plain SQL, each statement its own committed transaction:

1. insert the task                                                     (commit 1)
2. claim one with ``UPDATE ... WHERE id = (SELECT id ... FOR UPDATE SKIP LOCKED LIMIT 1)
   RETURNING``                                                         (commit 2)
3. complete it, storing its result                                     (commit 3)

``python -m benchmarks.raw_sql --db URL [--tasks N] [--connections C]`` creates its own table
``raw_queue_tasks`` in the given database (dropped first if it exists; the database is not
otherwise touched), then runs C threads, each with its own psycopg 3 connection in autocommit
mode (one round trip per statement, the statement is the transaction), looping insert, claim,
complete until N tasks (default 5,000) are done. A thread claims whatever task is next, not
necessarily its own, as competing workers would. The clock runs from the moment every
connection is open until the N-th completion. Connections default to 16.

Output, one JSON line on stdout: ``{"engine": "raw", "backend": "postgres", "scenario":
"queue_cycle", "workers": C, "metrics": {"tasks", "seconds", "tasks_per_s",
"commits_per_task": 3, "measured_commits_per_task", "round_trip_ms", "idle_round_trip_ms"}}``;
``measured_commits_per_task`` is read back from ``pg_stat_database`` (see ``benchmarks.pgstats``)
as a check of the 3: it is a little higher when claims come back empty near the end of the run.

It also times a bare ``SELECT 1`` round trip, back to back and after 0.3 s of idleness (the
pickup scenario's idle gap): ``round_trip_ms`` and ``idle_round_trip_ms``, p50 of 20. On a
virtual machine the second is far above the first (the idle processes must be woken), and it is
the floor under pickup latency, which crosses several such wake-ups.

psycopg 3 is used because it is the client library Cairn and DBOS (``postgresql+psycopg``) use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from benchmarks.pgstats import StatsReader

TABLE = "raw_queue_tasks"

SETUP = [
    f"DROP TABLE IF EXISTS {TABLE}",
    f"""CREATE TABLE {TABLE} (
        id bigserial PRIMARY KEY,
        status text NOT NULL DEFAULT 'queued',
        input integer NOT NULL,
        output integer,
        created_at timestamptz NOT NULL DEFAULT now(),
        claimed_at timestamptz,
        completed_at timestamptz
    )""",
    f"CREATE INDEX {TABLE}_queued ON {TABLE} (id) WHERE status = 'queued'",
]
INSERT = f"INSERT INTO {TABLE} (input) VALUES (%s)"
CLAIM = f"""UPDATE {TABLE} SET status = 'running', claimed_at = now()
WHERE id = (SELECT id FROM {TABLE} WHERE status = 'queued' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, input"""
COMPLETE = f"UPDATE {TABLE} SET status = 'done', output = %s, completed_at = now() WHERE id = %s"


class Counters:
    """Shared progress: tasks handed out for insertion, tasks completed."""

    def __init__(self, tasks: int) -> None:
        self.tasks = tasks
        self.lock = threading.Lock()
        self.reserved = 0
        self.completed = 0
        self.finished = threading.Event()
        self.finished_at = 0.0

    def reserve_insert(self) -> bool:
        with self.lock:
            if self.reserved >= self.tasks:
                return False
            self.reserved += 1
            return True

    def complete(self) -> None:
        with self.lock:
            self.completed += 1
            if self.completed >= self.tasks and not self.finished.is_set():
                self.finished_at = time.perf_counter()
                self.finished.set()


def worker(conn: psycopg.Connection[Any], counters: Counters, start: threading.Barrier) -> None:
    start.wait()
    while not counters.finished.is_set():
        inserted = counters.reserve_insert()
        if inserted:
            conn.execute(INSERT, (counters.reserved,))
        row = conn.execute(CLAIM).fetchone()
        if row is not None:
            task_id, value = row
            conn.execute(COMPLETE, (value + 1, task_id))
            counters.complete()
        elif not inserted:
            time.sleep(0.001)  # the remaining tasks are being run by other threads


def settled_commits(reader: StatsReader) -> int | None:
    """The database's commit count, or None if other sessions keep it from settling."""
    try:
        return reader.settled(timeout=10.0)[0]
    except RuntimeError as exc:
        print(f"[raw_sql] no commit count: {exc}", file=sys.stderr)
        return None


IDLE_GAP = 0.3
"""Seconds of idleness before each idle round trip: the gap the pickup scenario leaves."""


def round_trips(url: str, samples: int = 20) -> tuple[float, float]:
    """p50 ms of `SELECT 1`, back to back and after `IDLE_GAP` idle seconds."""
    hot: list[float] = []
    idle: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for gap, out in ((0.0, hot), (IDLE_GAP, idle)):
            for _ in range(samples):
                time.sleep(gap)  # idleness is what is measured here, not a synchronisation
                started = time.perf_counter()
                conn.execute("SELECT 1").fetchall()
                out.append((time.perf_counter() - started) * 1000)
    return statistics.median(hot), statistics.median(idle)


def run(url: str, tasks: int, connections: int) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in SETUP:
            conn.execute(statement)
    with StatsReader(url) as reader:
        before = settled_commits(reader)
        conns = [psycopg.connect(url, autocommit=True) for _ in range(connections)]
        counters = Counters(tasks)
        start = threading.Barrier(connections + 1)
        threads = [threading.Thread(target=worker, args=(c, counters, start), daemon=True) for c in conns]
        for t in threads:
            t.start()
        start.wait()
        t0 = time.perf_counter()
        for t in threads:
            t.join()
        seconds = counters.finished_at - t0
        for c in conns:
            c.close()
        after = settled_commits(reader) if before is not None else None
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*), count(*) FILTER (WHERE output = input + 1) FROM {TABLE}").fetchone()
    if row is None or row[0] != tasks or row[1] != tasks:
        raise RuntimeError(f"expected {tasks} completed tasks, found {row}")
    measured = None if before is None or after is None else round((after - before) / tasks, 3)
    hot, idle = round_trips(url)
    return {
        "round_trip_ms": round(hot, 3),
        "idle_round_trip_ms": round(idle, 3),
        "tasks": tasks,
        "seconds": round(seconds, 4),
        "tasks_per_s": round(tasks / seconds, 1),
        "commits_per_task": 3,
        "measured_commits_per_task": measured,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.raw_sql",
        description="Raw PostgreSQL queue cycle (insert, claim SKIP LOCKED, complete); one JSON line on stdout.",
    )
    parser.add_argument("--db", required=True, help="postgresql://... (a table is created in it)")
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    if args.tasks < 1 or args.connections < 1:
        parser.error("--tasks and --connections must be at least 1")
    status = 0
    with contextlib.redirect_stdout(sys.stderr):
        if not args.db.startswith(("postgresql://", "postgres://")):
            metrics: dict[str, Any] = {"error": "the raw reference is PostgreSQL-only"}
            status = 1
        else:
            try:
                metrics = run(args.db, args.tasks, args.connections)
            except Exception as exc:
                print(f"[raw_sql] failed: {exc!r}", file=sys.stderr)
                metrics, status = {"error": f"{type(exc).__name__}: {exc}"}, 1
    record = {
        "engine": "raw",
        "backend": "postgres",
        "scenario": "queue_cycle",
        "workers": args.connections,
        "metrics": metrics,
    }
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
