"""Schedules and retention, measured with real worker processes (docs/benchmarks.md, "Schedules
and retention"; issue 19's figures).

    python -m benchmarks.schedules_retention --db URL [--workers 3] [--seconds 60]
        [--finished 100000] [--rounds 3] [--only schedule|prune|prune-alone|retention]
        [--control] [--workflows 1000]

Schedule: N `cairn worker benchmarks.schedule_flows` processes fire one 1-second interval schedule
(`overlap="allow"`) for `--seconds`; then the runs of that schedule are counted from their ids (the
id holds the tick's time): ticks between the first and the last fired tick, runs created, ticks
with more than one run (must be 0), ticks missed, and how late each run was created after its tick.

Pruning: `--finished` finished runs, 40 days old, are written in bulk (setup, not measured) with
what a real 3-step run records (3 steps, 11 events each). Then the bench's throughput scenario
(`cairn.bench.scenarios.throughput`: 1,000 3-step workflows, 1 worker process) runs without, and
with, a concurrent `cairn prune --older-than 30d` process deleting those runs in its batches,
alternating, `--rounds` rounds each, with a fresh database and a fresh fill before every run. The
filled runs are `cancelled` (finished, prunable like any other) so that the unchanged scenario's
wait, a count of `completed` runs, counts only its own. `--control` adds a third side: the same
run beside a busy loop that takes one core and touches no database.

Prune alone (what bounds the cost): `client.prune`'s batches timed one by one on the same fill,
the CPU they take (this process; the PostgreSQL server's processes), and the latency of one
`start()` alone and while a `cairn prune` process runs.

Retention (only with `--only retention`): the throughput scenario's worker with the workers' own
retention on (CAIRN_RETENTION=30d: a few batches a heartbeat) against the same worker without.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

import cairn  # noqa: E402
from benchmarks.tables import empty_database  # noqa: E402
from cairn.bench import flows, scenarios  # noqa: E402
from cairn.types import RunStatus  # noqa: E402

DAY = 86400.0


# --- schedule ----------------------------------------------------------------------------------------


async def schedule(url: str, workers: int, seconds: float) -> dict[str, Any]:
    await empty_database(url)
    client = cairn.Client(url)
    procs = scenarios.spawn_workers(url, workers, module="benchmarks.schedule_flows", cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while len(await client.store.list_workers()) < workers:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker process exited at start")
            if time.monotonic() > deadline:
                raise TimeoutError("workers did not register")
            await asyncio.sleep(0.05)
        await asyncio.sleep(seconds)  # the workers fire the schedule meanwhile: the thing measured
        alive = sum(1 for p in procs if p.poll() is None)
    finally:
        scenarios.stop_workers(procs)
    runs = []
    cursor = None
    while True:
        page = await client.runs_page(id_prefix="bench-tick@", sort="created_at", limit=500, cursor=cursor)
        runs.extend(page.runs)
        cursor = page.next_cursor
        if cursor is None:
            break
    await client.close()
    ticks = [datetime.fromisoformat(r.id.split("@", 1)[1]).timestamp() for r in runs]
    per_tick = Counter(round(t) for t in ticks)
    first, last = min(per_tick), max(per_tick)
    elapsed = last - first + 1
    late = sorted(r.created_at - t for r, t in zip(runs, ticks, strict=True))
    return {
        "backend": scenarios.backend_of(url),
        "workers": workers,
        "workers_alive_at_end": alive,
        "seconds": seconds,
        "ticks_elapsed": elapsed,
        "runs": len(runs),
        "ticks_with_runs": len(per_tick),
        "ticks_with_more_than_one_run": sum(1 for n in per_tick.values() if n > 1),
        "ticks_missed": elapsed - len(per_tick),
        "off_grid_ticks": sum(1 for t in ticks if abs(t - round(t)) > 1e-6),
        "completed": sum(1 for r in runs if r.status == RunStatus.COMPLETED),
        "late_p50_ms": round(statistics.median(late) * 1000, 1),
        "late_max_ms": round(late[-1] * 1000, 1),
    }


# --- pruning -----------------------------------------------------------------------------------------

RUN_COLUMNS = (
    "id, workflow, status, input, result, queue, created_at, updated_at, started_at, completed_at, activations"
)
STEP_COLUMNS = (
    "run_id, seq, kind, name, args, status, result, attempt, delivered_in, delivered_at, queue, "
    "created_at, started_at, completed_at, created_in, lost"
)
EVENT_COLUMNS = "run_id, at, kind, step, detail"
WORKFLOW = "cairn.bench.flows.three_steps"
ACTION = "cairn.bench.flows.add_one"


def _rows(n: int, now: float) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """`n` finished runs, 40 days old, each with what a real 3-step run records."""
    runs, steps, events = [], [], []
    scheduled = json.dumps({"kind": "action", "name": ACTION})
    for i in range(n):
        rid = f"old-{i:07d}"
        t = now - 40 * DAY + i * 0.01
        runs.append((rid, WORKFLOW, "cancelled", json.dumps({"x": i}), None, "default", t, t + 1, t, t + 1, 4))
        events.append((rid, t, "started", None, None))
        for seq in (1, 2, 3):
            s = t + seq * 0.1
            steps.append((rid, seq, "action", ACTION, json.dumps({"x": i + seq - 1}), "completed",
                          json.dumps(i + seq), 1, seq + 1, s + 0.05, "default", s, s, s + 0.05, seq, 0))  # fmt: skip
            events.append((rid, s, "step.scheduled", seq, scheduled))
            events.append((rid, s, "step.started", seq, json.dumps({"attempt": 1, "worker": "bench"})))
            events.append((rid, s + 0.05, "step.completed", seq, json.dumps({"attempt": 1})))
        events.append((rid, t + 1, "cancelled", None, None))
    return runs, steps, events


def fill(url: str, n: int) -> float:
    """Write the runs in bulk (parameters only; the table and column names are ours). Seconds taken."""
    began = time.perf_counter()
    runs, steps, events = _rows(n, time.time())
    batches = (("cairn_runs", RUN_COLUMNS, runs), ("cairn_steps", STEP_COLUMNS, steps),
               ("cairn_events", EVENT_COLUMNS, events))  # fmt: skip
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for table, columns, rows in batches:
                marks = ", ".join("?" * len(rows[0]))
                conn.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)
            conn.execute("ANALYZE")
    else:
        with psycopg.connect(url) as conn:
            for table, columns, rows in batches:
                with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN".encode()) as copy:
                    for row in rows:
                        copy.write_row(row)
            conn.commit()
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - began


async def _remaining(url: str) -> int:
    client = cairn.Client(url)
    try:
        return await client.store.count_runs(RunStatus.CANCELLED)
    finally:
        await client.close()


BURN = "import time\nwhile True: time.perf_counter()"
"""The control: a process that keeps one core busy and touches no database."""
PACED = """
import asyncio, sys, time
import cairn

