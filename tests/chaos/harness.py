"""The chaos suite's parts: worker processes started as users start them, the effects file, the
suite's parameters (short in CI, long behind scripts/chaos) and the figures each scenario records."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LONG = os.environ.get("CAIRN_CHAOS") == "long"
"""The long parameters run only when asked for (scripts/chaos --long); CI runs the short ones."""

FLOWS = "tests.chaos.flows"


def pick(short: Any, long: Any) -> Any:
    """A scenario parameter: its short (CI) or long value."""
    return long if LONG else short


@dataclass(frozen=True, slots=True)
class Effect:
    """One line of the effects file: an execution's start ("S"), end ("E") or cancellation ("C")."""

    kind: str
    run_id: str
    step: int
    attempt: int
    pid: int
    at: float


def read_effects(path: Path) -> list[Effect]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        kind, run_id, step, attempt, pid, at = line.split()
        out.append(Effect(kind, run_id, int(step), int(attempt), int(pid), float(at)))
    return out


class Workers:
    """Worker subprocesses (`python -m cairn.cli.main worker ...`), each logging to its own file."""

    def __init__(
        self, db_url: str, tmp: Path, lease: float, poll: float, concurrency: int, extra: Iterable[str] = ()
    ) -> None:
        self.db_url = db_url
        self.tmp = tmp
        self.effects = tmp / "effects.log"
        self.args = ["--lease", str(lease), "--poll", str(poll), "--concurrency", str(concurrency), *extra]
        self.concurrency = concurrency
        self.env = {**os.environ, "CAIRN_EFFECTS_LOG": str(self.effects)}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = 0

    def start(self, env: dict[str, str] | None = None, extra: Iterable[str] = ()) -> subprocess.Popen[bytes]:
        self.started += 1
        log = open(self.tmp / f"worker-{self.started}.log", "wb")  # noqa: SIM115 - the process owns it
        proc = subprocess.Popen(
            [sys.executable, "-m", "cairn.cli.main", "worker", FLOWS, "--db", self.db_url, *self.args, *extra],
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        return (self.tmp / f"worker-{self.procs.index(proc) + 1}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- worker {i + 1}\n{self.log_of(p)[-3000:]}" for i, p in enumerate(self.procs))

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)  # a stopped process ignores SIGKILL until continued
                proc.kill()
            proc.wait(timeout=15)


def resume_times(faults: list[float], effects: list[Effect]) -> list[float]:
    """For each fault (the time it ended), how long until an action next started: a start needs a
    claim committed after the fault (an action already running ends whatever the database does)."""
    ends = sorted(e.at for e in effects if e.kind == "S")
    out = []
    for t in faults:
        later = [at for at in ends if at > t]
        if later:
            out.append(later[0] - t)
    return out


@dataclass
class Figures:
    """What one scenario measured; one JSON line in CAIRN_CHAOS_RESULTS and a row of the table."""

    scenario: str
    backend: str
    runs: int = 0
    kills: int = 0
    restarts: int = 0
    duplicates: int = 0
    lost: int = 0
    stuck: int = 0
    resume_p50: float | None = None
    resume_max: float | None = None
    seconds: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def resumed(self, times: list[float]) -> None:
        if times:
            self.resume_p50 = round(statistics.median(times), 2)
            self.resume_max = round(max(times), 2)


RECORDED: list[Figures] = []


def record(figures: Figures, began: float) -> None:
    """Keep the figures for the end-of-session table, and append them to CAIRN_CHAOS_RESULTS if set."""
    figures.seconds = round(time.monotonic() - began, 1)
    RECORDED.append(figures)
    target = os.environ.get("CAIRN_CHAOS_RESULTS")
    if target:
        line = {"mode": "long" if LONG else "short", **asdict(figures)}
        with open(target, "a") as f:
            f.write(json.dumps(line) + "\n")


COLUMNS = (
    "scenario",
    "backend",
    "runs",
    "kills",
    "restarts",
    "duplicates",
    "lost",
    "stuck",
    "resume_p50",
    "resume_max",
    "seconds",
)


def table(rows: Iterable[dict[str, Any]]) -> str:
    """The figures as a Markdown table (the same one docs/reliability.md shows)."""
    lines = ["| " + " | ".join(COLUMNS) + " | notes |", "|" + " --- |" * (len(COLUMNS) + 1)]
    for row in rows:
        cells = ["-" if row.get(c) is None else str(row.get(c)) for c in COLUMNS]
        notes = ", ".join(f"{k}={v}" for k, v in (row.get("notes") or {}).items())
        lines.append("| " + " | ".join(cells) + f" | {notes} |")
    return "\n".join(lines)
