"""Workflows for the graceful-shutdown tests. Each attempt writes `start` and `end` marks (tag,
attempt, pid, wall-clock time) to the file CAIRN_MARKS, so a test can prove no two attempts of one
action ever ran at once, and which process ran what."""

from __future__ import annotations

import asyncio
import os
import time

import cairn
from cairn import action, workflow


def mark(event: str, tag: str) -> None:
    ctx = cairn.context()
    with open(os.environ["CAIRN_MARKS"], "a") as f:
        f.write(f"{event} {tag} {ctx.attempt} {os.getpid()} {time.time():.6f}\n")


def _seconds() -> float:
    return float(os.environ.get("CAIRN_ACTION_SECONDS", "3"))


@action
def slow_sync(tag: str) -> str:
    """A plain `def` action on a thread, which nothing can stop once started."""
    mark("start", tag)
    time.sleep(_seconds())  # the long work a worker is stopped in the middle of
    mark("end", tag)
    return tag


@action
async def slow_async(tag: str) -> str:
    """An async action: long on its first attempt (stopping cancels it), quick when taken over."""
    mark("start", tag)
    try:
        await asyncio.sleep(_seconds() if cairn.context().attempt == 1 else 0.0)
    finally:
        mark("end", tag)
    return tag


def _alive(pid: int) -> bool:
    """Whether the process still runs. A zombie runs nothing: a child that ended after its parent
    (the forkserver) did is reparented to PID 1, which in a container may never reap it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


@action(isolate=True)
def slow_isolated(tag: str) -> str:
    """An isolated action (its marks carry its child's pid): long on its first attempt; a later one
    first notes whether an earlier attempt's process is still alive as it starts."""
    attempt = cairn.context().attempt
    if attempt > 1:
        with open(os.environ["CAIRN_MARKS"]) as f:
            earlier = [line.split() for line in f if line.startswith(f"start {tag} ")]
        alive = [int(pid) for _, _, n, pid, _ in earlier if int(n) < attempt and _alive(int(pid))]
        mark("overlap" if alive else "alone", tag)
    mark("start", tag)
    time.sleep(_seconds() if attempt == 1 else 0.0)
    mark("end", tag)
    return tag


@action
def quick(tag: str) -> str:
    mark("start", tag)
    mark("end", tag)
    return tag


@workflow
async def sync_then_quick(tag: str) -> list[str]:
    first = await slow_sync(tag)
    second = await quick(f"{tag}-next")
    return [first, second]


@workflow
async def async_then_quick(tag: str) -> list[str]:
    first = await slow_async(tag)
    second = await quick(f"{tag}-next")
    return [first, second]


@workflow
async def isolated_then_quick(tag: str) -> list[str]:
    first = await slow_isolated(tag)
    second = await quick(f"{tag}-next")
    return [first, second]
