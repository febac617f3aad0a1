"""How a worker spends its slots: new runs only while an action slot is free for their first
action, runs under way whenever a run slot is free, and a run's next action born into the slot
its last one ran in. Each on both backends, with a real embedded worker."""

from __future__ import annotations

import threading

import pytest

import cairn
from cairn import RunStatus
from tests import flows
from tests.conftest import eventually
from tests.helpers import status_is

pytestmark = pytest.mark.timeout(60)


async def test_a_worker_with_every_action_slot_busy_takes_no_new_run_but_wakes_sleeping_ones(
    client: cairn.Client,
) -> None:
    async with cairn.Worker(client, concurrency=1, poll_interval=0.1, lease=5.0):
        sleeping = await client.start(flows.sleeper, 0.2)
        await eventually(lambda: status_is(sleeping, RunStatus.WAITING), what="the sleeper to sleep")
        held = await client.start(flows.gated, "held")
        await eventually(lambda: _action_running(client, held), what="the gated action to start")

        new = await client.start(flows.function_style, 5)  # the one action slot is busy

        assert await sleeping.result(timeout=10) == "slept True"  # woken twice by its timers meanwhile
        assert (await new.describe()).status == RunStatus.PENDING  # taken by nobody: no slot for its action
        flows.GATES["held"].set()
        assert await held.result(timeout=10) == "held"
        assert await new.result(timeout=10) == 11


async def test_a_worker_runs_a_run_to_its_end_before_taking_a_new_one_when_its_slot_is_full(db_url: str) -> None:
    starter, serving = cairn.Client(db_url), cairn.Client(db_url)  # started elsewhere: both wait to be claimed
    try:
        first = await starter.start(flows.Sequence3, 1)
        second = await starter.start(flows.Sequence3, 10)
        async with cairn.Worker(serving, concurrency=1, poll_interval=0.1, lease=5.0):
            assert await serving.get(first.id).result(timeout=10) == 4
            assert await serving.get(second.id).result(timeout=10) == 13
        firsts, seconds = await first.events(), await second.events()
    finally:
        await starter.close()
        await serving.close()
    # Each next action was born in the commit that scheduled it, into the slot the one before ran
    # in: none had to wait to be claimed, and the second run started only once the first ended.
    for events in (firsts, seconds):
        scheduled = {e.step: e.at for e in events if e.kind == "step.scheduled"}
        started = {e.step: e.at for e in events if e.kind == "step.started"}
        assert sorted(scheduled) == [1, 2, 3] and started == scheduled
    ended = max(e.at for e in firsts if e.kind == "completed")
    assert min(e.at for e in seconds if e.kind == "started") >= ended


async def _action_running(client: cairn.Client, handle: cairn.RunHandle) -> bool:
    return any(s.status == "running" for s in await client.store.list_steps(handle.id))


STUCK = threading.Event()


@cairn.action(timeout=0.2, retry=cairn.RetryPolicy(attempts=1))
def hangs_past_its_timeout(i: int) -> int:  # a plain def: its thread cannot be stopped
    STUCK.wait(30)
    return i


@cairn.action
def quick(i: int) -> int:
    return i + 1


@cairn.workflow
async def gives_up_on_a_hung_call(i: int) -> str:
    try:
        await hangs_past_its_timeout(i)
    except cairn.ActionTimeout:
        return "timed out"
    return "returned"


@cairn.workflow
async def two_quick_steps(i: int) -> int:
    return await quick(await quick(i))


async def test_calls_abandoned_at_their_timeout_leave_the_other_plain_def_actions_threads(client: cairn.Client) -> None:
    """An attempt timed out, its call runs on on its thread: as many of them as the worker's
    concurrency took every thread, and every other plain def action waited, shown running, until
    one of those returned (or for ever). Each abandoned call now has a thread of its own."""
    STUCK.clear()
    try:
        async with cairn.Worker(client, concurrency=2, poll_interval=0.05):
            hung = [await client.start(gives_up_on_a_hung_call, i) for i in range(2)]
            assert [await h.result(timeout=20) for h in hung] == ["timed out", "timed out"]
            assert await client.run(two_quick_steps, 1, timeout=10) == 3  # while both calls still run
    finally:
        STUCK.set()
