"""Workflows that drop action and child calls: by mistake (never awaited), and on purpose (made
now, awaited after a sleep, across a replay)."""

from __future__ import annotations

import asyncio

import cairn
from cairn import action, workflow

CHARGED: list[int] = []


@action
async def charge(cents: int) -> int:
    CHARGED.append(cents)
    return cents


@workflow
async def tiny(x: int) -> int:
    return x


@workflow
async def forgets_to_await(cents: int) -> str:
    charge(cents)  # the bug: nothing is scheduled
    tiny(1)  # nor is this child started
    return "done"


@workflow
async def awaits_later(n: int) -> list[int]:
    """Calls made before a sleep and awaited after it: the copy that made them is dropped while
    the run sleeps (replayed at the wake-up), which must say nothing."""
    calls = [charge(i) for i in range(n)]
    child = tiny(7)
    await cairn.sleep(0.05)
    return [*await asyncio.gather(*calls), await child]


@workflow
async def every_way_of_awaiting(n: int) -> int:
    first = await charge(1)
    task = asyncio.create_task(charge(2))
    both = await asyncio.gather(charge(3), tiny(4))
    late = await asyncio.wait_for(charge(5), timeout=30)
    done, _ = await asyncio.wait([asyncio.ensure_future(charge(6))])
    return first + await task + sum(both) + late + sum(t.result() for t in done) + n
