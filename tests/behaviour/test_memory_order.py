"""Actions of one `gather` writing the same memory key: the run's memory as stored (what
`handle.memory()`, the API and the dashboard show, and what a later action reads) is the value the
workflow reads. Results folded into one activation were handed to the workflow in step order but
their memory written in the order they arrived: the two disagreed (the workflow read 7, the store
said 3). The actions here finish last step first, as slow early steps do."""

from __future__ import annotations

import asyncio
import collections

import pytest

import cairn
from cairn import action, workflow

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(60)]

TURNS: collections.defaultdict[str, dict[int, asyncio.Event]] = collections.defaultdict(dict)
WIDTH = 8


@pytest.fixture(autouse=True)
def _fresh_turns() -> None:
    TURNS.clear()


@action
async def write_in_turn(tag: str, i: int) -> int:
    turns = TURNS[tag]
    if i + 1 < WIDTH:  # the last step writes first, then each the one before it
        await turns.setdefault(i + 1, asyncio.Event()).wait()
    cairn.memory.add(key="k", value=i)
    turns.setdefault(i, asyncio.Event()).set()
    return i


@action
async def read_k() -> int:
    return int(cairn.memory.get("k"))


@workflow
async def gather_writes(tag: str) -> dict[str, int]:
    await asyncio.gather(*(write_in_turn(tag, i) for i in range(WIDTH)))
    return {"workflow": int(cairn.memory.get("k")), "later_action": await read_k()}


async def test_the_stored_memory_is_what_the_workflow_reads(client: cairn.Client) -> None:
    handles = [await client.start(gather_writes, f"t{n}") for n in range(10)]
    for handle in handles:
        seen = await handle.result(timeout=30)
        stored = (await handle.memory())["k"]
        assert seen == {"workflow": stored, "later_action": stored}, handle.id
