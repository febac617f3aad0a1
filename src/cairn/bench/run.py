"""`cairn bench`: run the scenarios on each backend, optionally beside DBOS and a raw-SQL reference.

Every scenario gets a fresh database (PostgreSQL: `cairn_bench_<scenario>` on the given server,
dropped and recreated; SQLite: a new file). Competitors run as subprocesses of the drivers in the
repository's `benchmarks/` folder, against their own fresh database on the same server, in the
same run, so the ratios compare like with like on the same machine and moment. With `repeat`, each
scenario runs that many times, Cairn and the competitor in turn, and each keeps its median run: a
virtual machine's speed drifts by tens of percent within minutes, and taking turns puts both
engines through the same drift.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cairn.bench import scenarios

SCENARIOS = (
    "sequential",
    "throughput",
    "naive",
    "start",
    "reads",
    "fanout",
    "pickup",
    "db_cost",
    "backlog",
    "history",
    "signal_loop",
    "memory",
)
REPO = Path(__file__).resolve().parents[3]


def pg_database(server: str, name: str) -> str:
    """Drop and recreate database `name` on the server; return its URL (names come from our own list)."""
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def fresh_url(backend: str, server: str, tag: str, tmp: Path) -> str:
    if backend == "postgres":
        return pg_database(server, f"cairn_bench_{tag}")
    path = tmp / f"{tag}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


def run_driver(module: str, args: Sequence[str]) -> dict[str, Any]:
    """Run a competitor driver from the repository's benchmarks/ folder; it prints one JSON line."""
    if not (REPO / "benchmarks" / f"{module.split('.')[-1]}.py").exists():
        return {"error": "the competitor drivers live in the repository's benchmarks/ folder; run from a checkout"}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:  # a driver that failed but said why still prints its JSON line: keep that reason
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": f"{module} exited with {proc.returncode}: {' | '.join(tail)}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Bench:
    def __init__(
        self,
        backends: Sequence[str],
        server: str,
        scenarios_: Sequence[str],
        workers: Sequence[int],
        compare: Sequence[str],
        runs: int,
        workflows: int,
        sleepers: int,
        console: Console,
        repeat: int = 1,
    ) -> None:
        self.backends = backends
        self.server = server
        self.scenarios = scenarios_
        self.workers = workers
        self.compare = compare
        self.runs = runs
        self.workflows = workflows
        self.sleepers = sleepers
        self.console = console
        self.repeat = repeat
        self.results: list[dict[str, Any]] = []
        self.on_result: Callable[[list[dict[str, Any]]], None] = lambda results: None
        """Called after each scenario with all results so far (so a long run keeps what it measured)."""

    def run(self) -> list[dict[str, Any]]:
        with (
            tempfile.TemporaryDirectory(prefix="cairn-bench-") as tmp,
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            ) as progress,
        ):
            for backend in self.backends:
                for scenario in self.scenarios:
                    for workers in self.workers if scenario == "throughput" else [None]:
                        self._one(progress, Path(tmp), backend, scenario, workers)
            if "raw" in self.compare and "postgres" in self.backends:
                task = progress.add_task("raw SQL queue cycle (postgres)", total=None)
                url = pg_database(self.server, "cairn_bench_raw")
                self.results.append(run_driver("benchmarks.raw_sql", ["--db", url]))
                progress.remove_task(task)
                self.on_result(self.results)
        return self.results

    def _one(self, progress: Progress, tmp: Path, backend: str, scenario: str, workers: int | None) -> None:
        if scenario == "db_cost" and backend != "postgres":
            return
        turns = 1 if scenario == "memory" else self.repeat  # memory takes minutes, and barely drifts
        mine: list[dict[str, Any]] = []
        theirs: list[dict[str, Any]] = []
        for turn in range(turns):
            label = f"{scenario}{f' x{workers}' if workers else ''} ({backend})"
            label += f" {turn + 1}/{turns}" if turns > 1 else ""
            mine.append(self._turn_cairn(progress, tmp, label, backend, scenario, workers))
            if "dbos" in self.compare and scenario in DBOS_SCENARIOS:
                theirs.append(self._turn_dbos(progress, tmp, label, backend, scenario, workers))
        self.results.extend(median_run(runs, scenario) for runs in (mine, theirs) if runs)
        self.on_result(self.results)

    def _turn_cairn(
        self, progress: Progress, tmp: Path, label: str, backend: str, scenario: str, workers: int | None
    ) -> dict[str, Any]:
        task = progress.add_task(f"cairn {label}", total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        tag = f"{scenario}{workers or ''}"
        url = fresh_url(backend, self.server, tag, tmp)
        try:
            result = asyncio.run(self._cairn(scenario, url, workers, tick))
        except Exception as exc:  # a failed scenario is reported, the others still run
            result = scenarios.record(url, scenario, workers, error=f"{type(exc).__name__}: {exc}")
        progress.remove_task(task)
        return result

    def _turn_dbos(
        self, progress: Progress, tmp: Path, label: str, backend: str, scenario: str, workers: int | None
    ) -> dict[str, Any]:
        task = progress.add_task(f"dbos  {label}", total=None)
        tag = f"{scenario}{workers or ''}"
        if backend == "postgres":
            dbos_url = pg_database(self.server, f"dbos_bench_{tag}")
        else:
            dbos_url = f"sqlite:///{tmp}/dbos_{tag}.db"
            for suffix in ("", "-wal", "-shm"):  # each turn starts from an empty database
                Path(f"{tmp}/dbos_{tag}.db{suffix}").unlink(missing_ok=True)
        args = [scenario, "--db", dbos_url]
        if workers:
            args += ["--workers", str(workers)]
        runs = {"sequential": self.runs, "throughput": self.workflows, "naive": self.workflows}.get(scenario)
        if runs is not None:  # the same N on both sides
            args += ["--runs", str(runs)]
        result = run_driver("benchmarks.dbos_driver", args)
        progress.remove_task(task)
        return result

    def _cairn(
        self, scenario: str, url: str, workers: int | None, tick: scenarios.Progress
    ) -> Coroutine[Any, Any, dict[str, Any]]:
        table: dict[str, Callable[[], Coroutine[Any, Any, dict[str, Any]]]] = {
            "sequential": lambda: scenarios.sequential(url, self.runs, tick),
            "throughput": lambda: scenarios.throughput(url, self.workflows, workers or 1, tick),
            "fanout": lambda: scenarios.fanout(url, 1000, tick),
            "pickup": lambda: scenarios.pickup(url, 20, tick),
            "db_cost": lambda: scenarios.db_cost(url, 200, tick),
            "memory": lambda: scenarios.memory(url, self.sleepers, tick),
            "naive": lambda: scenarios.naive(url, self.workflows, tick),
            "start": lambda: scenarios.start(url, self.runs, tick),
            "reads": lambda: scenarios.reads(url, self.runs, tick),
            "backlog": lambda: scenarios.backlog(url, tick),
            "history": lambda: scenarios.history(url, 100_000, tick),
            "signal_loop": lambda: scenarios.signal_loop(url, 1000, tick),
        }
        return table[scenario]()


DBOS_SCENARIOS = ("sequential", "throughput", "naive", "fanout", "pickup", "db_cost")
"""The scenarios DBOS has the same notion of (claims, a start alone, history and a run's wake-ups
are Cairn's own)."""

HEADLINE = {
    "sequential": ("p50_ms", "ms p50", False),
    "throughput": ("workflows_per_s", "workflows/s", True),
    "fanout": ("seconds", "s for 1000 actions", False),
    "pickup": ("p50_ms", "ms p50", False),
    "db_cost": ("commits_per_workflow", "commits/workflow", False),
    "memory": ("ratio", "x idle RSS", False),
    "naive": ("workflows_per_s", "workflows/s", True),
    "start": ("start_p50_ms", "ms p50 start", False),
    "reads": ("describe_p50_ms", "ms p50 describe()", False),
    "backlog": ("ratio_20000_to_100", "x claim cost at 20,000 pending vs 100", False),
    "history": ("sequential_ratio", "x sequential p50 with 100,000 finished runs", False),
    "signal_loop": ("ratio_last_to_first", "x a signal's cost, last 250 of 1,000 vs first 250", False),
    "queue_cycle": ("tasks_per_s", "tasks/s", True),
}


def median_run(runs: Sequence[dict[str, Any]], scenario: str) -> dict[str, Any]:
    """The run whose headline figure is the median (the lower of the two middle ones), with every
    run's figure beside it; runs that failed count only when all did."""
    key = HEADLINE[scenario][0]
    measured = sorted(
        (r for r in runs if isinstance(r.get("metrics", {}).get(key), int | float)), key=lambda r: r["metrics"][key]
    )
    if not measured:
        return runs[0]
    chosen = measured[(len(measured) - 1) // 2]
    if len(runs) == 1:
        return chosen
    return {**chosen, "metrics": {**chosen["metrics"], "of_runs": [r["metrics"][key] for r in measured]}}


def summary_table(results: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="cairn bench")
    for col in ("scenario", "backend", "workers", "cairn", "dbos", "cairn vs dbos", "details"):
        table.add_column(col)
    cairn_rows = [r for r in results if r.get("engine") == "cairn"]
    for row in cairn_rows:
        key, unit, higher_better = HEADLINE[row["scenario"]]
        mine = row["metrics"].get(key)
        other = _match(results, "dbos", row)
        theirs = other["metrics"].get(key) if other else None
        ratio = ""
        if isinstance(mine, int | float) and isinstance(theirs, int | float) and mine and theirs:
            ratio = f"{(mine / theirs) if higher_better else (theirs / mine):.1f}x better"
        details = row["metrics"].get("error") or ", ".join(f"{k}={v}" for k, v in row["metrics"].items() if k != key)
        table.add_row(
            row["scenario"],
            row["backend"],
            str(row["workers"] or ""),
            f"{mine} {unit}" if mine is not None else "-",
            f"{theirs}" if theirs is not None else ("error" if other else "-"),
            ratio,
            details,
        )
    for row in results:
        if row.get("engine") == "raw":
            m = row.get("metrics", {})
            table.add_row(
                "raw SQL queue cycle",
                row.get("backend", ""),
                str(row.get("workers", "")),
                f"{m.get('tasks_per_s')} tasks/s",
                "",
                "",
                "insert + claim + complete, 3 commits",
            )
    return table


def _match(results: Sequence[dict[str, Any]], engine: str, row: dict[str, Any]) -> dict[str, Any] | None:
    """The competitor's record of the same measurement (a record without a worker count, like DBOS's
    in-process sequential run, matches any)."""
    for other in results:
        if (
            other.get("engine") == engine
            and other.get("scenario") == row["scenario"]
            and other.get("backend") == row["backend"]
            and other.get("workers") in (row["workers"], None)
        ):
            return other
    return None
