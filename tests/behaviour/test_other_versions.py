"""Arguments stored by another version of the code (a rolling deploy: an old worker takes the work
of new code) pause the run, saying so, instead of failing it: after the right code is deployed,
`retry` goes on. An old worker failed the run for good ("got unexpected arguments")."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

import cairn
from cairn import RunStatus
from cairn.registry import Registry
from tests.conftest import eventually
from tests.helpers import raw_sql, status_is

pytestmark = pytest.mark.timeout(60)


@cairn.action(queue="other-versions")
def ship(order: int) -> str:
    return f"shipped {order}"


@cairn.workflow
async def ships(order: int) -> str:
    return await ship(order)


async def _paused_saying(handle: cairn.RunHandle, reason: str) -> dict[str, object]:
    await eventually(lambda: status_is(handle, RunStatus.PAUSED), what="the run paused")
    row = await handle.describe()
    assert row.pause_reason == reason, row
    recorded = json.loads(row.error or "{}")
    assert recorded["type"] == "ArgumentsMismatch", recorded
    return recorded


async def test_a_run_whose_input_this_code_does_not_take_pauses_and_retries(client: cairn.Client, db_url: str) -> None:
    handle = await client.start(ships, 7)
    # As new code that added `express: bool = False` would have stored it.
    raw_sql(db_url, "UPDATE cairn_runs SET input = ? WHERE id = ?", '{"order": 7, "express": true}', handle.id)
    async with cairn.Worker(client, poll_interval=0.05, queues=["default", "other-versions"]):
        recorded = await _paused_saying(handle, "nondeterminism")
        assert "unexpected arguments ['express']" in str(recorded["message"])
        raw_sql(db_url, "UPDATE cairn_runs SET input = ? WHERE id = ?", '{"order": 7}', handle.id)  # "deployed"
        assert await handle.retry() in (RunStatus.RUNNING, RunStatus.PENDING)
        assert await handle.result(timeout=20) == "shipped 7"


def _old_ship_requiring_a_carrier(order: int, carrier: str) -> str:
    return f"shipped {order} by {carrier}"


def _old_ship_taking_nothing() -> str:
    return "shipped"


@pytest.mark.parametrize("old", [_old_ship_requiring_a_carrier, _old_ship_taking_nothing])
async def test_an_action_whose_arguments_an_old_worker_does_not_take_pauses_the_run(
    client: cairn.Client, old: Callable[..., str]
) -> None:
    """An old worker's `ship` (another signature under the same id) takes the attempt."""
    old_code = Registry()
    old_code.register(ship.defn.fn.__module__, "ship", old)
    async with (
        cairn.Worker(client, poll_interval=0.05, queues=["default"]),  # the new code's workflow
        cairn.Worker(client, poll_interval=0.05, queues=["other-versions"], registry=old_code),
    ):
        handle = await client.start(ships, 8)
        recorded = await _paused_saying(handle, "error")
        assert "another version of its code" in str(recorded["message"])
    async with cairn.Worker(client, poll_interval=0.05, queues=["default", "other-versions"]):  # all new
        assert await handle.retry() == RunStatus.RUNNING
        assert await handle.result(timeout=20) == "shipped 8"
