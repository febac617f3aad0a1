"""When a workflow's `timeout` counts from, on both backends, in the test environment's skipped
time: from the run's start (its first activation), so a run waiting for its queue's slot does not
time out before it begins; and a retry (of a failed run, or one paused on an error) opens a new
window, from the retry, without moving `started_at` (the clock its
replays run at). Counted from the run's creation, the third of three 40-minute runs of an hour's
timeout in a one-at-a-time queue was cancelled without ever starting, and a retry later than the
timeout after creation was cancelled at once."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

import cairn
from cairn import RunStatus
from cairn.testing import environment
from tests import timeout_flows as tf
from tests.conftest import eventually
from tests.helpers import status_is

pytestmark = pytest.mark.timeout(120)


async def test_runs_waiting_for_their_queue_time_out_from_their_start(db_url: str) -> None:
    async with environment(db_url) as env:
        handles = [await env.client.start(tf.forty_minutes_in_turn, i) for i in range(3)]
        assert [await h.result() for h in handles] == [0, 1, 2]
        last = await handles[-1].describe()
        assert last.started_at is not None
        assert last.started_at - last.created_at >= 4800 - 5  # pending past its timeout, untouched
        for h in handles:
            assert [e for e in await h.events() if e.kind == "cancelled"] == []


async def test_a_pending_run_is_not_timed_out(client: cairn.Client) -> None:
    """Nothing started it (no worker here): its timeout has not begun, however long ago it was created."""
    handle = await client.start(tf.waits_an_hour_at_most)
    assert await client.store.time_out(handle.id, 0) == RunStatus.PENDING
    assert [e for e in await handle.events() if e.kind == "cancelled"] == []


@pytest.mark.parametrize(
    ("flow", "stopped"),
    [(tf.fails_then_waits, RunStatus.FAILED), (tf.pauses_then_waits, RunStatus.PAUSED)],
    ids=["failed", "paused-on-error"],
)
async def test_a_retry_past_the_timeout_opens_a_new_window(db_url: str, flow: Any, stopped: RunStatus) -> None:
    """The retried run waits for a signal that never comes: it times out an hour after the retry,
    neither at once nor never."""
    key = f"retried-{random.getrandbits(32)}"
    tf.FAILING.add(key)
    try:
        async with environment(db_url) as env:
            handle = await env.client.start(flow, key)
            await eventually(lambda: status_is(handle, stopped), what=f"run {stopped.value}")
            first = await handle.describe()
            await env.sleep(timedelta(hours=2))  # twice its timeout since it started
            tf.FAILING.discard(key)
            retried_at = env.clock.now()
            await handle.retry()
            with pytest.raises(cairn.WorkflowTimeout, match="within its timeout of 3600s"):
                await handle.result()
            row = await handle.describe()
            assert row.completed_at is not None
            assert retried_at + 3600 <= row.completed_at < retried_at + 3600 + 60
            assert row.started_at == first.started_at  # the clock its replays run at stays its own
            assert "retried" in [e.kind for e in await handle.events()]
    finally:
        tf.FAILING.discard(key)
