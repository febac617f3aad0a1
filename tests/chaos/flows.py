"""The chaos suite's workflows. Every action appends two lines to the file CAIRN_EFFECTS_LOG: "S" when
an execution starts and "E" when it ends ("C" when an async one is cancelled), each with run, step,
attempt, pid and time, so the suite can count executions (duplicates), tell which process ran the
attempt the journal kept, and see two executions of one action overlap."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import cairn
from cairn import action, workflow


def effect(kind: str) -> None:
    """One small O_APPEND write: whole lines even with several processes writing."""
    ctx = cairn.context()
    line = f"{kind} {ctx.run_id} {ctx.step} {ctx.attempt} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(os.environ["CAIRN_EFFECTS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _work_seconds() -> float:
    return float(os.environ.get("CAIRN_CHAOS_ACTION_SECONDS", "0"))


@action
def bump(x: int) -> dict[str, int]:
    """x + 1, and the pid of the process whose result the journal kept."""
    effect("S")
    time.sleep(_work_seconds())  # the action's "work"
    effect("E")
    return {"value": x + 1, "pid": os.getpid()}


@workflow
async def five_steps(n: int) -> int:
    """Five actions in a row: 5n + 15."""
    total = 0
    for i in range(5):
        total += (await bump(n + i))["value"]
    return total


def expected_five_steps(n: int) -> int:
    return 5 * n + 15


@action
def sync_work(seconds: float) -> dict[str, Any]:
    effect("S")
    time.sleep(seconds)
    effect("E")
    return {"value": seconds, "pid": os.getpid()}


@action
async def async_work(seconds: float) -> dict[str, Any]:
    effect("S")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        effect("C")  # stopped before its end: this execution is over here
        raise
    effect("E")
    return {"value": seconds, "pid": os.getpid()}


@workflow
async def one_action(kind: str, seconds: float) -> float:
    """One sync or async action of a given length (for the SIGTERM scenario)."""
    done = await (sync_work(seconds) if kind == "sync" else async_work(seconds))
    return float(done["value"])


@workflow
async def echo(value: Any) -> Any:
    """Returns its input untouched, through an action (for the bad-input round trips)."""
    done = await sync_work(0.0)
    assert done["value"] == 0.0
    return value
