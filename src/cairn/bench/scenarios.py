"""Cairn's benchmark scenarios; each returns one result record in the shared JSON schema.

`{"engine", "backend", "scenario", "workers", "metrics": {...}}` is also what the competitor drivers
in `benchmarks/` print, so `cairn bench` can put them side by side and compute ratios.
Workers for throughput, pickup, database cost and memory are real `cairn worker` processes; the
sequential and fan-out scenarios use an embedded worker, as the competitor runs in-process too.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg

import cairn
from cairn.bench import flows
from cairn.types import RunStatus

Progress = Callable[[int, int], None]
"""Called with (done, total) while a scenario runs."""
CONCURRENCY = 100
"""Runs and actions at once per worker process: the `worker_concurrency` the DBOS driver gives its
queue (benchmarks/README.md), so that both engines may have as much in flight."""


def backend_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgres"


def record(url: str, scenario: str, workers: int | None, **metrics: Any) -> dict[str, Any]:
    return {"engine": "cairn", "backend": backend_of(url), "scenario": scenario, "workers": workers, "metrics": metrics}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency_metrics(latencies_ms: list[float]) -> dict[str, float]:
    """p50 and p99 of a latency scenario, in ms."""
    return {"p50_ms": round(percentile(latencies_ms, 0.5), 3), "p99_ms": round(percentile(latencies_ms, 0.99), 3)}


def _noop(done: int, total: int) -> None:
    pass


async def sequential(url: str, runs: int = 200, progress: Progress = _noop) -> dict[str, Any]:
    """One 3-step workflow at a time, start to result, with an embedded worker."""
    client = cairn.Client(url)
    latencies: list[float] = []
    try:
        async with cairn.Worker(client, concurrency=16, poll_interval=1.0):
            for i in range(10):  # warm-up: connections, caches
                await client.run(flows.three_steps, i)
            for i in range(runs):
                started = time.perf_counter()
                await client.run(flows.three_steps, i, timeout=60)
                latencies.append((time.perf_counter() - started) * 1000)
                progress(i + 1, runs)
    finally:
        await client.close()
    return record(
        url, "sequential", 1, runs=runs, **latency_metrics(latencies), mean_ms=round(statistics.fmean(latencies), 3)
    )


def spawn_workers(
    url: str, count: int, concurrency: int = CONCURRENCY, module: str = "cairn.bench.flows", cwd: Path | None = None
) -> list[subprocess.Popen[bytes]]:
    """`count` worker processes of `module` (run from `cwd`, where that module is importable)."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "cairn.cli.main", "worker", module, "--db", url, "--concurrency", str(concurrency)],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


async def _wait_registered(client: cairn.Client, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(await client.store.list_workers()) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} bench workers did not start within {timeout}s")
        await asyncio.sleep(0.05)


