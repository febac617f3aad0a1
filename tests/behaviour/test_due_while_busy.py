"""A run its own commit leaves due (a child it waits for had already ended) is activated again at
once, not at the next safety poll: the wake-up its commit sends arrives while the run is still
busy here, and the claim it triggers must not be the last word."""

from __future__ import annotations

import statistics
import time

import pytest

import cairn
from tests.flows import add_one

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(60)]


@cairn.workflow
async def ends_at_once(x: int) -> int:
    return await add_one(x)


@cairn.workflow
async def waits_for_an_ended_child(child_id: str) -> int:
    return await cairn.child(ends_at_once, 1, id=child_id)


async def test_a_run_due_by_its_own_commit_goes_on_at_once(client: cairn.Client) -> None:
    took = []
    for i in range(5):
        await client.run(ends_at_once, 1, id=f"ended-{i}", timeout=10)
        began = time.monotonic()
        assert await client.run(waits_for_an_ended_child, f"ended-{i}", timeout=10) == 2
        took.append(time.monotonic() - began)
    # The worker's idle safety poll is 1 s (lease 5 s): the old wait. Typically 2-20 ms now.
    assert statistics.median(took) < 0.5, took
