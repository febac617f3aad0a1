"""SPEC 2's promises about asyncio inside workflows and durable primitives, checked as users write
them: each run replays identically on any worker (the worker here keeps no run in memory, so every
activation rebuilds the run from its journal, as a worker taking it over after a crash does), and
its journal replays on the same code without divergence."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import cairn
from cairn import RunStatus, StepKind
from cairn.testing import replay
from cairn.worker.replay import export_journal
from tests import workflow_promise_flows as flows
from tests.conftest import eventually

ENDED = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PAUSED}


@pytest.fixture
async def rebuilding_worker(client: cairn.Client) -> AsyncIterator[cairn.Worker]:
    """A worker with no cache of runs: each activation replays the run's journal first."""
    async with cairn.Worker(client, poll_interval=0.1, lease=5.0, cache_size=0) as w:
        yield w


async def _ended(client: cairn.Client, wf: object, *args: object) -> tuple[cairn.RunHandle, list[cairn.StepInfo]]:
    handle = await client.start(wf, *args)

    async def ended() -> bool:
        return await handle.status() in ENDED

    await eventually(ended, timeout=30, what=f"run {handle.id} to end")
    row = await handle.describe()
    assert row.status == RunStatus.COMPLETED, row.error
    replay(export_journal(row, await client.store.list_steps(handle.id)))  # raises on a divergence
    return handle, await handle.steps()


@pytest.mark.usefixtures("rebuilding_worker")
async def test_iterating_the_done_set_of_asyncio_wait_replays_identically(client: cairn.Client) -> None:
    # Sets of tasks iterate in the order of the tasks' hashes: by address, another on each rebuild.
    for _ in range(3):
        handle, steps = await _ended(client, flows.act_on_each_done, 8)
        after = [s.args["value"] for s in steps if s.args["value"].startswith("after-")]
        assert after == await handle.result(timeout=5)
        assert sorted(after) == [f"after-t{i}" for i in range(8)]


@pytest.mark.usefixtures("rebuilding_worker")
async def test_as_completed_over_action_calls_replays_identically(client: cairn.Client) -> None:
    for _ in range(3):
        handle, steps = await _ended(client, flows.first_come_first_served, 8)
        assert sorted(await handle.result(timeout=5)) == [f"c{i}" for i in range(8)]
        assert [s.kind for s in steps] == [StepKind.ACTION] * 8


@pytest.mark.usefixtures("rebuilding_worker")
async def test_as_completed_over_the_workflows_own_coroutines_replays_identically(client: cairn.Client) -> None:
    # Coroutine objects hash by address: as_completed would start them in another order on each
    # replay, numbering their steps differently; they start in the order they were given.
    for _ in range(3):
        handle, steps = await _ended(client, flows.first_come_first_served_helpers, 8)
        assert sorted(await handle.result(timeout=5)) == [f"h{i}" for i in range(8)]
        assert [s.args["value"] for s in steps][:8] == [f"h{i}" for i in range(8)]


@pytest.mark.usefixtures("rebuilding_worker")
async def test_compensations_of_a_failed_task_group_replay_identically(client: cairn.Client) -> None:
    for _ in range(3):
        handle, steps = await _ended(client, flows.compensate_on_failure, 6)
        undone = await handle.result(timeout=5)
        assert sorted(undone) == [f"undo-{i}" for i in range(6)]
        assert [s.args["value"] for s in steps if s.kind == StepKind.ACTION and s.name.endswith("label")] == undone


async def test_a_failed_action_commits_none_of_its_memory_writes(client: cairn.Client, worker: cairn.Worker) -> None:
    # "writes made by an action are committed together with its result": a failure has none, and
    # its writes go as those of an attempt that is retried do.
    handle = await client.start(flows.memory_of_a_failed_action, "k")
    assert await handle.result(timeout=20) == {"failed": None, "ok": "kept"}
    assert await handle.memory() == {"k-ok": "kept"}
