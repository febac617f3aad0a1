"""DBOS 3.4 side of ``cairn bench --compare dbos``: one scenario per invocation, one JSON line out.

Why a separate program: DBOS keeps a process-wide singleton (one system database, one executor
id per process) and would otherwise share the interpreter, the GIL and the import-time registry
with Cairn. Running it as ``python -m benchmarks.dbos_driver SCENARIO --db URL`` keeps the two
engines isolated, lets ``cairn bench`` run it against its own database on the same server in the
same run, and keeps ``dbos`` an optional extra rather than a dependency of the core.

Output: exactly one line of JSON on stdout,
``{"engine": "dbos", "backend": "postgres"|"sqlite", "scenario": S, "workers": W|null,
"metrics": {...}}``; everything else (DBOS logs, progress) goes to stderr. A scenario that
cannot be measured faithfully reports ``{"error": "..."}`` as its metrics instead of a number.

The workflow shape is the one Cairn's benchmark uses: a workflow of three ``@DBOS.step()``
calls, each returning ``x + 1``.

Scenarios
---------
``sequential``
    N times (``--runs``, default 200, after 5 unmeasured warm-up runs): ``DBOS.start_workflow``
    and ``handle.get_result()`` in-process; the start-to-result time of each. The workflow runs
    on DBOS's in-process executor (no queue, no polling), which is DBOS's fastest path.
``throughput``
    N workflows (``--actions`` is not used; N is ``--runs``, default 1000) enqueued on a DBOS
    queue, with W worker processes (``--workers``, default 1): this process plus W-1 child
    processes running the same app and queue with their own executor id. The clock starts just
    before the first enqueue and stops when the last result has been read back through its
    handle. Enqueueing is a plain loop of ``Queue.enqueue`` (DBOS 3.4 has no bulk enqueue).
``fanout``
    One workflow that enqueues N (``--actions``, default 1000) ``add_one`` steps on the queue and
    waits for every handle: the fan-out pattern DBOS documents ("enqueue each task so all tasks
    are processed concurrently, then wait for each handle"). Enqueueing a step runs it as a
    one-step workflow. Timed from ``start_workflow`` to the parent's result.
``pickup``
    With this process as the only, idle worker, enqueue a workflow whose first step returns
    ``time.time()``; pickup = that instant minus the instant just before the enqueue call, so
    it includes the enqueue transaction and the wait for DBOS's dequeue poll. N runs
    (``--runs``, default 20), idle between runs for 0.3 s plus a random fraction of one poll
    interval, so that the enqueues fall at random phases of DBOS's poll timer (with a fixed gap
    they lock to one phase: at the 1 s default every pickup read ~0.7 s).
``db_cost``
    PostgreSQL only. Commits per workflow, from ``pg_stat_database.xact_commit`` of the
    benchmark database, read from a separate connection to the ``postgres`` maintenance
    database (so the reads themselves do not count; each read follows
    ``pg_stat_clear_snapshot()`` and waits until no backend is connected to the benchmark
    database and the counter has not moved for 0.5 s, since the statistics are flushed
    lazily). Three phases, each a full DBOS launch and ``DBOS.destroy()`` (closing every
    connection flushes its statistics): L = launch + destroy; B = launch, enqueue N
    (``--runs``, default 200) workflows, wait until all are done, destroy; A = launch, stay
    idle for as long as B lasted, destroy. ``commits_per_workflow`` = (B - A) / N: the cost of
    the work net of launch and of the queue poller's idle traffic; ``gross_commits_per_workflow``
    = (B - L) / N also charges the poller's traffic during the run, and
    ``background_commits_per_s`` = (A - L) / duration is that idle traffic alone. Waiting for
    completion is done with this driver's own counted queries (subtracted), not with DBOS
    handles, so client-side result polling is not charged to DBOS. ``statements_per_workflow``
    comes from ``pg_stat_statements`` the same way when that extension is loaded, else null.

DBOS settings, and why
----------------------
* ``DBOS(config={"name": "cairn-bench", "system_database_url": URL, ...})``: the documented 3.4
  configuration; PostgreSQL URLs go through DBOS's own ``postgresql+psycopg`` driver (psycopg
  3, the same client library Cairn uses), SQLite URLs are ``sqlite:///path``.
* ``executor_id`` unique per process (``bench-0``, ``bench-1``, ...): DBOS requires it for
  ``worker_concurrency`` to be per process and for recovery not to steal another process' work.
* ``application_version`` fixed, so every process dequeues the same workflows.
* ``log_level: WARNING``: keeps DBOS's INFO lines off the measured path and out of the output.
* Queue ``cairn_bench`` registered with ``DBOS.register_queue`` (3.4 queues live in the system
  database) with ``worker_concurrency=100`` (each process runs up to 100 queued workflows at
  once; generous for 1,000 trivial workflows) and no global ``concurrency``: a global limit
  makes DBOS count pending rows and dequeue under REPEATABLE READ, which only adds contention
  (DBOS's docs recommend worker concurrency for most uses). No rate limiter.
* ``polling_interval_sec=0.05`` (DBOS default 1.0 s): the queue poller is DBOS's only way to
  start queued work, and each poll claims at most ``worker_concurrency`` workflows, so the
  default caps a process at ~100 workflows per second and adds ~0.5 s to every pickup. 0.05 s
  is as fast as 0.01 s for throughput here (the work is CPU-bound) at under a third of the idle
  polling traffic; README.md has the figures for 1.0, 0.05 and 0.01 s. ``--poll-interval``
  changes it.
* ``handle.get_result(polling_interval_sec=0.01)`` (DBOS default 1.0 s): results of queued
  workflows are polled, not notified, so the default would add up to a second to the end of
  every timed wait.
* Everything else is DBOS's default: system database pool of 20 connections per process with
  SQLAlchemy's ``pool_pre_ping`` on (a ``SELECT 1`` in autocommit, which PostgreSQL counts as a
  commit, at every pool checkout: about half of DBOS's commits; ``--no-pre-ping`` shows the
  difference), unbounded executor threads, LISTEN/NOTIFY on.

Options beyond the common interface: ``--poll-interval``, ``--worker-concurrency``,
``--no-pre-ping``, and ``--producer separate`` (throughput: enqueue from an extra process that
dequeues nothing, ``DBOS.listen_queues([])``, with W child workers, as a web server feeding
workers would; by default the enqueueing process is one of the W workers).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import psycopg
from dbos import DBOS, DBOSConfig, Queue
from psycopg import sql

from benchmarks.pgstats import StatsReader, database_name, maintenance_conninfo

APP_NAME = "cairn-bench"
APP_VERSION = "cairn-bench-1"
QUEUE_NAME = "cairn_bench"
DEFAULT_POLL_INTERVAL_SEC = 0.05
DEFAULT_WORKER_CONCURRENCY = 100
RESULT_POLL_SEC = 0.01
SCENARIOS = ("sequential", "throughput", "naive", "fanout", "pickup", "db_cost")
DEFAULT_RUNS = {"sequential": 200, "throughput": 1000, "naive": 1000, "fanout": 1, "pickup": 20, "db_cost": 200}
PROTECTED_DATABASES = frozenset({"postgres", "template0", "template1"})
REPO_ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# The benchmark application: the same shapes as cairn.bench.flows.


@DBOS.step()
def add_one(x: int) -> int:
    return x + 1


@DBOS.step()
def started_at(x: int) -> float:
    """The instant the first action starts: pickup latency is this minus the start request."""
    return time.time()


@DBOS.workflow()
def three_steps(x: int) -> int:
    return add_one(add_one(add_one(x)))


@DBOS.workflow()
def fan_out(n: int) -> int:
    handles = [DBOS.enqueue_workflow(QUEUE_NAME, add_one, i) for i in range(n)]
    return sum(h.get_result(polling_interval_sec=RESULT_POLL_SEC) for h in handles)


@DBOS.workflow()
def pickup(x: int) -> float:
    return started_at(x)


# --------------------------------------------------------------------------------------------
# Databases


@dataclass(frozen=True)
class Target:
    url: str
    backend: str  # "postgres" | "sqlite"

    @classmethod
    def parse(cls, url: str) -> Target:
        if url.startswith(("postgresql://", "postgres://")):
            return cls(url, "postgres")
        if url.startswith("sqlite:///"):
            return cls(url, "sqlite")
        raise SystemExit(f"unsupported database URL (want postgresql://... or sqlite:///path): {url}")

    @property
    def dbname(self) -> str:
        return database_name(self.url)

    @property
    def sqlite_path(self) -> Path:
        return Path(self.url.removeprefix("sqlite:///"))

    def reset(self) -> None:
        """Start every scenario from an empty system database."""
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.sqlite_path}{suffix}").unlink(missing_ok=True)
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            return
        name = self.dbname
        if name in PROTECTED_DATABASES:
            raise ValueError(f"refusing to drop and recreate {name!r}")
        ident = sql.Identifier(name)
        with psycopg.connect(maintenance_conninfo(self.url), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))


# --------------------------------------------------------------------------------------------
# DBOS lifecycle


@dataclass(frozen=True)
class Settings:
    poll_interval: float
    worker_concurrency: int
    pre_ping: bool = True


def launch(target: Target, executor_id: str, settings: Settings, *, listen: bool = True) -> None:
    config: DBOSConfig = {
        "name": APP_NAME,
        "system_database_url": target.url,
        "executor_id": executor_id,
        "application_version": APP_VERSION,
        "log_level": "WARNING",
    }
    if not settings.pre_ping:
        # DBOS merges these into its engine defaults (pool of 20, pre-ping on).
        config["db_engine_kwargs"] = {"pool_pre_ping": False}
    DBOS(config=config)
    if not listen:
        DBOS.listen_queues([])  # a pure producer: dequeues nothing from the benchmark queue
    DBOS.launch()


def register_queue(settings: Settings) -> Queue:
    return DBOS.register_queue(
        QUEUE_NAME,
        worker_concurrency=settings.worker_concurrency,
        polling_interval_sec=settings.poll_interval,
        on_conflict="always_update",
    )


def wait_for_queue_worker(timeout: float = 10.0) -> None:
    """DBOS starts a poller thread per queue, discovering new queues about once a second."""
    deadline = time.monotonic() + timeout
    name = f"queue-worker-{QUEUE_NAME}"
    while not any(t.name == name and t.is_alive() for t in threading.enumerate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"DBOS did not start a poller for queue {QUEUE_NAME} in {timeout} s")
        time.sleep(0.02)


@contextlib.contextmanager
def dbos_running(
    target: Target, executor_id: str, settings: Settings, *, register: bool = True, listen: bool = True
) -> Iterator[Queue | None]:
    """Launch DBOS (registering the benchmark queue if asked), destroy it afterwards."""
    launch(target, executor_id, settings, listen=listen)
    try:
        queue = None
        if register:
            queue = register_queue(settings)
            if listen:
                wait_for_queue_worker()
        yield queue
    finally:
        DBOS.destroy()


# --------------------------------------------------------------------------------------------
# Statistics helpers


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in seconds)
    return {
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "mean_ms": round(sum(ms) / len(ms), 3),
    }


def log(message: str) -> None:
    print(f"[dbos_driver] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Scenarios


def run_sequential(target: Target, runs: int, settings: Settings) -> dict[str, Any]:
    # No benchmark queue: nothing polls in the background while the workflows run inline.
    with dbos_running(target, "bench-0", settings, register=False):
        for i in range(5):
            DBOS.start_workflow(three_steps, i).get_result()
        durations: list[float] = []
        for i in range(runs):
            t0 = time.perf_counter()
            result = DBOS.start_workflow(three_steps, i).get_result()
            durations.append(time.perf_counter() - t0)
            if result != i + 3:
                raise RuntimeError(f"three_steps({i}) returned {result}")
    return {"runs": runs, **latency_summary(durations)}


class WorkerProcesses:
    """W-1 extra DBOS processes dequeuing from the benchmark queue, each with its own executor id.

    A child announces itself with a READY line on its stdout once its queue poller runs, and
    shuts DBOS down when its stdin is closed.
    """

    def __init__(self, target: Target, count: int, settings: Settings) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        for i in range(1, count + 1):
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.dbos_driver",
                "_worker",
                "--db",
                target.url,
                "--executor-id",
                f"bench-{i}",
                "--poll-interval",
                str(settings.poll_interval),
                "--worker-concurrency",
                str(settings.worker_concurrency),
                *([] if settings.pre_ping else ["--no-pre-ping"]),
            ]
            self.procs.append(
                subprocess.Popen(cmd, cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            )
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            if line != "READY":
                self.stop()
                raise RuntimeError(f"DBOS worker process {proc.pid} failed to start (exit {proc.poll()})")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None and not proc.stdin.closed:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(timeout=10)


def run_worker(target: Target, executor_id: str, settings: Settings, ready_out: TextIO) -> None:
    """Body of a child worker process (hidden ``_worker`` scenario)."""
    with dbos_running(target, executor_id, settings):
        ready_out.write("READY\n")
        ready_out.flush()
        sys.stdin.read()  # until the parent closes our stdin


def run_throughput(target: Target, n: int, workers: int, settings: Settings, producer: str) -> dict[str, Any]:
    separate = producer == "separate"
    with dbos_running(target, "bench-0", settings, listen=not separate) as queue:
        assert queue is not None
        children = WorkerProcesses(target, workers if separate else workers - 1, settings)
        try:
            # Warm up the enqueue and result paths outside the clock.
            queue.enqueue(three_steps, -1).get_result(polling_interval_sec=RESULT_POLL_SEC)
            t0 = time.perf_counter()
            handles = [queue.enqueue(three_steps, i) for i in range(n)]
            t_enqueued = time.perf_counter()
            results = [h.get_result(polling_interval_sec=RESULT_POLL_SEC) for h in handles]
            seconds = time.perf_counter() - t0
        finally:
            children.stop()
    bad = [(i, r) for i, r in enumerate(results) if r != i + 3]
    if bad:
        raise RuntimeError(f"wrong results, e.g. {bad[:3]}")
    return {
        "workflows": n,
        "actions": 3 * n,
        "seconds": round(seconds, 4),
        "workflows_per_s": round(n / seconds, 2),
        "actions_per_s": round(3 * n / seconds, 2),
        "enqueue_seconds": round(t_enqueued - t0, 4),
    }


def run_naive(target: Target, n: int, settings: Settings) -> dict[str, Any]:
    """The code a DBOS user writes first: start workflows in a loop (DBOS runs them on its own
    threads in this process), then wait for each result. Cairn's side: the same loop and a gather."""
    with dbos_running(target, "bench-0", settings, register=False):
        DBOS.start_workflow(three_steps, -1).get_result()  # warm-up
        t0 = time.perf_counter()
        starts: list[float] = []
        handles = []
        for i in range(n):
            s0 = time.perf_counter()
            handles.append(DBOS.start_workflow(three_steps, i))
            starts.append(time.perf_counter() - s0)
        results = [h.get_result() for h in handles]
        seconds = time.perf_counter() - t0
    if results != [i + 3 for i in range(n)]:
        raise RuntimeError("wrong results")
    starts.sort()
    return {
        "workflows": n,
        "seconds": round(seconds, 4),
        "workflows_per_s": round(n / seconds, 2),
        "start_p50_ms_busy": round(percentile(starts, 50) * 1000, 3),
    }


