"""Actions that fail with ordinary (not transient) exceptions a few times, under policies given by
hand on the action or per call, and under the default."""

from __future__ import annotations

import collections

import cairn
from cairn import BackoffPolicy, RetryPolicy, action, workflow

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
