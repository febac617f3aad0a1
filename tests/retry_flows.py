"""Actions that fail with ordinary (not transient) exceptions a few times, under policies given by
hand on the action or per call, and under the default."""

from __future__ import annotations

import collections

import cairn
from cairn import BackoffPolicy, RetryPolicy, action, workflow
from cairn.types import Json

ATTEMPTS: collections.Counter[str] = collections.Counter()
FAST = BackoffPolicy(base_delay=0.01, jitter=False)


def _third_time_lucky(key: str) -> str:
    ATTEMPTS[key] += 1
    if ATTEMPTS[key] < 3:
        raise ValueError(f"attempt {ATTEMPTS[key]} of {key} is refused")
    return f"ok after {ATTEMPTS[key]}"


@action(retry=RetryPolicy(attempts=3), backoff=FAST)
def shaky(key: str) -> str:
    return _third_time_lucky(key)


@action(backoff=FAST)
def shaky_by_default(key: str) -> str:
    return _third_time_lucky(key)


@workflow
async def on_the_action(key: str) -> str:
    return await shaky(key)


@workflow
class PerCall(cairn.Workflow):
    """Waymark's way: retries opted into per call through `self.run_action`."""

    async def run(self, key: str) -> str:
        return await self.run_action(shaky_by_default(key), retry=RetryPolicy(attempts=3), backoff=FAST)


@workflow
async def by_default(key: str) -> str:
    try:
        return await shaky_by_default(key)
    except ValueError as exc:
        return f"failed: {exc}"


class UnreadablePolicy(RetryPolicy):
    """A policy the worker cannot apply (its stored form fails): the step must fail, visibly."""

    def to_json(self) -> Json:
        raise RuntimeError("this policy cannot be written down")


@action(retry=UnreadablePolicy(attempts=2), backoff=FAST)
def under_an_unreadable_policy(key: str) -> str:
    ATTEMPTS[key] += 1
    return key


@workflow
async def unreadable(key: str) -> str:
    try:
        return await under_an_unreadable_policy(key)
    except Exception as exc:  # what the workflow sees of the worker's failure to apply the policy
        return f"failed: {type(exc).__name__}: {exc}"
