"""A cancelled run's running attempt stops as soon as its worker hears of the cancel: it ran on until
the worker's next heartbeat (a third of its lease, 3.3 s by default), holding its place in its
queue's limit meanwhile while the place was counted free, and past a `kill` the user meant at once."""

from __future__ import annotations

import asyncio

import pytest

import cairn
from cairn import RunStatus, StepStatus
from tests import timeout_flows as tf
from tests.conftest import eventually
from tests.helpers import holds

pytestmark = pytest.mark.timeout(60)


async def _running(handle: cairn.RunHandle) -> bool:
    return any(s.status == StepStatus.RUNNING for s in await handle.steps())


async def test_a_cancel_stops_the_running_attempt_before_the_next_heartbeat(client: cairn.Client) -> None:
    async with cairn.Worker(client, poll_interval=0.05, lease=30.0):  # its heartbeat: every 10 s
        key = f"heard-{id(client)}"
        handle = await client.start(tf.naps_long, key)

        await eventually(lambda: _running(handle), what="the action running")
        assert await handle.kill() == RunStatus.CANCELLED
        await eventually(lambda: holds(key in tf.CANCELLED), timeout=5, what="the action cancelled at once")


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite tells other processes only of work
async def test_a_cancel_from_another_process_stops_the_attempt_before_the_next_heartbeat(
    client: cairn.Client, db_url: str
) -> None:
    other = cairn.Client(db_url)  # its own connections and listener, as another process's
    try:
        async with cairn.Worker(client, poll_interval=0.05, lease=30.0):
            key = f"heard-elsewhere-{id(client)}"
            handle = await client.start(tf.naps_long, key)

            await eventually(lambda: _running(handle), what="the action running")
            assert await other.get(handle.id).cancel() == RunStatus.CANCELLED
            await eventually(lambda: holds(key in tf.CANCELLED), timeout=5, what="the action cancelled at once")
    finally:
        await other.close()


@cairn.workflow
async def gives_up_on_a_nap(key: str) -> str:
    try:
        return str(await asyncio.wait_for(tf.napping(key, 30), 0.2))
    except TimeoutError:
        return "gave up"


async def test_an_attempt_the_workflow_stops_waiting_for_stops_before_the_next_heartbeat(client: cairn.Client) -> None:
    """A `wait_for` that times out cancels its action's step as a control cancel does; the attempt
    ran on until the heartbeat, its place in a queue's limit counted free while it held it."""
    async with cairn.Worker(client, poll_interval=0.05, lease=30.0):  # its heartbeat: every 10 s
        key = f"given-up-{id(client)}"
        assert await client.run(gives_up_on_a_nap, key, timeout=20) == "gave up"
        await eventually(lambda: holds(key in tf.CANCELLED), timeout=5, what="the action cancelled at once")
