"""Workflows with a `timeout` (tests/behaviour/test_workflow_timeout.py)."""

from __future__ import annotations

import asyncio

import cairn
from cairn import action, workflow

CANCELLED: set[str] = set()
"""Keys of `napping` attempts that were cancelled while they slept."""


@action
async def napping(key: str, seconds: float) -> float:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        CANCELLED.add(key)
        raise
    return seconds


@workflow(timeout=0.3)
async def sleeps_past_it() -> str:
    await cairn.sleep(30)
    return "late"


@workflow(timeout=0.3)
async def waits_past_it() -> str:
    return str(await cairn.wait_for_signal("go"))


@workflow(timeout=0.3)
async def acts_past_it(key: str) -> float:
    return await napping(key, 30)


@workflow(timeout=30)
async def done_in_time(key: str) -> float:
    return await napping(key, 0)


@workflow
async def survives_its_child(key: str) -> str:
    try:
        await cairn.child(waits_past_it, id=f"{key}-child")
    except cairn.WorkflowTimeout as exc:
        return f"child timed out: {type(exc).__name__}"
    return "child finished"


@workflow
async def waits_forever() -> str:
    return str(await cairn.wait_for_signal("never"))


@workflow(timeout=0.3)
async def outlived_by_its_child(key: str) -> str:
    return await cairn.child(waits_forever, id=f"{key}-child")


@workflow(timeout=3600)
async def waits_an_hour_at_most() -> str:
    return str(await cairn.wait_for_signal("go"))


@workflow(timeout=0.05)
async def races_its_timeout(key: str, seconds: float) -> float:
    return await napping(key, seconds)


@workflow
async def naps_long(key: str) -> float:
    return await napping(key, 30)


ONE_AT_A_TIME = cairn.Queue("q-timeout-one", concurrency=1)


@workflow(timeout=3600, queue=ONE_AT_A_TIME)
async def forty_minutes_in_turn(i: int) -> int:
    """Forty minutes of an hour's timeout, one run at a time: the third starts 80 minutes in."""
    await cairn.sleep(2400)
    return i


FAILING: set[str] = set()
"""Keys whose `fails_while_set` attempts fail."""


@action(retry=cairn.RetryPolicy(attempts=1))
async def fails_while_set(key: str) -> str:
    if key in FAILING:
        raise RuntimeError(f"{key} fails")
    return key


@workflow(timeout=3600)
async def fails_then_waits(key: str) -> str:
    await fails_while_set(key)
    return str(await cairn.wait_for_signal("go"))


@workflow(timeout=3600, on_failure="pause")
async def pauses_then_waits(key: str) -> str:
    await fails_while_set(key)
    return str(await cairn.wait_for_signal("go"))
