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
