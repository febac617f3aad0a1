"""Children started without waiting (`cairn.start_child`), then waited for (`handle.result()`)."""

from __future__ import annotations

import asyncio

import cairn
from cairn import action, workflow
from tests.flows import add_one


@action
async def refuse(x: int) -> int:
    raise ValueError(f"no {x}")


@workflow
async def kid_waits(x: int) -> int:
    return x * 10 + int(await cairn.wait_for_signal("go"))


@workflow
async def kid_quick(x: int) -> int:
    return await add_one(x)


@workflow
async def kid_fails(x: int) -> int:
    return await refuse(x)


@workflow
async def joins_later(key: str, x: int) -> list[int]:
    """Starts two children, waits to be told, then takes one that has ended and one still going."""
    slow = cairn.start_child(kid_waits, x, id=f"{key}-slow")
    quick = cairn.start_child(kid_quick, x, id=f"{key}-quick")
    await cairn.wait_for_signal("join")
    ended = await quick.result()
    going = await slow.result()
    return [going, ended]


@workflow
async def joins_a_failure(key: str) -> str:
    handle = cairn.start_child(kid_fails, 3, id=f"{key}-kid")
    try:
        await handle.result()
    except ValueError as exc:
        return f"caught: {exc}"
    return "no error"


@workflow
async def joins_a_pruned_child(key: str) -> str:
    handle = cairn.start_child(kid_quick, 1, id=f"{key}-kid")
    await cairn.wait_for_signal("join")
    try:
        await handle.result()
    except cairn.RunNotFound as exc:
        return f"gone: {exc}"
    return "found"


@workflow
async def joins_at_once(key: str) -> int:
    """Waits for a child it has just started: the join races the child's own end."""
    handle = cairn.start_child(kid_quick, 1, id=f"{key}-kid")
    return await handle.result()


@workflow
async def joins_twice_at_once(key: str) -> list[int]:
    handle = cairn.start_child(kid_waits, 2, id=f"{key}-kid")
    return list(await asyncio.gather(handle.result(), handle.result()))


@workflow
async def awaits_one_id_twice_at_once(key: str) -> list[int]:
    child_id = f"{key}-kid"
    return list(await asyncio.gather(cairn.child(kid_waits, 5, id=child_id), cairn.child(kid_waits, 5, id=child_id)))
