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


# --- a parent that stops waiting for a child it awaited: the child is cancelled with the wait ---


@workflow
async def gives_up_on_kid(key: str) -> str:
    try:
        return str(await asyncio.wait_for(cairn.child(kid_waits, 1, id=f"{key}-kid"), timeout=0.3))
    except TimeoutError:
        return "gave up"


@workflow
async def middle(key: str) -> int:
    return int(await cairn.child(kid_waits, 2, id=f"{key}-grandkid"))


@workflow
async def gives_up_on_family(key: str) -> str:
    try:
        return str(await asyncio.wait_for(cairn.child(middle, key, id=f"{key}-kid"), timeout=0.3))
    except TimeoutError:
        return "gave up"


@workflow
async def cancels_kid_task(key: str) -> str:
    task = asyncio.create_task(cairn.child(kid_waits, 1, id=f"{key}-kid"))
    await cairn.wait_for_signal("stop")
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return "stopped"
    return "not stopped"


@workflow
async def leaves_kid_task(key: str) -> str:
    """Ends while a task still awaits its child: the child goes with it (as a Temporal child under
    the default parent close policy); `start_child` is the way to leave one running."""
    waiting = asyncio.create_task(cairn.child(kid_waits, 1, id=f"{key}-kid"))
    await cairn.wait_for_signal("stop")
    return "left" if not waiting.done() else "not left"


@workflow
async def gives_up_on_detached_kid(key: str) -> str:
    handle = cairn.start_child(kid_waits, 1, id=f"{key}-kid")
    try:
        return str(await asyncio.wait_for(handle.result(), timeout=0.3))
    except TimeoutError:
        return "still going"


@workflow
async def kid_naps(seconds: float) -> int:
    await cairn.sleep(seconds)
    return 1


@workflow
async def races_kid(key: str, nap: float, patience: float) -> str:
    try:
        return str(await asyncio.wait_for(cairn.child(kid_naps, nap, id=f"{key}-kid"), timeout=patience))
    except TimeoutError:
        return "gave up"


BROKEN = {"on": True}


@action(retry=cairn.RetryPolicy(attempts=1))
def fragile(x: int) -> int:
    if BROKEN["on"]:
        raise RuntimeError(f"fragile is broken for {x}")
    return x


@workflow
async def fails_beside_a_kid(key: str) -> list[int]:
    """Fails while a child it awaits is still going: a retry after the fix must get the child's
    result, whether the child ended before the retry or after it."""
    return list(await asyncio.gather(cairn.child(kid_waits, 1, id=f"{key}-kid"), fragile(2)))


@workflow
async def awaits_shared_kid(child_id: str) -> str:
    try:
        return str(await cairn.child(kid_waits, 1, id=child_id))
    except cairn.RunIdTaken as exc:
        return f"taken: {exc}"


@workflow
async def starts_kid_then_joins(key: str) -> int:
    handle = cairn.start_child(kid_waits, 2, id=f"{key}-kid")
    await cairn.wait_for_signal("join")
    return int(await handle.result())


@workflow
async def awaits_a_kid(x: int) -> int:
    return int(await cairn.child(kid_waits, x))  # the child's id derived from the parent's


@workflow
async def awaits_start_child(key: str) -> list[int]:
    """Temporal's shape: `handle = await start_child(...)`, then `await handle` for the result; the
    child started once."""
    handle = await cairn.start_child(kid_quick, 1, id=f"{key}-kid")
    return [await handle, await handle.result()]


@workflow
async def returns_a_handle(key: str):  # type: ignore[no-untyped-def]  # untyped: nothing but the encoder checks it
    """`await` on the handle `start_child` returned (not awaited itself) gives a handle, not the
    result: returning it by mistake is refused by name, never stored as {"id": ..., "workflow": ...}."""
    handle = cairn.start_child(kid_quick, 1, id=f"{key}-kid")
    return await handle


@workflow
async def awaits_a_child_named(child_id: str, then: str = "") -> str:
    """Awaits a child of this same workflow under `child_id`; that child, given `then`, awaits one
    under `then` (an ancestor's id, to make a cycle)."""
    if not child_id:
        return "leaf"
    try:
        return str(await cairn.child(awaits_a_child_named, then, id=child_id))
    except cairn.RunIdTaken as exc:
        return f"taken: {exc}"
