"""Queues, workflows and actions for the flow-control tests: each piece of work records when it
started and ended, so a test can measure how many went at once (never by sleeping to wait)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta

import cairn
from cairn import action, workflow

ONE = cairn.Queue("q-one", concurrency=1)
TWO_ACTIONS = cairn.Queue("q-two-actions", concurrency=2)
PER_KEY = cairn.Queue("q-per-key", per_key=1)
PER_WORKER = cairn.Queue("q-per-worker", per_worker=1)
RANKED = cairn.Queue("q-ranked", concurrency=1, priority=True)
RATED = cairn.Queue("q-rated", rate_limit=cairn.RateLimit(2, per=timedelta(milliseconds=500)))
DEDUP = cairn.Queue("q-dedup")
BULK = cairn.Queue("q-bulk", concurrency=2)


@dataclass
class Marks:
    """Start and end of each piece of work, by group, and the most that went at once."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    now: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    peak: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    order: list[str] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)

    def enter(self, *groups: str) -> None:
        with self.lock:
            self.starts.append(time.monotonic())
            for g in groups:
                self.now[g] += 1
                self.peak[g] = max(self.peak[g], self.now[g])

    def leave(self, *groups: str) -> None:
        with self.lock:
            for g in groups:
                self.now[g] -= 1

    def clear(self) -> None:
        with self.lock:
            self.now.clear()
            self.peak.clear()
            self.order.clear()
            self.starts.clear()


MARKS = Marks()


@action
async def hold(label: str, groups: list[str], seconds: float) -> str:
    """Work that takes `seconds` (the duration of the work, not a wait for anything)."""
    MARKS.enter(*groups)
    MARKS.order.append(label)
    try:
        await asyncio.sleep(seconds)
    finally:
        MARKS.leave(*groups)
    return label


@action(queue=TWO_ACTIONS)
async def hold_two(label: str, seconds: float) -> str:
    return await hold(label, ["two"], seconds)


@action(queue=PER_WORKER)
async def hold_per_worker(label: str, seconds: float) -> str:
    return await hold(label, ["per-worker"], seconds)


@action(queue=RATED)
async def rated(label: str) -> str:
    MARKS.enter("rated")
    MARKS.leave("rated")
    return label


@workflow(queue=ONE)
async def serial(label: str, seconds: float = 0.05) -> str:
    return await hold(label, ["one"], seconds)


@workflow(queue=PER_KEY)
async def keyed(label: str, key: str, seconds: float = 0.2) -> str:
    return await hold(label, ["all", f"key:{key}"], seconds)


@workflow(queue=RANKED)
async def ranked(label: str) -> str:
    return await hold(label, ["ranked"], 0.0)


@workflow(queue=RANKED)
async def ranked_nap(label: str) -> str:
    await cairn.sleep(0.05)  # waits, its priority kept: claimed again when the timer is due
    return label


@workflow(queue=DEDUP)
async def gated(label: str) -> str:
    return str(await cairn.wait_for_signal("go")) + label


@workflow(queue=DEDUP)
async def fails_when_told(label: str) -> str:
    if await cairn.wait_for_signal("go") == "fail":
        raise RuntimeError(f"{label} failed as told")
    return label


@workflow
async def fan_two(n: int, seconds: float) -> list[str]:
    return list(await asyncio.gather(*(hold_two(f"a{i}", seconds) for i in range(n))))


@workflow
async def fan_per_worker(n: int, seconds: float) -> list[str]:
    return list(await asyncio.gather(*(hold_per_worker(f"p{i}", seconds) for i in range(n))))


@workflow
async def fan_rated(n: int) -> list[str]:
    return list(await asyncio.gather(*(rated(f"r{i}") for i in range(n))))


@workflow
async def echo(label: str) -> str:
    return label


@workflow
async def starts_serial_children(n: int) -> list[str]:
    """Children of a workflow declared on q-one, started without waiting: they run in q-one."""
    handles = [cairn.start_child(serial, f"c{i}") for i in range(n)]
    return [str(await h.result()) for h in handles]


@workflow(queue=ONE)
async def starts_a_plain_child(label: str) -> str:
    """On q-one (one at a time), a child of a workflow declared on no queue: it runs in the default
    queue, not in its parent's, whose one place its parent holds while it waits for it."""
    return str(await cairn.start_child(echo, label).result())


@workflow(queue="q-late")
async def limited_later(label: str) -> str:
    """On a queue named by a string, which a later deploy declares with a limit."""
    return str(await cairn.wait_for_signal("go")) + label


HELD = cairn.Queue("q-held", rate_limit=cairn.RateLimit(1, per=timedelta(hours=2)))


@workflow(queue=HELD)
async def held_then_sleeps(i: int) -> float:
    """Started at most every two hours, then sleeps an hour: how long after its start it woke."""
    began = cairn.now()
    await cairn.sleep(timedelta(hours=1))
    return (cairn.now() - began).total_seconds()


BULK_RELEASED = asyncio.Event()
"""Set by a test to let the calls of `bulk_fan` end; a test makes a new one on its own loop, where
the worker runs the calls."""


@action(queue=BULK)
async def bulk_call(i: int) -> int:
    MARKS.enter("bulk")
    try:
        await BULK_RELEASED.wait()
    finally:
        MARKS.leave("bulk")
    return i


@workflow
async def bulk_fan(n: int) -> int:
    return sum(await asyncio.gather(*(bulk_call(i) for i in range(n))))
