"""Workflows for the process-level recovery tests; side effects go to the file CAIRN_EFFECTS_LOG."""

from __future__ import annotations

import asyncio
import os
import time

import cairn
from cairn import action, workflow


def effect(line: str) -> None:
    with open(os.environ["CAIRN_EFFECTS_LOG"], "a") as f:
        f.write(line + "\n")


@action
def square(i: int) -> int:
    effect(f"start {i}")
    if i == int(os.environ.get("CAIRN_SLOW_STEP", "-1")):
        time.sleep(1.0)  # the window in which the test kills the worker
    effect(f"done {i}")
    return i * i


@workflow
async def long_chain(n: int) -> int:
    total = 0
    for i in range(n):
        total += await square(i)
    await cairn.sleep(0.1)
    fanned = await asyncio.gather(*(square(100 + i) for i in range(3)))
    return total + sum(fanned)
