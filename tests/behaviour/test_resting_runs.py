"""A run that waits in a loop goes on from its copy in memory, not by replaying its history at each
wake-up, when the worker that let it go claims it next; a copy made stale by anything in between
(here a pause and a resume, which advance the run's token) is dropped and the run replayed, on both
backends. Before, each wake-up replayed the whole history: at 2,000 steps, 133 ms a signal."""

from __future__ import annotations

import functools

import pytest

import cairn
from cairn import RunStatus
from cairn.engine import instance, runtime
from cairn.worker import runner
from tests import resting_flows as rf
from tests.conftest import eventually

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def keep_short_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """These runs are short: keep their copies from their first step (by default, from 16)."""
    monkeypatch.setattr(runner, "RESTING_MIN_STEPS", 1)


async def _activations(handle: cairn.RunHandle, at_least: int) -> bool:
    row = await handle.describe()
    return row.status == RunStatus.WAITING and row.activations >= at_least


async def _signal_one_by_one(handle: cairn.RunHandle, n: int, before_each: int = 1) -> None:
    """Each signal once the run waits for it, so that each wakes the run in an activation of its own."""
    for i in range(n):
        waiting = functools.partial(_activations, handle, i + before_each)
        await eventually(waiting, what=f"the run waiting for signal {i}")
        await handle.signal("n", i)


async def _tally_of_four(client: cairn.Client, key: str) -> int:
    """A run waiting for 4 signals, one by one, on a worker of its own; how often its body ran from the top."""
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(rf.tally, key, 4)
        await _signal_one_by_one(handle, 4)
        assert await handle.result(timeout=20) == [0, 1, 2, 3]
    return rf.STARTS[key]


async def test_a_run_waiting_for_signals_in_a_loop_is_not_replayed(client: cairn.Client, db_url: str) -> None:
    key = f"loop-{db_url[:8]}"
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(rf.tally, key, 6)
        await _signal_one_by_one(handle, 6)
        assert await handle.result(timeout=20) == [0, 1, 2, 3, 4, 5]
    assert (await handle.describe()).activations == 7
    assert rf.STARTS[key] == 1  # one run of the body from the top: no replay at any of the 6 wake-ups


async def test_a_run_sleeping_in_a_loop_is_not_replayed(client: cairn.Client, db_url: str) -> None:
    key = f"naps-{db_url[:8]}"
    async with cairn.Worker(client, poll_interval=0.05):
        assert await client.run(rf.naps, key, 5, timeout=20) == 5
    assert rf.STARTS[key] == 1


async def test_a_copy_made_stale_by_a_pause_is_dropped_and_the_run_replayed(client: cairn.Client, db_url: str) -> None:
    key = f"paused-{db_url[:8]}"
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(rf.tally, key, 4)
        await _signal_one_by_one(handle, 2)
        await eventually(lambda: _activations(handle, 3), what="the run waiting for signal 2")
        await handle.pause()
        await handle.resume()  # the token moved twice: the copy no longer matches the next claim

        async def replayed() -> bool:
            return rf.STARTS[key] == 2

        await eventually(replayed, what="the resumed run claimed and replayed, its stale copy dropped")
        await eventually(lambda: _activations(handle, 3), what="the resumed run waiting again")
        await handle.signal("n", 2)
        await eventually(lambda: _activations(handle, 4), what="the run waiting for signal 3")
        await handle.signal("n", 3)
        assert await handle.result(timeout=20) == [0, 1, 2, 3]
    assert rf.STARTS[key] == 2  # the copy that replay made went on through both signals


async def test_copies_past_the_step_budget_are_replayed_as_before(
    client: cairn.Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    room = instance.COPY_BYTES + 2 * (runtime.STEP_BYTES + 50)  # a copy of 1 or 2 steps, not 3
    monkeypatch.setattr(runner, "RESTING_BYTES", room)
    # Waits of 1 and 2 steps were kept; from the third on, each wake-up replayed.
    assert await _tally_of_four(client, f"budget-{db_url[:8]}") == 3


async def test_a_plain_def_run_is_not_kept_while_it_waits(client: cairn.Client, db_url: str) -> None:
    """Its copy would keep a thread blocked: it is replayed at each wake-up, as before."""
    key = f"plain-{db_url[:8]}"
    async with cairn.Worker(client, poll_interval=0.05) as worker:
        handle = await client.start(rf.tally_plainly, key, 3)
        await _signal_one_by_one(handle, 3)
        assert await handle.result(timeout=20) == [0, 1, 2]
        assert len(worker._runner.resting) == 0
    assert rf.STARTS[key] == 4


async def test_a_short_run_is_not_kept_by_default(
    client: cairn.Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A history shorter than RESTING_MIN_STEPS replays about as fast as an activation: not kept,
    so that many short sleepers take no memory."""
    monkeypatch.setattr(runner, "RESTING_MIN_STEPS", 3)
    # Waits at 1 and 2 steps were replayed; from 3 steps on, the copy went on.
    assert await _tally_of_four(client, f"short-{db_url[:8]}") == 3
