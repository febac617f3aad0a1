"""Workflows for the control-plane tests: failures that a "deploy" fixes, gates, versioned code."""

from __future__ import annotations

import threading
from typing import Any

import cairn
from cairn import BackoffPolicy, RetryPolicy, action, workflow
from tests.flows import add_one, called, double

BROKEN = {"on": True}
GATE = threading.Event()


@action(retry=RetryPolicy(attempts=1))
def fragile(x: int) -> int:
    called(f"fragile:{x}")
    if BROKEN["on"]:
        raise RuntimeError(f"fragile is broken for {x}")
    return x * 10


@action
def blocking(x: int) -> int:
    called(f"blocking:{x}")
    GATE.wait(timeout=30)
    return x


@action(retry=RetryPolicy(attempts=3, retry_on=(RuntimeError,)), backoff=BackoffPolicy(base_delay=0.3, jitter=False))
def fails_once(key: str) -> str:
    called(f"fails_once:{key}")
    if cairn.context().attempt == 1:
        raise RuntimeError("first attempt fails")
    return key


@workflow
async def three_then_fragile(x: int) -> int:
    a = await add_one(x)
    b = await add_one(a)
    return await fragile(b)


@workflow(on_failure="pause")
async def pausing(x: int) -> int:
    a = await add_one(x)
    b = await fragile(a)
    return await add_one(b)


@workflow
async def blocked(x: int) -> int:
    return await blocking(x)


@workflow
async def backoff_flow(key: str) -> str:
    return await fails_once(key)


@workflow
async def waits_for_child(x: int) -> Any:
    return await cairn.child(signal_child, x, id=f"child-of-{x}")


@workflow
async def signal_child(x: int) -> Any:
    return await cairn.wait_for_signal("go")


def make_versioned(variant: int) -> Any:
    """1: the original code; 2: a change made without a guard; 3: the same change behind patched()."""

    @workflow(id="tests.versioned")
    async def versioned(x: int) -> list[int]:
        a = await add_one(x)
        await cairn.wait_for_signal("go")
        if variant == 2 or (variant == 3 and cairn.patched("double-instead")):
            b = await double(a)
        else:
            b = await add_one(a)
        await cairn.wait_for_signal("go2")
        return [a, b]

    return versioned
