"""The times a worker writes (a step's start and end, a run's end, `cairn.now()`) are the
database's clock, which the worker estimates from its claims. The estimate was taken as a claim's
answer arrived, so it was behind by the whole claim (5 to 17 ms on PostgreSQL on one machine): an
action that ran after its step's recorded end, a run ended before its commit was sent."""

from __future__ import annotations

import time

import pytest

import cairn
from tests import flows

pytestmark = pytest.mark.timeout(60)


@cairn.action
def stamp() -> float:
    return time.time()


@cairn.workflow
async def stamped() -> float:
    return await stamp()


async def _stamps_within_their_steps(client: cairn.Client, starter: cairn.Client) -> list[float]:
    """For each of a few runs: how long after its step's recorded end the action's own clock read
    (negative: before it, as it should be)."""
    late = []
    for _ in range(5):
        handle = await starter.start(stamped)
        at = await handle.result(timeout=10)
        steps = await client.store.list_steps(handle.id)
        action = next(s for s in steps if s.name.endswith("stamp"))
        assert action.started_at is not None and action.completed_at is not None
        assert action.started_at <= at + 0.02, (action.started_at, at)  # not far ahead either
        late.append(at - action.completed_at)
    return late


@pytest.mark.usefixtures("worker")
async def test_an_action_runs_between_its_steps_recorded_start_and_end(client: cairn.Client, db_url: str) -> None:
    """Runs started on another client (each claimed, the estimate taken again at each claim), then
    on the worker's own (born leased: the estimate of the last claim stands)."""
    other = cairn.Client(db_url)
    await other.store.open()
    try:
        assert await other.run(flows.Sequence3, 0, timeout=10) == 3
        late = await _stamps_within_their_steps(client, other)
    finally:
        await other.close()
    late += await _stamps_within_their_steps(client, client)
    assert max(late) < 0.002, late
