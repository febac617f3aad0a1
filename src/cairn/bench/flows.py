"""The benchmark's workflows: the same shapes the competitor drivers implement."""

from __future__ import annotations

import asyncio
import time

import cairn
from cairn import action, workflow


@action
async def add_one(x: int) -> int:
    return x + 1


@action
async def started_at(x: int) -> float:
    """Returns the moment the action started: pickup latency is this minus the start request."""
    return time.time()


@workflow
async def three_steps(x: int) -> int:
    value: int = await add_one(await add_one(await add_one(x)))
    return value


@workflow
async def fan_out(n: int) -> int:
    values: list[int] = await asyncio.gather(*(add_one(i) for i in range(n)))
    return sum(values)


@workflow
async def pickup(x: int) -> float:
    began: float = await started_at(x)
    return began


@workflow
async def sleeper(seconds: float) -> None:
    await cairn.sleep(seconds)


@workflow
async def signal_loop(n: int) -> int:
    """Waits for `n` signals one at a time, as a run that lives on its messages does."""
    total = 0
    for _ in range(n):
        total += int(await cairn.wait_for_signal("tick"))
    return total
