"""Workflows for the test environment's tests: a month-long renewal, an approval with a timeout,
retries with long backoff, a failure, a child that sleeps."""

from __future__ import annotations

import asyncio
import collections
import threading
from datetime import timedelta

import cairn
from cairn import BackoffPolicy, RetryPolicy, Workflow, action, workflow

CALLS: collections.Counter[str] = collections.Counter()


@action
async def charge(user: str, cents: int) -> str:
    CALLS[f"charge:{user}"] += 1
    return f"real-charge-{user}-{cents}"


@action
def notify(user: str, text: str) -> None:
    CALLS[f"notify:{user}"] += 1


@workflow
class Renewal(Workflow):
    async def run(self, user: str) -> str:
        first = await charge(user, 100)
        self.started = cairn.now().isoformat()
        await cairn.sleep(timedelta(days=30))
        self.renewed = cairn.now().isoformat()
        second = await charge(user, 100)
        return f"{first}|{second}"


@workflow
class Approval(Workflow):
    async def run(self, order: str) -> str:
        try:
            decision = await cairn.wait_for_signal("approve", timeout=timedelta(hours=1))
        except TimeoutError:
            return "timed out"
        return f"approved by {decision['by']}"


@workflow
class OpenApproval(Workflow):
    """Waits for its signal with no timeout, and says how much logical time passed meanwhile."""

    async def run(self, order: str) -> str:
        asked = cairn.now()
        decision = await cairn.wait_for_signal("approve")
        return f"approved by {decision['by']} after {(cairn.now() - asked).total_seconds():.0f}s"


FLAKY: collections.Counter[str] = collections.Counter()


HOURLY = BackoffPolicy(base_delay=3600, multiplier=2, max_delay=4 * 3600, jitter=False)


@action(retry=RetryPolicy(attempts=4), backoff=HOURLY)
def flaky(key: str) -> str:
    FLAKY[key] += 1
    if FLAKY[key] < 3:
        raise ConnectionError(f"attempt {FLAKY[key]} of {key} fails")
    return f"ok after {FLAKY[key]}"


@workflow
async def with_retries(key: str) -> str:
    return await flaky(key)


class CardDeclined(Exception):
    pass


@action
def decline(user: str) -> None:
    raise CardDeclined(f"card of {user} declined")


@workflow
async def failing(user: str) -> None:
    await cairn.sleep(timedelta(days=1))
    await decline(user)


@workflow
async def napper(days: int) -> int:
    await cairn.sleep(timedelta(days=days))
    return days


@workflow
async def parent(days: int) -> list[int]:
    return [await napper(days), await cairn.child(napper, days + 1)]


@workflow
async def nightly(region: str) -> str:
    return f"report {region}"


@workflow
async def long_job(minutes: int) -> None:
    """Outlasts its schedule's interval: the next tick is held (overlap="buffer_one")."""
    await cairn.sleep(timedelta(minutes=minutes))


HELD = threading.Event()
"""Released by the test that holds `held_for_ever` (else it waits for ever, as a stuck fake would)."""


@action
async def slow_async() -> str:
    await asyncio.sleep(60)
    return "late"


@action
def held_for_ever() -> str:
    HELD.wait(120)
    return "late"


@workflow
async def calls_slow_async() -> str:
    return await slow_async()


@workflow
async def calls_held_for_ever() -> str:
    return await held_for_ever()


HOURLY_QUEUE = cairn.Queue("env-hourly", rate_limit=cairn.RateLimit(1, per=timedelta(hours=1)))


@workflow(queue=HOURLY_QUEUE)
async def hourly(i: int) -> int:
    return i


@workflow(on_failure="pause")
async def pauses_on_decline(user: str) -> None:
    await decline(user)


ONE_AT_A_TIME = cairn.Queue("env-one-at-a-time", concurrency=1)


@workflow(queue=ONE_AT_A_TIME)
async def naps_in_turn(i: int) -> int:
    await cairn.sleep(timedelta(days=1))
    return i


@action
async def send_mail(to: str) -> str:
    raise RuntimeError("tests must not reach the mail provider")


@action
async def welcome(user: str) -> str:
    """An action that calls another: a plain call, no step of its own."""
    return await send_mail(f"{user}@example.com")


@workflow
async def signup(user: str) -> str:
    return await welcome(user)