def run_fanout(target: Target, actions: int, settings: Settings) -> dict[str, Any]:
    with dbos_running(target, "bench-0", settings):
        DBOS.start_workflow(fan_out, 3).get_result()  # warm-up
        t0 = time.perf_counter()
        total = DBOS.start_workflow(fan_out, actions).get_result()
        seconds = time.perf_counter() - t0
    expected = actions * (actions + 1) // 2
    if total != expected:
        raise RuntimeError(f"fan_out({actions}) returned {total}, expected {expected}")
    return {"actions": actions, "seconds": round(seconds, 4), "actions_per_s": round(actions / seconds, 2)}


def run_pickup(target: Target, runs: int, settings: Settings) -> dict[str, Any]:
    with dbos_running(target, "bench-0", settings) as queue:
        assert queue is not None
        queue.enqueue(pickup, -1).get_result(polling_interval_sec=RESULT_POLL_SEC)  # warm-up
        latencies: list[float] = []
        rng = random.Random(1234)
        for i in range(runs):
            # Idle ~0.3 s, plus a random fraction of one poll period: a fixed gap would lock the
            # enqueue to the same phase of DBOS's poll timer and measure one point of it.
            time.sleep(0.3 + rng.uniform(0.0, settings.poll_interval))
            t0 = time.time()
            handle = queue.enqueue(pickup, i)
            first_step_started = handle.get_result(polling_interval_sec=RESULT_POLL_SEC)
            latencies.append(first_step_started - t0)
    summary = latency_summary(latencies)
    return {"runs": runs, "p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"], "mean_ms": summary["mean_ms"]}


