"""Workflows for the randomized control-plane test (tests/behaviour/test_control_fuzz.py).

A small vocabulary, each piece of which a control operation can land in the middle of: actions that
fail transiently and then succeed, an action that fails for good until a "deploy" fixes it, durable
sleeps of a few milliseconds, signal waits (with and without a timeout) in a loop that counts what
it received, awaited children (`cairn.child`), children started without waiting
(`cairn.start_child`), and `asyncio.gather` over all of these.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import cairn
from cairn import BackoffPolicy, RetryPolicy, Workflow, action, workflow

FIXED = {"half": False, "all": False}
"""Set by the test as it "deploys the fix": `doomed` succeeds from then on for half of the keys
("half", a fix that is not complete), or for all of them."""

FAST = BackoffPolicy(base_delay=0.002, multiplier=2.0, max_delay=0.02, jitter=False)


class Doomed(Exception):
    """What `doomed` raises until the fix is deployed (not a transient error: it fails for good)."""


@action(backoff=FAST)
async def flaky(key: str, fails: int) -> str:
    """Fails `fails` times with a transient error (retried by the default policy), then succeeds."""
    attempt = cairn.context().attempt
    if attempt <= fails:
        raise cairn.TransientError(f"{key}: attempt {attempt} of {fails + 1} fails")
    return f"{key}@{attempt}"


@action(backoff=FAST)
def flaky_sync(key: str, fails: int) -> str:
    """`flaky` as a plain `def` (run on the worker's thread pool)."""
    attempt = cairn.context().attempt
    if attempt <= fails:
        raise ConnectionError(f"{key}: attempt {attempt} of {fails + 1} fails")
    return f"{key}@{attempt}"


@action(retry=RetryPolicy(attempts=2, retry_on=(Doomed,)), backoff=FAST)
def doomed(key: str) -> str:
    """Fails for good (after one retry) until the fix is deployed."""
    if not (FIXED["all"] or (FIXED["half"] and zlib.crc32(key.encode()) % 2 == 0)):
        raise Doomed(f"{key} is broken")
    return f"{key}:fixed"


# --- signal counting --------------------------------------------------------------------------


async def _count(flow: Any, key: str, quick_timeouts: int) -> dict[str, Any]:
    """Receive "tick" signals until one says stop; each tick's number is kept, in arrival order.
    The first `quick_timeouts` waits time out after a few milliseconds (so signals race timeouts);
    a tick can ask for an action that fails for good ("boom", while the next tick is waited for)
    or one that fails transiently."""
    flow.count = 0
    flow.timeouts = 0
    seen: list[int] = []
    while True:
        timeout = 0.004 if flow.timeouts < quick_timeouts else None
        try:
            tick = await cairn.wait_for_signal("tick", timeout=timeout)
        except TimeoutError:
            flow.timeouts += 1
            continue
        ticks = [tick]
        if tick.get("boom"):  # the next tick is waited for while `doomed` runs (and fails)
            _, extra = await asyncio.gather(doomed(f"{key}:{tick['n']}"), cairn.wait_for_signal("tick"))
            ticks.append(extra)
        elif tick["n"] % 4 == 3:
            await asyncio.gather(flaky(f"{key}:{tick['n']}", 1), cairn.sleep(0.003))
        flow.count += len(ticks)
        seen += [int(t["n"]) for t in ticks]
        if any(t.get("stop") for t in ticks):
            return {"count": flow.count, "seen": seen, "timeouts": flow.timeouts}


@workflow(on_failure="pause")
class Counter(Workflow):
    """Counts signals; a "boom" tick pauses it on error (retry after the fix continues it)."""

    async def run(self, key: str, quick_timeouts: int) -> dict[str, Any]:
        return await _count(self, key, quick_timeouts)


@workflow
class RawCounter(Workflow):
    """Counts signals; a "boom" tick fails it (retry after the fix rewinds and continues it)."""

    async def run(self, key: str, quick_timeouts: int) -> dict[str, Any]:
        return await _count(self, key, quick_timeouts)


# --- actions, sleeps and gather ---------------------------------------------------------------


async def _batch(key: str, fails: list[int], doom: bool, nap: float) -> list[str]:
    calls = [(flaky if i % 2 == 0 else flaky_sync)(f"{key}:{i}", f) for i, f in enumerate(fails)]
    done = await asyncio.gather(*calls, cairn.sleep(nap))
    await asyncio.sleep(nap)
    out = [str(x) for x in done if x is not None]
    if doom:
        out.append(await doomed(key))
    out.append(await flaky(f"{key}:last", 0))
    return out


@workflow
async def batch(key: str, fails: list[int], doom: bool, nap: float) -> list[str]:
    """Gathered flaky actions and a durable sleep, then a sleep, then perhaps `doomed` (fails the run)."""
    return await _batch(key, fails, doom, nap)


@workflow(on_failure="pause")
async def batch_pausing(key: str, fails: list[int], doom: bool, nap: float) -> list[str]:
    """`batch`, paused on error where `batch` fails."""
    return await _batch(key, fails, doom, nap)


# --- children ---------------------------------------------------------------------------------


def counter_id(key: str) -> str:
    """The id of the counter a `parent` run starts without waiting for it (the test signals it)."""
    return f"{key}:counter"


def batch_id(key: str) -> str:
    """The id of the batch a `parent` run awaits with `cairn.child`."""
    return f"{key}:a"


@workflow
async def parent(key: str, fails: int, doom: bool, raw_child: bool, patience: float) -> dict[str, Any]:
    """A counter started without waiting, two batches awaited together (one by `cairn.child`, one by
    awaiting the function-style workflow), a third given up on after `patience` seconds (it is
    cancelled then), a sleep, then the counter joined."""
    counter = cairn.start_child(Counter, f"{key}:c", 1, id=counter_id(key))
    first = batch if raw_child else batch_pausing
    a, b = await asyncio.gather(
        cairn.child(first, f"{key}:a", [fails, 0], doom, 0.002, id=batch_id(key)),
        batch_pausing(f"{key}:b", [0], False, 0.001),
    )
    try:
        late = await asyncio.wait_for(cairn.child(batch, f"{key}:t", [1], False, 0.003, id=f"{key}:t"), patience)
    except TimeoutError:
        late = None
    await cairn.sleep(0.002)
    counted = await counter.result()
    return {"a": a, "b": b, "late": late, "counted": counted["count"]}


# --- signals sent by a workflow ---------------------------------------------------------------


@workflow
async def relay(targets: list[str], first: int, count: int) -> list[str]:
    """Send `count` ticks (numbered from `first`) to the targets in turn, a few milliseconds apart;
    what each send met is kept (a target that does not exist yet, or has finished, refuses it)."""
    met = []
    for i in range(count):
        try:
            await cairn.send_signal(targets[i % len(targets)], "tick", {"n": first + i})
            met.append("sent")
        except (cairn.RunNotFound, cairn.IllegalTransition) as exc:
            met.append(type(exc).__name__)
        await cairn.sleep(0.002)
    return met
