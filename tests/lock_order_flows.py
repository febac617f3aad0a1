"""Families of runs that write into each other's rows at once (tests/behaviour/test_commit_lock_order.py):
a parent and its child signalling each other, twins signalling each other, a parent giving up on
children as they end. Every id is the caller's, so that each run can name the others."""

from __future__ import annotations

import asyncio

import cairn
from cairn import workflow


@workflow
async def volley(parent_id: str, n: int) -> int:
    """Answers its parent `n` times: each answer is sent before the next question is awaited, so
    the two runs' commits send into each other's rows at about the same time."""
    for i in range(n):
        await cairn.send_signal(parent_id, "pong", i)
        await cairn.wait_for_signal("ping")
    return n


@workflow
async def rally(key: str, n: int) -> list[int]:
    """Started with id `key`: awaits a `volley` child while asking it `n` questions."""
    child_id = f"{key}:v"

    async def ask() -> int:
        for i in range(n):
            await cairn.send_signal(child_id, "ping", i)
            await cairn.wait_for_signal("pong")
        return n

    answered, asked = await asyncio.gather(cairn.child(volley, key, n, id=child_id), ask())
    return [answered, asked]


@workflow
async def twin(other: str, n: int) -> int:
    """Greets its twin and waits for its greeting, `n` times."""
    for i in range(n):
        await cairn.send_signal(other, "hi", i)
        await cairn.wait_for_signal("hi")
    return n


@workflow
async def twins(key: str, n: int) -> list[int]:
    """Two children started in one commit (each exists before either greets the other)."""
    a, b = f"{key}:a", f"{key}:b"
    return list(await asyncio.gather(cairn.child(twin, b, n, id=a), cairn.child(twin, a, n, id=b)))


@workflow
async def nap(seconds: float) -> str:
    await cairn.sleep(seconds)
    return "woke"


@workflow
async def impatient(key: str, naps: list[float], patience: float) -> list[str]:
    """Awaits children that sleep about as long as it waits for each: one that has not ended in time
    is cancelled by the parent's commit, as its own end (and its siblings') is committed."""

    async def one(i: int, seconds: float) -> str:
        try:
            return await asyncio.wait_for(cairn.child(nap, seconds, id=f"{key}:{i}"), patience)
        except TimeoutError:
            return "timeout"

    return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(naps))))
