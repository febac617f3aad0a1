"""Workflows written as users write them with asyncio's constructs and Cairn's durable primitives,
for the tests of SPEC 2's promises (tests/behaviour/test_workflow_promises.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import cairn
from cairn import RetryPolicy, action, workflow


@action
async def label(value: str) -> str:
    return value


@action(retry=RetryPolicy(attempts=1))
async def refuse(message: str) -> str:
    raise ValueError(message)


@action(retry=RetryPolicy(attempts=1))
async def note_then_fail(key: str) -> str:
    cairn.memory.add(key=key, value="written before the failure")
    raise ValueError("failed after writing")


@action
async def note(key: str) -> str:
    cairn.memory.add(key=key, value="kept")
    return key


@workflow
async def act_on_each_done(n: int) -> list[str]:
    """Iterates the `done` set `asyncio.wait` returns, scheduling an action for each."""
    tasks = [asyncio.create_task(label(f"t{i}")) for i in range(n)]
    done, _ = await asyncio.wait(tasks)
    return [await label(f"after-{task.result()}") for task in done]


async def label_twice(key: str) -> str:
    """A plain coroutine of the workflow's own (hashed by address, unlike an action call)."""
    return await label(await label(key))


@workflow
async def first_come_first_served_helpers(n: int) -> list[str]:
    """`asyncio.as_completed` over the workflow's own coroutines, each scheduling two actions."""
    return [await next_done for next_done in asyncio.as_completed([label_twice(f"h{i}") for i in range(n)])]


@workflow
async def first_come_first_served(n: int) -> list[str]:
    """`asyncio.as_completed` starts the calls it is given in the order of a set of them."""
    return [await next_done for next_done in asyncio.as_completed([label(f"c{i}") for i in range(n)])]


@workflow
async def compensate_on_failure(n: int) -> list[str]:
    """A TaskGroup cancels its tasks (a set) when one fails; each cancelled task compensates."""
    undone: list[str] = []

    async def reserve(i: int) -> None:
        try:
            await cairn.wait_for_signal(f"confirm-{i}")
        except asyncio.CancelledError:
            undone.append(await label(f"undo-{i}"))
            raise

    try:
        async with asyncio.TaskGroup() as group:
            for i in range(n):
                group.create_task(reserve(i))
            group.create_task(refuse("no stock"))
    except* ValueError:
        pass
    return undone


@workflow
async def memory_of_a_failed_action(key: str) -> dict[str, Any]:
    with contextlib.suppress(ValueError):
        await note_then_fail(key)
    kept = await note(f"{key}-ok")
    return {"failed": cairn.memory.get(key), "ok": cairn.memory.get(kept)}
