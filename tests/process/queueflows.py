"""Workflows for the process-level queue tests: each piece of work appends its start and its end,
with the worker's pid and the time, to the file CAIRN_QUEUE_LOG."""

from __future__ import annotations

import asyncio
import os
import time

import cairn
from cairn import action, workflow

SLOT = cairn.Queue("q-proc-slot", concurrency=1)
KEYED = cairn.Queue("q-proc-keyed", per_key=1)


def mark(what: str, label: str) -> None:
    with open(os.environ["CAIRN_QUEUE_LOG"], "a") as f:
        f.write(f"{what} {label} {os.getpid()} {time.time():.6f}\n")


@action
async def occupy(label: str, seconds: float) -> str:
    """Work that takes `seconds` on its first attempt (a test kills its worker meanwhile), a moment after."""
    mark("start", label)
    await asyncio.sleep(seconds if cairn.context().attempt == 1 else 0.05)  # the work's own duration
    mark("end", label)
    return label


@workflow(queue=SLOT)
async def one_at_a_time(label: str, seconds: float) -> str:
    return await occupy(label, seconds)


@workflow(queue=KEYED)
async def one_per_key(label: str, seconds: float) -> str:
    return await occupy(label, seconds)
