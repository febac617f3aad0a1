"""`@workflow(timeout=...)` on both backends: past it, counted from the run's start, the run is
cancelled with WorkflowTimeout whatever it waits for (a timer, a signal, an action, a child), its
open steps and children with it; a run that ends in time is untouched; a timeout racing the run's
own end leaves exactly one of the two."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import timedelta

import pytest

import cairn
from cairn import RunStatus, StepStatus
from cairn.testing import environment
from tests import timeout_flows as tf
from tests.conftest import eventually
from tests.helpers import holds, status_is

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(120)]


async def _timed_out(handle: cairn.RunHandle) -> cairn.WorkflowTimeout:
    """The run ends with WorkflowTimeout well before what it waited for (30 s or forever)."""
    began = time.monotonic()
    expected = f"run {handle.id} did not finish within its timeout of 0.3s"
    with pytest.raises(cairn.WorkflowTimeout, match=expected) as exc:
        await handle.result(timeout=15)
    assert time.monotonic() - began < 15
    assert isinstance(exc.value, cairn.WorkflowCancelled) and isinstance(exc.value, TimeoutError)
    row = await handle.describe()
    assert row.status == RunStatus.CANCELLED
    assert row.started_at is not None and row.completed_at is not None
    assert row.completed_at >= row.started_at + 0.3  # never early: counted from its start
    (event,) = [e for e in await handle.events() if e.kind == "cancelled"]
    assert event.detail["reason"] == "timeout"
    return exc.value


async def test_a_run_sleeping_past_its_timeout_is_cancelled(client: cairn.Client) -> None:
    handle = await client.start(tf.sleeps_past_it)
    await _timed_out(handle)
    (timer,) = await handle.steps()
    assert timer.status == StepStatus.CANCELLED


async def test_a_run_waiting_for_a_signal_is_timed_out(client: cairn.Client) -> None:
    handle = await client.start(tf.waits_past_it)
    await _timed_out(handle)
    with pytest.raises(cairn.IllegalTransition):  # over: a late signal is refused, not buffered
        await handle.signal("go", 1)


async def test_an_action_running_past_the_timeout_is_cancelled(client: cairn.Client) -> None:
    key = f"acts-{random.getrandbits(32)}"
    handle = await client.start(tf.acts_past_it, key)
    await _timed_out(handle)
    (step,) = await handle.steps()
    assert step.status == StepStatus.CANCELLED and step.result is None
    # The worker stops the attempt (at its next heartbeat), as for a cancel.
    await eventually(lambda: holds(key in tf.CANCELLED), what="the action's attempt cancelled")


async def test_a_run_that_ends_in_time_is_untouched(client: cairn.Client) -> None:
    handle = await client.start(tf.done_in_time, "in-time")
    assert await handle.result(timeout=15) == 0
    assert [e.kind for e in await handle.events() if e.kind == "cancelled"] == []


async def test_a_parent_catches_its_childs_timeout(client: cairn.Client) -> None:
    handle = await client.start(tf.survives_its_child, "p1")
    assert await handle.result(timeout=15) == "child timed out: WorkflowTimeout"
    assert await client.get("p1-child").status() == RunStatus.CANCELLED


async def test_a_parent_timing_out_cancels_its_child(client: cairn.Client) -> None:
    handle = await client.start(tf.outlived_by_its_child, "p2")
    await _timed_out(handle)
    assert await client.get("p2-child").status() == RunStatus.CANCELLED


async def test_a_paused_run_times_out_only_once_resumed(client: cairn.Client) -> None:
    handle = await client.start(tf.waits_past_it)
    await eventually(lambda: status_is(handle, RunStatus.WAITING), what="waiting")
    assert await handle.pause() == RunStatus.PAUSED
    row = await handle.describe()
    assert row.started_at is not None
    await asyncio.sleep(max(0.0, row.started_at + 0.3 - time.time()) + 0.3)  # past the deadline: time itself
    assert await handle.status() == RunStatus.PAUSED  # held by its user, not timed out
    await handle.resume()
    await _timed_out(handle)


async def test_timing_out_before_the_deadline_or_after_the_end_changes_nothing(client: cairn.Client) -> None:
    early = await client.start(tf.waits_an_hour_at_most)
    await eventually(lambda: status_is(early, RunStatus.WAITING), what="waiting")
    events = await early.events()
    assert await client.store.time_out(early.id, 3600) == RunStatus.WAITING
    assert await early.events() == events
    done = await client.start(tf.done_in_time, "ended")
    await done.result(timeout=15)
    assert await client.store.time_out(done.id, 0) == RunStatus.COMPLETED
    assert await done.result() == 0


@pytest.mark.timeout(300)
async def test_a_timeout_racing_the_runs_end_leaves_exactly_one(client: cairn.Client) -> None:
    """Runs whose action ends around their 50 ms timeout, in waves: each ends once, either
    completed with its value and no cancellation, or cancelled with WorkflowTimeout and nothing
    of its result kept; none is left running."""
    rng = random.Random(17)
    outcomes = {"completed": 0, "timed out": 0}
    for wave in range(50):
        naps = [rng.choice([0.0, 0.0, rng.uniform(0.0, 0.1)]) for _ in range(20)]
        handles = [await client.start(tf.races_its_timeout, f"race-{wave}-{i}", nap) for i, nap in enumerate(naps)]
        results = await asyncio.gather(*(h.result(timeout=60) for h in handles), return_exceptions=True)
        for handle, nap, result in zip(handles, naps, results, strict=True):
            kinds = [e.kind for e in await handle.events()]
            if isinstance(result, cairn.WorkflowTimeout):
                outcomes["timed out"] += 1
                assert await handle.status() == RunStatus.CANCELLED
                assert "completed" not in kinds and kinds.count("cancelled") == 1
                assert (await handle.describe()).result is None
            else:
                assert result == nap, result
                outcomes["completed"] += 1
                assert await handle.status() == RunStatus.COMPLETED
                assert "cancelled" not in kinds and kinds.count("completed") == 1
    assert sum(outcomes.values()) == 1000
    assert outcomes["completed"] > 0, outcomes  # most naps are 0: at least some end in time


async def test_the_test_environment_skips_time_to_the_timeout() -> None:
    async with environment() as env:
        handle = await env.client.start(tf.waits_an_hour_at_most)
        with pytest.raises(cairn.WorkflowTimeout, match="within its timeout of 3600s"):
            await handle.result(timeout=10)
        assert env.skipped >= timedelta(minutes=59)  # the hour, less what passed for real
