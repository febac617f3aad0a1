"""Workflows for tests/behaviour/test_wedge_audit.py: runs that could get stuck (a worker killed by
an action's `sys.exit()`, an error too big to store, an activation that fails, a workflow awaiting
nothing durable) and must instead end in a visible state with the reason."""

from __future__ import annotations

import asyncio
import collections
import sys

import cairn
from cairn import RetryPolicy, Workflow, action, workflow

CALLS: collections.Counter[str] = collections.Counter()
BROKEN = {"on": True}
"""What a deploy fixes: while on, `Fragile`'s property cannot be shown and `waits_on_nothing` waits
for an asyncio.Event nobody sets."""

BIG = 3 * 1024 * 1024
"""Over the default payload limit (2 MiB)."""


class OwnBaseError(BaseException):
    """An exception type of the user's that is not an Exception."""


@action(retry=RetryPolicy(attempts=1))
def exits() -> int:
    sys.exit(3)  # a library's CLI entry point called from an action, say


@action(retry=RetryPolicy(attempts=1))
async def exits_async() -> int:
    raise SystemExit(4)


@action(retry=RetryPolicy(attempts=1))
def interrupted() -> int:
    raise KeyboardInterrupt


@action(retry=RetryPolicy(attempts=1))
def own_base_error() -> int:
    raise OwnBaseError("not an Exception")


@action(retry=RetryPolicy(attempts=1))
async def cancels_itself() -> int:
    raise asyncio.CancelledError  # of its own: nobody cancelled the attempt


@workflow
async def catches(which: str) -> str:
    """Runs one of the actions above and says what the workflow got."""
    calls = {
        "exits": exits,
        "exits_async": exits_async,
        "interrupted": interrupted,
        "own_base_error": own_base_error,
        "cancels_itself": cancels_itself,
    }
    try:
        await calls[which]()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "returned"


@workflow
async def workflow_exits() -> int:
    raise SystemExit(5)


@workflow
async def workflow_interrupted() -> int:
    raise KeyboardInterrupt


@workflow
async def quick(x: int) -> int:
    return x + 1


@action(retry=RetryPolicy(attempts=1))
def huge_error() -> int:
    raise ValueError("e" * BIG)  # a message quoting a whole response body


@action(retry=RetryPolicy(attempts=1))
def nan_error() -> int:
    raise ValueError(float("nan"), "a NaN among the arguments")


@workflow
async def survives_unstorable_errors() -> list[str]:
    got = []
    for call in (huge_error, nan_error):
        try:
            await call()
        except ValueError as exc:
            got.append(f"{type(exc).__name__} {len(str(exc))}")
    return got


@workflow
async def raises_huge() -> int:
    raise ValueError("w" * BIG)


@action
def count(x: int) -> int:
    CALLS[f"count:{x}"] += 1
    return x + 1


class Unshowable:
    """A property the engine fails on while BROKEN (tests/behaviour/test_wedge_audit.py breaks the
    engine's recording of properties for it: a repr that raises no longer fails a run)."""


@workflow
class Fragile(Workflow):
    """Its third activation fails in the engine (its recording of the properties, broken by the test)."""

    async def run(self, x: int) -> int:
        a = await count(x)
        b = await count(a)
        self.odd = Unshowable()
        c: int = await count(b)
        return c


@workflow
async def waits_on_nothing(x: int) -> int:
    a = await count(x)
    if BROKEN["on"]:
        await asyncio.Event().wait()  # nothing durable: nothing will ever set it
    b: int = await count(a)
    return b


@workflow
async def parent_of_quick(x: int) -> int:
    return int(await cairn.child(quick, x))