async def _wait_completed(client: cairn.Client, total: int, progress: Progress, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        done = await client.store.count_runs(RunStatus.COMPLETED)
        progress(done, total)
        if done >= total:
            return
        failed = await client.list_runs(status=RunStatus.FAILED, limit=1)
        if failed:
            raise RuntimeError(f"benchmark run {failed[0].id} failed: {failed[0].error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done} of {total} runs completed within {timeout}s")
        await asyncio.sleep(0.02)


async def throughput(url: str, workflows: int = 1000, workers: int = 1, progress: Progress = _noop) -> dict[str, Any]:
    """`workflows` 3-step runs started at once; time until all are complete, on `workers` processes."""
    client = cairn.Client(url)
    procs = spawn_workers(url, workers)
    try:
        await _wait_registered(client, workers)
        cpu_before = [cpu_seconds(p.pid) for p in procs]
        db_before = database_cpu_seconds() if backend_of(url) == "postgres" else None
        started = time.perf_counter()
        await asyncio.gather(*(client.start(flows.three_steps, i) for i in range(workflows)))
        await _wait_completed(client, workflows, progress)
        seconds = time.perf_counter() - started
        worker_cpu = sum(cpu_seconds(p.pid) for p in procs) - sum(cpu_before)
        db_after = database_cpu_seconds() if db_before is not None else None
    finally:
        stop_workers(procs)
        await client.close()
    # Where the CPU went, per workflow: what bounds throughput when the machine is the limit.
    cpu: dict[str, float] = {"worker_cpu_ms_per_workflow": round(worker_cpu / workflows * 1000, 2)}
    if db_before is not None and db_after is not None:
        cpu["database_cpu_ms_per_workflow"] = round((db_after - db_before) / workflows * 1000, 2)
    return record(
        url,
        "throughput",
        workers,
        workflows=workflows,
        actions=3 * workflows,
        seconds=round(seconds, 3),
        workflows_per_s=round(workflows / seconds, 1),
        actions_per_s=round(3 * workflows / seconds, 1),
        **cpu,
    )


async def fanout(url: str, actions: int = 1000, progress: Progress = _noop) -> dict[str, Any]:
    """One workflow gathering `actions` actions, with an embedded worker."""
    client = cairn.Client(url)
    try:
        async with cairn.Worker(client, concurrency=CONCURRENCY, poll_interval=1.0):
            await client.run(flows.fan_out, 10)  # warm-up
            started = time.perf_counter()
            await client.run(flows.fan_out, actions, timeout=300)
            seconds = time.perf_counter() - started
            progress(1, 1)
    finally:
        await client.close()
    return record(url, "fanout", 1, actions=actions, seconds=round(seconds, 3))


async def pickup(url: str, runs: int = 20, progress: Progress = _noop) -> dict[str, Any]:
    """With an idle worker process, the time from start() until the run's first action starts."""
    client = cairn.Client(url)
    procs = spawn_workers(url, 1)
    latencies: list[float] = []
    try:
        await _wait_registered(client, 1)
        await client.run(flows.pickup, 0, timeout=60)  # warm-up
        for i in range(runs):
            await asyncio.sleep(0.3)  # let the worker go idle: this scenario measures wake-up
            requested = time.time()
            began = await client.run(flows.pickup, i, timeout=60)
            latencies.append((began - requested) * 1000)
            progress(i + 1, runs)
    finally:
        stop_workers(procs)
        await client.close()
    return record(url, "pickup", 1, runs=runs, **latency_metrics(latencies))


def _commits_now(url: str) -> int:
    """One reading of this database's committed transactions (rolled back: adds no commit)."""
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
        conn.rollback()
    return int(row[0]) if row else 0


def _commits(url: str) -> int:
    """Committed transactions of this database so far, once the statistics have settled.

    Read inside one open transaction (cleared snapshot per read, rolled back at the end) so that
    measuring adds no commits of its own."""
    last, stable_since = -1, time.monotonic()
    with psycopg.connect(url) as conn:
        try:
            while True:
                conn.execute("SELECT pg_stat_clear_snapshot()")
                row = conn.execute(
                    "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
                ).fetchone()
                value = int(row[0]) if row else 0
                if value != last:
                    last, stable_since = value, time.monotonic()
                elif time.monotonic() - stable_since > 1.5:
                    return value
                time.sleep(0.1)
        finally:
            conn.rollback()


async def db_cost(url: str, workflows: int = 200, progress: Progress = _noop) -> dict[str, Any]:
    """Commits per 3-step workflow from pg_stat_database, run through one worker process."""
    if backend_of(url) != "postgres":
        return record(url, "db_cost", 1, error="database cost is measured on PostgreSQL only")
    client = cairn.Client(url)
    procs = spawn_workers(url, 1)
    try:
        await _wait_registered(client, 1)
        await client.run(flows.three_steps, 0, timeout=60)
        await asyncio.sleep(1.5)  # the statistics of the warm-up are flushed within a second
        before = await asyncio.to_thread(_commits_now, url)
        await asyncio.gather(*(client.start(flows.three_steps, i) for i in range(workflows)))
        await _wait_completed(client, workflows + 1, progress)
        stop_workers(procs)  # its heartbeats would count as well
        procs = []
        after = await asyncio.to_thread(_commits, url)
    finally:
        stop_workers(procs)
        await client.close()
    return record(
        url,
        "db_cost",
        1,
        workflows=workflows,
        commits_per_workflow=round((after - before) / workflows, 2),
        commits_per_action=round((after - before) / (3 * workflows), 2),
    )


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def database_cpu_seconds() -> float | None:
    """CPU seconds of this machine's PostgreSQL server processes so far (None where none is local):
    with the database on the same box, its share of the CPU is part of what bounds throughput."""
    total, found = 0.0, False
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            total += cpu_seconds(int(entry.name))
            found = True
        except (OSError, ValueError, IndexError):  # the process ended meanwhile
            continue
    return total if found else None


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def memory(url: str, sleepers: int = 100_000, progress: Progress = _noop) -> dict[str, Any]:
    """Worker RSS with `sleepers` runs sleeping durably, against the same worker idle."""
    client = cairn.Client(url)
    # 64 at once, as in every pass before the throughput scenarios took DBOS's 100: what sleeping
    # runs hold is what this measures (none: 30,000 and 60,000 of them leave the same RSS), and
    # the worker's working set at its concurrency moves the ratio (about 75 KB per run in flight).
    (proc,) = spawn_workers(url, 1, concurrency=64)
    try:
        await _wait_registered(client, 1)
        for i in range(20):  # warm-up, so imports and pools are counted in the idle figure
            await client.run(flows.three_steps, i, timeout=60)
        idle = rss_mb(proc.pid)
        batch = 500
        for start in range(0, sleepers, batch):
            await asyncio.gather(
                *(client.start(flows.sleeper, 3600.0) for _ in range(start, min(sleepers, start + batch)))
            )
            progress(start // 2, sleepers)
        deadline = time.monotonic() + 1800
        while True:
            waiting = await client.store.count_runs(RunStatus.WAITING)
            progress(sleepers // 2 + waiting // 2, sleepers)
            if waiting >= sleepers:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {waiting} of {sleepers} runs went to sleep")
            await asyncio.sleep(0.5)
        loaded = rss_mb(proc.pid)
    finally:
        stop_workers([proc])
        await client.close()
    return record(
        url,
        "memory",
        1,
        sleeping_runs=sleepers,
        idle_rss_mb=round(idle, 1),
        rss_mb=round(loaded, 1),
        ratio=round(loaded / idle, 3),
    )


def pid() -> int:
    return os.getpid()


# --- the code users write first (issue 17) ---------------------------------------------------------


async def naive(url: str, workflows: int = 1000, progress: Progress = _noop) -> dict[str, Any]:
    """The code a user writes first: `cairn.Worker(client)` with its defaults in the same process,
    a loop of `start()`, then `asyncio.gather` of the results. No tuning, no batching by hand."""
    client = cairn.Client(url)
    starts: list[float] = []
    try:
        async with cairn.Worker(client):
            await client.run(flows.three_steps, -1, timeout=60)  # warm-up: connections, caches
            began = time.perf_counter()
            handles = []
            for i in range(workflows):
                t0 = time.perf_counter()
                handles.append(await client.start(flows.three_steps, i))
                starts.append((time.perf_counter() - t0) * 1000)
                progress(i // 2, workflows)
            results = await asyncio.gather(*(h.result(timeout=600) for h in handles))
            seconds = time.perf_counter() - began
            progress(workflows, workflows)
    finally:
        await client.close()
    if results != [i + 3 for i in range(workflows)]:
        raise RuntimeError("wrong results")
    return record(
        url,
        "naive",
        1,
        workflows=workflows,
        seconds=round(seconds, 3),
        workflows_per_s=round(workflows / seconds, 1),
        start_p50_ms_busy=round(percentile(starts, 0.5), 3),
    )


def _raw_insert(url: str, n: int) -> list[float]:
    """One-row INSERT commits into a scratch table: what a start is measured against."""
    latencies: list[float] = []
    if url.startswith("sqlite"):
        import sqlite3

        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS bench_raw (id text PRIMARY KEY, payload text)")
        for i in range(n):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO bench_raw VALUES (?, ?)", (f"r{i}", '{"x":1}'))
            conn.execute("COMMIT")
            latencies.append((time.perf_counter() - t0) * 1000)
        conn.close()
        return latencies
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute("CREATE TABLE IF NOT EXISTS bench_raw (id text PRIMARY KEY, payload text)")
        for i in range(n):
            t0 = time.perf_counter()
            pg.execute("INSERT INTO bench_raw VALUES (%s, %s)", (f"r{i}", '{"x":1}'))
            latencies.append((time.perf_counter() - t0) * 1000)
    return latencies


async def start(url: str, runs: int = 200, progress: Progress = _noop) -> dict[str, Any]:
    """`start()` latency, alone and with an idle worker in the process, beside a raw one-row INSERT
    commit on the same database."""
    raw = await asyncio.to_thread(_raw_insert, url, runs)
    client = cairn.Client(url)
    alone: list[float] = []
    beside: list[float] = []
    try:
        for i in range(runs):
            t0 = time.perf_counter()
            await client.start(flows.three_steps, i, id=f"alone-{i}")
            alone.append((time.perf_counter() - t0) * 1000)
            progress(i // 2, runs)
        async with cairn.Worker(client):
            for i in range(runs):
                t0 = time.perf_counter()
                handle = await client.start(flows.three_steps, i, id=f"beside-{i}")
                beside.append((time.perf_counter() - t0) * 1000)
                await handle.result(timeout=60)  # idle again before the next start
                progress(runs // 2 + i // 2, runs)
    finally:
        await client.close()
    raw_p50, alone_p50, beside_p50 = (percentile(x, 0.5) for x in (raw, alone, beside))
    return record(
        url,
        "start",
        1,
        runs=runs,
        raw_insert_p50_ms=round(raw_p50, 3),
        start_p50_ms=round(alone_p50, 3),
        start_beside_worker_p50_ms=round(beside_p50, 3),
        ratio_alone=round(alone_p50 / raw_p50, 2),
        ratio_beside_worker=round(beside_p50 / raw_p50, 2),
    )


async def reads(url: str, runs: int = 200, progress: Progress = _noop) -> dict[str, Any]:
    """What a dashboard, the CLI or a caller polling `status()` waits for: a finished run's row,
    steps and events, and a page of runs, each read `runs` times in a row (p50 in ms)."""
    client = cairn.Client(url)
    try:
        async with cairn.Worker(client):
            handle = await client.start(flows.three_steps, 1, id="read-me")
            await handle.result(timeout=60)
        reads_of: dict[str, Callable[[], Awaitable[Any]]] = {
            "describe": handle.describe,
            "steps": handle.steps,
            "events": handle.events,
            "list_runs": lambda: client.list_runs(limit=50),
        }
        p50: dict[str, float] = {}
        for n, (name, read) in enumerate(reads_of.items()):
            latencies = []
            for _ in range(runs):
                t0 = time.perf_counter()
                await read()
                latencies.append((time.perf_counter() - t0) * 1000)
            p50[f"{name}_p50_ms"] = round(percentile(latencies, 0.5), 3)
            progress(n + 1, len(reads_of))
    finally:
        await client.close()
    return record(url, "reads", 1, reads=runs, **p50)


def bulk_runs(
    url: str,
    prefix: str,
    n: int,
    status: str,
    now: float,
    workflow: str = "cairn.bench.flows.three_steps",
    with_steps: bool = False,
) -> None:
    """Insert `n` runs of `workflow` directly, created 2 s before `now` (due when pending), with ids
    that sort as they were numbered (setup only: no engine is measured). `with_steps`: each gets the
    three completed action steps a finished run of `three_steps` leaves behind (a history is mostly
    steps, and a statement that reads steps by anything but their key shows only with them there)."""
    ready = now - 1 if status == "pending" else None
    ids = [f"{prefix}{i:06d}" for i in range(n)]
    runs = [(i, workflow, status, '{"x":1}', now - 2, now - 2, ready) for i in ids]
    sql = (
        "INSERT INTO cairn_runs (id, workflow, status, input, queue, created_at, updated_at, ready_at) "
        "VALUES ({p}, {p}, {p}, {p}, 'default', {p}, {p}, {p})"
    )
    steps: list[tuple[Any, ...]] = []
    if with_steps:
        steps = [
            (i, seq, "cairn.bench.flows.add_one", f'{{"x":{seq}}}', str(seq + 1), seq + 1, now - 2, now - 2, seq)
            for i in ids
            for seq in (1, 2, 3)
        ]
    step_sql = (
        "INSERT INTO cairn_steps (run_id, seq, kind, name, args, status, result, attempt, delivered_in, "
        "queue, created_at, completed_at, created_in) "
        "VALUES ({p}, {p}, 'action', {p}, {p}, 'completed', {p}, 1, {p}, 'default', {p}, {p}, {p})"
    )
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executemany(sql.format(p="?"), runs)
            if steps:
                conn.executemany(step_sql.format(p="?"), steps)
        return
    with psycopg.connect(url) as pg, pg.cursor() as cur:
        cur.executemany(sql.format(p="%s"), runs)
        if steps:
            cur.executemany(step_sql.format(p="%s"), steps)


async def _claim_ms(client: cairn.Client, repeats: int = 20) -> float:
    """Median time of a claim of 16 runs (rolled back by giving the runs back at once)."""
    workflows = ["cairn.bench.flows.three_steps"]
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        work = await client.store.claim_work(f"bench-{i}", workflows, [], None, 16, 0, 0.001)
        times.append((time.perf_counter() - t0) * 1000)
        if len(work.runs) != 16:
            raise RuntimeError(f"a claim took {len(work.runs)} runs, not 16")
    return statistics.median(times)


async def backlog(url: str, progress: Progress = _noop) -> dict[str, Any]:
    """A claim of 16 runs with 100, 1,000 and 20,000 runs pending: its cost must not grow with the
    backlog (the claimed runs' leases run out at once, so each claim sees the same backlog)."""
    client = cairn.Client(url)
    figures: dict[str, float] = {}
    try:
        await client.store.open()
        have = 0
        for i, pending in enumerate((100, 1000, 20_000)):
            await asyncio.to_thread(bulk_runs, url, f"b{i}-", pending - have, "pending", time.time())
            have = pending
            figures[f"claim_ms_at_{pending}"] = round(await _claim_ms(client), 3)
            progress(i + 1, 3)
    finally:
        await client.close()
    figures["ratio_20000_to_100"] = round(figures["claim_ms_at_20000"] / figures["claim_ms_at_100"], 2)
    return record(url, "backlog", 1, **figures)


async def _activated(handle: cairn.RunHandle, activations: int) -> None:
    while (await handle.describe()).activations < activations:
        await asyncio.sleep(0.0005)


async def signal_loop(url: str, signals: int = 1000, progress: Progress = _noop) -> dict[str, Any]:
    """One run waiting for `signals` signals, each sent once the run waits for it: what a wake-up
    costs must not grow with the run's history (the median time from a signal to the run waiting
    again, over the first and the last quarter of the signals; the wait for it polls every 0.5 ms)."""
    client = cairn.Client(url)
    took: list[float] = []
    try:
        async with cairn.Worker(client):
            handle = await client.start(flows.signal_loop, signals)
            await _activated(handle, 1)  # waiting for its first signal
            for i in range(signals):
                sent = time.perf_counter()
                await handle.signal("tick", 1)
                await _activated(handle, i + 2)  # woken by it, and waiting again
                took.append((time.perf_counter() - sent) * 1000)
                progress(i + 1, signals)
            total = await handle.result(timeout=60)
    finally:
        await client.close()
    if total != signals:
        raise RuntimeError(f"the run counted {total} signals of {signals}")
    quarter = max(1, signals // 4)
    first, last = statistics.median(took[:quarter]), statistics.median(took[-quarter:])
    return record(
        url,
        "signal_loop",
        1,
        signals=signals,
        first_quarter_ms=round(first, 3),
        last_quarter_ms=round(last, 3),
        ratio_last_to_first=round(last / first, 2),
    )


async def idle_cpu_percent(url: str, seconds: float = 5.0, settle: float = 1.0) -> float:
    """CPU of one worker process with nothing to do, over `seconds`, from `settle` seconds after it
    registered (on SQLite the file watcher looks less often the longer nothing happens)."""
    (proc,) = spawn_workers(url, 1)
    try:
        client = cairn.Client(url)
        try:
            await _wait_registered(client, 1)
        finally:
            await client.close()
        await asyncio.sleep(settle)  # settled: imports, first claims
        before = cpu_seconds(proc.pid)
        await asyncio.sleep(seconds)  # measuring an idle worker over a fixed time
        return round((cpu_seconds(proc.pid) - before) / seconds * 100, 2)
    finally:
        stop_workers([proc])


async def history(url: str, finished: int = 100_000, progress: Progress = _noop) -> dict[str, Any]:
    """The hot paths with an empty history, then with `finished` completed runs (and their steps):
    sequential latency, a claim, and an idle worker's CPU must not change by more than 10%."""
    out: dict[str, float] = {}
    for phase in ("empty", "history"):
        if phase == "history":
            await asyncio.to_thread(bulk_runs, url, "h", finished, "completed", time.time(), with_steps=True)
        seq = await sequential(url, 100)
        out[f"sequential_p50_ms_{phase}"] = seq["metrics"]["p50_ms"]
        out[f"idle_worker_cpu_percent_{phase}"] = await idle_cpu_percent(url)
        progress(1 if phase == "empty" else 2, 2)
    out["sequential_ratio"] = round(out["sequential_p50_ms_history"] / out["sequential_p50_ms_empty"], 2)
    return record(url, "history", 1, finished_runs=finished, **out)
