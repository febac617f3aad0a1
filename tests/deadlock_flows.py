"""Workflows for tests/behaviour/test_deadlock.py: async workflow code that runs without awaiting.

`STUCK["on"]` is the bug: while it is set, these workflows loop on the worker's event loop thread
without ever awaiting. A test "deploys the fix" by clearing it, then retries the paused run.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path

import cairn

STUCK = {"on": True}
CALLS: collections.Counter[str] = collections.Counter()


@cairn.action(id="tests.deadlock.add_one")
async def add_one(x: int) -> int:
    CALLS[f"add_one:{x}"] += 1
    return x + 1


@cairn.workflow(id="tests.deadlock.spins")
async def spins(x: int) -> int:
    y = await add_one(x)
    while STUCK["on"]:  # the busy loop: spins
        pass
    return await add_one(y)


@cairn.workflow(id="tests.deadlock.waits")
async def waits(x: int) -> int:
    y = await add_one(x)
    while STUCK["on"]:  # the busy loop: waits
        pass
    await cairn.wait_for_signal("go")
    return await add_one(y)


@cairn.workflow(id="tests.deadlock.swallows")
async def swallows(x: int) -> str:
    try:
        while STUCK["on"]:  # the busy loop: swallows
            pass
    except Exception as exc:  # what a user writes around code that may fail: not a deadlock's business
        return f"swallowed {type(exc).__name__}"
    return f"done {await add_one(x)}"


@cairn.workflow(id="tests.deadlock.swallows_all")
async def swallows_all(x: int) -> str:
    try:
        while STUCK["on"]:  # the busy loop: swallows_all
            pass
    except BaseException as exc:  # on purpose: even this does not save the activation
        return f"swallowed {type(exc).__name__}"
    return f"done {x}"


CHATTY = logging.getLogger("tests.deadlock.chatty")


@cairn.workflow(id="tests.deadlock.chatty")
async def chatty(x: int) -> int:
    """A busy loop that spends most of its time in logging, which takes its handlers' locks."""
    n = x
    while STUCK["on"]:  # the busy loop: chatty
        CHATTY.info("still going: %d", n)
        n += 1
    return n


@cairn.workflow(id="tests.deadlock.quick")
async def quick(x: int) -> int:
    return await add_one(await add_one(x))


@cairn.workflow(id="tests.deadlock.compute")
async def compute(n: int) -> int:
    """Pure computation for `n` iterations, no await: one activation of about n * 50 ns."""
    total = 0
    for i in range(n):
        total += i
    return total


def line_of(marker: str) -> int:
    """The line number of the busy loop marked `# the busy loop: <marker>` in this file."""
    for number, line in enumerate(Path(__file__).read_text().splitlines(), start=1):
        if line.rstrip().endswith(f"# the busy loop: {marker}"):
            return number
    raise LookupError(marker)


@cairn.workflow(id="tests.deadlock.backtracks")
async def backtracks(n: int) -> bool:
    """A regular expression that backtracks: one call into C, holding the GIL, which the watchdog's
    thread cannot interrupt (nor even run beside)."""
    import re

    y = await add_one(n)
    return re.match(r"(a+)+$", "a" * y + "b") is not None