async def main(url):
    client = cairn.Client(url)
    await client.store.open()
    before, total = await client.store.now() - 30 * 86400, 0
    while True:
        began = time.perf_counter()
        removed = await client.store.prune(before, None, 500)
        total += removed
        if removed < 500:
            break
        await asyncio.sleep(time.perf_counter() - began)
    print(f"removed {total} finished runs, pausing a batch's time after each batch")
    await client.close()

asyncio.run(main(sys.argv[1]))
"""
"""Not Cairn's code: `client.prune`'s batches with a pause as long as the batch after each, to
measure whether pacing is what the SQLite cost needs (`--only paced`)."""


async def one_throughput(url: str, finished: int, beside: str, workflows: int = 1000) -> dict[str, Any]:
    """The throughput scenario on a fresh fill, with nothing beside it ("none"), a `cairn prune`
    process ("prune"), a busy loop ("burn": what one core's worth of CPU taken costs it), or with
    the worker's own retention on ("retention": CAIRN_RETENTION=30d, a few batches a heartbeat)."""
    await empty_database(url)
    filled = await asyncio.to_thread(fill, url, finished)
    out: dict[str, Any] = {"beside": beside, "fill_s": round(filled, 1)}
    other = None
    began = time.perf_counter()
    if beside in ("prune", "paced"):
        command = ["-m", "cairn.cli.main", "prune", "--older-than", "30d", "--db", url]
        other = subprocess.Popen(
            [sys.executable, *(command if beside == "prune" else ["-c", PACED, url])],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        while await _remaining(url) >= finished:  # deleting already: the throughput runs beside it
            if other.poll() is not None:
                raise RuntimeError(f"prune exited at once: {other.communicate()}")
            await asyncio.sleep(0.05)
    elif beside == "burn":
        other = subprocess.Popen([sys.executable, "-c", BURN])
    elif beside == "retention":
        os.environ["CAIRN_RETENTION"] = "30d"  # inherited by the scenario's worker process
    try:
        result = await scenarios.throughput(url, workflows, 1)
    finally:
        os.environ.pop("CAIRN_RETENTION", None)
    if beside == "retention":
        out["pruned_during_run"] = finished - await _remaining(url)
    out["workflows_per_s"] = result["metrics"]["workflows_per_s"]
    out["throughput_s"] = result["metrics"]["seconds"]
    if beside == "burn" and other is not None:
        out["burn_cpu_s"] = round(scenarios.cpu_seconds(other.pid), 1)
        other.kill()
        other.wait()
    elif other is not None:
        out["prune_outlasted_throughput"] = other.poll() is None
        stdout, stderr = await asyncio.to_thread(other.communicate)
        out["prune_s"] = round(time.perf_counter() - began, 1)
        if other.returncode:
            raise RuntimeError(f"prune failed: {stderr.decode()}")
        out["prune_said"] = stdout.decode().strip()
        out["left_after_prune"] = await _remaining(url)
    return out


async def pruning(url: str, finished: int, rounds: int, sides: list[str], workflows: int = 1000) -> dict[str, Any]:
    """Alternating: each round runs every side once, the order turning round by round."""
    results = []
    for r in range(rounds):
        order = sides[r % len(sides) :] + sides[: r % len(sides)]
        for beside in order:
            res = await one_throughput(url, finished, beside, workflows)
            print(json.dumps(res), file=sys.stderr, flush=True)
            results.append(res)
    out: dict[str, Any] = {
        "backend": scenarios.backend_of(url),
        "finished": finished,
        "rounds": rounds,
        "workflows": workflows,
    }
    medians = {}
    for side in sides:
        mine = [r for r in results if r["beside"] == side]
        out[f"{side}_workflows_per_s"] = [r["workflows_per_s"] for r in mine]
        medians[side] = statistics.median(r["workflows_per_s"] for r in mine)
        out[f"median_{side}"] = medians[side]
        if side != "none":
            out[f"cost_percent_{side}"] = round((1 - medians[side] / medians["none"]) * 100, 1)
    pruned = [r for r in results if r["beside"] in ("prune", "paced")]
    if pruned:
        out["prune_s"] = [r["prune_s"] for r in pruned]
        out["prune_outlasted_throughput"] = [r["prune_outlasted_throughput"] for r in pruned]
    kept = [r for r in results if r["beside"] == "retention"]
    if kept:
        out["pruned_during_run"] = [r["pruned_during_run"] for r in kept]
    return out


async def prune_alone(url: str, finished: int) -> dict[str, Any]:
    """What bounds pruning: the batches of `client.prune` timed one by one with nothing beside
    them, and the CPU they take in this process (SQLite deletes here) and in the database server."""
    await empty_database(url)
    await asyncio.to_thread(fill, url, finished)
    client = cairn.Client(url)
    await client.store.open()
    before = await client.store.now() - 30 * DAY
    db_cpu = scenarios.database_cpu_seconds() if url.startswith("postgres") else None
    cpu = time.process_time()
    began = time.perf_counter()
    batches = []
    while True:
        t0 = time.perf_counter()
        removed = await client.store.prune(before, None, 500)  # what client.prune does, batch by batch
        batches.append((time.perf_counter() - t0) * 1000)
        if removed < 500:
            break
    wall = time.perf_counter() - began
    out = {
        "backend": scenarios.backend_of(url),
        "finished": finished,
        "batches": len(batches),
        "seconds": round(wall, 2),
        "batch_p50_ms": round(statistics.median(batches), 1),
        "batch_max_ms": round(max(batches), 1),
        "process_cpu_s": round(time.process_time() - cpu, 2),
    }
    if db_cpu is not None:
        after = scenarios.database_cpu_seconds()
        out["database_cpu_s"] = round((after or 0) - db_cpu, 2)
    await client.close()
    out.update(await _start_latency(url, finished))
    return out


async def _start_latency(url: str, finished: int) -> dict[str, float]:
    """How long one write (a `start()`, one short transaction) waits: on a fresh fill for 3 s with
    nothing beside it, then while a `cairn prune` process deletes the fill."""
    await empty_database(url)
    await asyncio.to_thread(fill, url, finished)
    client = cairn.Client(url)
    await client.store.open()

    async def probe(tag: str, done: Any) -> list[float]:
        latencies, i = [], 0
        while not done():
            t0 = time.perf_counter()
            await client.start(flows.three_steps, i, id=f"probe-{tag}-{i}")
            latencies.append((time.perf_counter() - t0) * 1000)
            i += 1
            await asyncio.sleep(0.005)
        return latencies

    ends = time.monotonic() + 3.0
    alone = await probe("alone", lambda: time.monotonic() > ends)
    prune = subprocess.Popen(
        [sys.executable, "-m", "cairn.cli.main", "prune", "--older-than", "30d", "--db", url],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while await _remaining(url) >= finished:  # deleting already
        await asyncio.sleep(0.02)
    beside = await probe("beside", lambda: prune.poll() is not None)
    await client.close()
    out = {}
    for label, values in (("alone", alone), ("beside_prune", beside)):
        out[f"start_p50_ms_{label}"] = round(scenarios.percentile(values, 0.5), 2)
        out[f"start_p99_ms_{label}"] = round(scenarios.percentile(values, 0.99), 2)
        out[f"start_max_ms_{label}"] = round(max(values), 2)
        out[f"starts_{label}"] = len(values)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("schedule", "prune", "prune-alone", "retention", "paced"))
    parser.add_argument("--workflows", type=int, default=1000, help="of each throughput run")
    parser.add_argument("--control", action="store_true", help="also run the throughput beside a busy loop")
    opts = parser.parse_args()
    if opts.only in (None, "schedule"):
        print(json.dumps({"scenario": "schedule", **await schedule(opts.db, opts.workers, opts.seconds)}), flush=True)
    if opts.only in (None, "prune"):
        sides = ["none", "prune", "burn"] if opts.control else ["none", "prune"]
        figures = await pruning(opts.db, opts.finished, opts.rounds, sides, opts.workflows)
        print(json.dumps({"scenario": "prune", **figures}), flush=True)
    if opts.only in (None, "prune-alone"):
        print(json.dumps({"scenario": "prune-alone", **await prune_alone(opts.db, opts.finished)}), flush=True)
    if opts.only == "retention":  # not in the default set: see docs/benchmarks.md
        figures = await pruning(opts.db, opts.finished, opts.rounds, ["none", "retention"], opts.workflows)
        print(json.dumps({"scenario": "retention", **figures}), flush=True)
    if opts.only == "paced":
        figures = await pruning(opts.db, opts.finished, opts.rounds, ["none", "paced"], opts.workflows)
        print(json.dumps({"scenario": "paced", **figures}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