# --- db_cost -------------------------------------------------------------------------------


@dataclass
class Phase:
    commits: int
    statements: int | None
    seconds: float
    own_queries: int


def wait_all_done(target: Target, n: int) -> int:
    """Poll the workflow table on a counted connection; returns the number of queries it ran."""
    queries = 0
    with psycopg.connect(target.url, autocommit=True) as conn:
        while True:
            queries += 1
            row = conn.execute(
                "SELECT count(*) FROM dbos.workflow_status WHERE queue_name = %s AND status = 'SUCCESS'", (QUEUE_NAME,)
            ).fetchone()
            if row and row[0] >= n:
                return queries
            time.sleep(0.02)


def measured_phase(target: Target, reader: StatsReader, settings: Settings, n: int, idle_for: float | None) -> Phase:
    """One launch..destroy cycle: enqueue n workflows and wait, or (n == 0) idle for idle_for s."""
    before, before_st = reader.settled()
    own_queries = 0
    t0 = time.perf_counter()
    with dbos_running(target, "bench-0", settings, register=False):
        # The queue already exists: DBOS's queue thread picks it up at launch.
        wait_for_queue_worker()
        if n:
            queue = DBOS.retrieve_queue(QUEUE_NAME)
            assert queue is not None
            for i in range(n):
                queue.enqueue(three_steps, i)
            own_queries = wait_all_done(target, n)
        elif idle_for:
            time.sleep(max(0.0, idle_for - (time.perf_counter() - t0)))
        seconds = time.perf_counter() - t0
    after, after_st = reader.settled()
    statements = None if before_st is None or after_st is None else after_st - before_st - own_queries
    return Phase(after - before - own_queries, statements, seconds, own_queries)


