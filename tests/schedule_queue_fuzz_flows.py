"""Queues and workflows for the randomized schedule and queue test (tests/behaviour/test_schedule_queue_fuzz.py).

Every piece of work appends a line to a log file named in its arguments (JSON: the run, what
happened, when by the machine's clock, in which process), so a test can tell how many runs of a
queue went at once across worker processes, never by sleeping to wait. A run is certainly in flight
between two of its own marks (it was claimed before its first action ran, and has not ended before
its last action ran), unless it failed in between (the "fail" mark) or was cancelled: the test
counts those stretches, a lower bound of what really went at once, so an overlap it finds is real.

A scheduled run's marks use `CLOCK`, the test's skipping clock when it sets one (its workers are in
its own process then), so that they compare with the database's times of that clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import cairn
from cairn import RetryPolicy, action, workflow
from cairn.clock import SYSTEM, Clock

CONC = cairn.Queue("fz-conc", concurrency=2)
KEYED = cairn.Queue("fz-keyed", concurrency=3, per_key=1)
PRIO = cairn.Queue("fz-prio", concurrency=1, priority=True)
ACTS = cairn.Queue("fz-acts", concurrency=2)
"""An action queue: at most two attempts of `hold_limited` at once, whichever runs they belong to."""
RATED = cairn.Queue("fz-rated", concurrency=4, rate_limit=cairn.RateLimit(5, per=timedelta(seconds=1)))

CLOCK: list[Clock] = [SYSTEM]
"""The clock scheduled runs mark their times with (the test's own when it drives time)."""


class Doomed(Exception):
    """What `flaky` raises until the test deploys the fix (a file beside the log)."""


def append(log: str, run: str, kind: str, at: float | None = None) -> float:
    """One line of the log; small appends of one line are atomic across processes."""
    t = time.time() if at is None else at
    line = json.dumps({"run": run, "kind": kind, "t": t, "pid": os.getpid()}) + "\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return t


def read_log(log: str | Path) -> list[dict[str, Any]]:
    path = Path(log)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def fixed(log: str) -> bool:
    return Path(log + ".fixed").exists()


@action
async def mark(log: str, run: str, kind: str) -> float:
    return append(log, run, kind)


@action
async def hold(log: str, run: str, seconds: float) -> str:
    """Work that takes `seconds` (its duration, not a wait for anything)."""
    append(log, run, "hold")
    await asyncio.sleep(seconds)
    append(log, run, "held")
    return run


@action(queue=ACTS)
async def hold_limited(log: str, run: str, seconds: float) -> str:
    """`hold` through an action queue of concurrency 2 ("act" and "acted" mark the attempt)."""
    append(log, run, "act")
    await asyncio.sleep(seconds)
    append(log, run, "acted")
    return run


@action(retry=RetryPolicy(attempts=1))
async def flaky(log: str, run: str) -> str:
    """Fails for good until the fix is deployed; a failure is marked before it is raised."""
    if not fixed(log):
        append(log, run, "fail")
        raise Doomed(f"{run} is broken")
    append(log, run, "flaky")
    return run


@workflow
async def job(log: str, run: str, plan: list[Any]) -> str:
    """A queued job: marks its beginning, takes the steps of its plan in turn, marks its end."""
    await mark(log, run, "begin")
    for kind, arg in plan:
        if kind == "hold":
            await hold(log, run, float(arg))
        elif kind == "act":
            await hold_limited(log, run, float(arg))
        elif kind == "sleep":
            await cairn.sleep(float(arg))
        elif kind == "gate":
            await cairn.wait_for_signal("go")
            await mark(log, run, "gated")
        elif kind == "flaky":
            await flaky(log, run)
    await mark(log, run, "end")
    return run


# --- schedules ------------------------------------------------------------------------------------


@action
async def stamp(log: str, kind: str) -> float:
    """A scheduled run's mark, at the test's clock."""
    return append(log, str(cairn.context().run_id), kind, CLOCK[0].now())


@workflow
async def scheduled(log: str, gated: bool) -> str:
    """A scheduled run: marks its beginning, waits for "go" when `gated`, marks its end."""
    await stamp(log, "begin")
    if gated:
        await cairn.wait_for_signal("go")
    await stamp(log, "end")
    return log