def run_db_cost(target: Target, n: int, settings: Settings) -> dict[str, Any]:
    if target.backend != "postgres":
        return {"error": "db_cost reads pg_stat_database: PostgreSQL only"}
    # Set up schema, application version and queue, and warm up, outside the measurement.
    with dbos_running(target, "bench-0", settings) as queue:
        assert queue is not None
        queue.enqueue(three_steps, -1).get_result(polling_interval_sec=RESULT_POLL_SEC)
    # Workflows of this run are counted by status; start from a clean slate.
    with psycopg.connect(target.url, autocommit=True) as conn:
        conn.execute("DELETE FROM dbos.workflow_status WHERE queue_name = %s", (QUEUE_NAME,))
    reader = StatsReader(target.url)
    try:
        launch_only = measured_phase(target, reader, settings, 0, None)
        busy = measured_phase(target, reader, settings, n, None)
        idle = measured_phase(target, reader, settings, 0, busy.seconds)
    finally:
        reader.close()
    log(f"db_cost phases: launch={launch_only} busy={busy} idle={idle}")
    net = (busy.commits - idle.commits) / n
    gross = (busy.commits - launch_only.commits) / n
    background = (idle.commits - launch_only.commits) / max(idle.seconds - launch_only.seconds, 1e-9)
    statements: float | None = None
    if busy.statements is not None and idle.statements is not None:
        statements = round((busy.statements - idle.statements) / n, 2)
    return {
        "workflows": n,
        "commits_per_workflow": round(net, 2),
        "statements_per_workflow": statements,
        "gross_commits_per_workflow": round(gross, 2),
        "background_commits_per_s": round(background, 1),
        "seconds": round(busy.seconds, 3),
    }


# --------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.dbos_driver",
        description="Run one benchmark scenario with DBOS and print one JSON line on stdout.",
    )
    parser.add_argument("scenario", choices=[*SCENARIOS, "_worker"])
    parser.add_argument("--db", required=True, help="postgresql://... or sqlite:///path (reset first!)")
    parser.add_argument("--runs", type=int, help="workflows/runs (defaults per scenario)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes for throughput")
    parser.add_argument("--actions", type=int, default=1000, help="fan-out width")
    parser.add_argument("--poll-interval", type=float, default=DEFAULT_POLL_INTERVAL_SEC)
    parser.add_argument("--worker-concurrency", type=int, default=DEFAULT_WORKER_CONCURRENCY)
    parser.add_argument(
        "--no-pre-ping",
        action="store_true",
        help="turn off SQLAlchemy's pool pre-ping, which DBOS enables (one SELECT 1 per pool checkout)",
    )
    parser.add_argument(
        "--producer",
        choices=["worker", "separate"],
        default="worker",
        help="throughput: enqueue from a process that is one of the W workers (default), or from an"
        " extra process that dequeues nothing",
    )
    parser.add_argument("--executor-id", default="bench-0", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def run_scenario(args: argparse.Namespace, target: Target, settings: Settings) -> tuple[int | None, dict[str, Any]]:
    runs: int = args.runs if args.runs is not None else DEFAULT_RUNS[args.scenario]
    scenarios: dict[str, Callable[[], tuple[int | None, dict[str, Any]]]] = {
        "sequential": lambda: (None, run_sequential(target, runs, settings)),
        "throughput": lambda: (args.workers, run_throughput(target, runs, args.workers, settings, args.producer)),
        "naive": lambda: (1, run_naive(target, runs, settings)),
        "fanout": lambda: (1, run_fanout(target, args.actions, settings)),
        "pickup": lambda: (1, run_pickup(target, runs, settings)),
        "db_cost": lambda: (1, run_db_cost(target, runs, settings)),
    }
    return scenarios[args.scenario]()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    target = Target.parse(args.db)
    settings = Settings(args.poll_interval, args.worker_concurrency, pre_ping=not args.no_pre_ping)
    real_stdout = sys.stdout
    # Anything DBOS or a library prints must not corrupt the one JSON line.
    with contextlib.redirect_stdout(sys.stderr):
        if args.scenario == "_worker":
            run_worker(target, args.executor_id, settings, real_stdout)
            return 0
        workers: int | None = args.workers if args.scenario == "throughput" else None
        try:
            target.reset()
            log(f"{args.scenario} on {target.backend} (pid {os.getpid()})")
            workers, metrics = run_scenario(args, target, settings)
            status = 1 if "error" in metrics else 0
        except Exception as exc:  # report, don't fake: the caller prints the error
            log(f"{args.scenario} failed: {exc!r}")
            metrics, status = {"error": f"{type(exc).__name__}: {exc}"}, 1
    record = {
        "engine": "dbos",
        "backend": target.backend,
        "scenario": args.scenario,
        "workers": workers,
        "metrics": metrics,
    }
    real_stdout.write(json.dumps(record) + "\n")
    real_stdout.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
