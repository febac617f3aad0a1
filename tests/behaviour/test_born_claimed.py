"""Runs started next to a worker in the same process are created by that worker's first commit of
them, born leased to it (no claim, no transaction of their own). Being leased at birth must not
cost durability or capacity, and must never touch a run that exists already."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

import pytest

import cairn
from cairn import RunStatus
from cairn.engine.instance import WorkflowInstance
from cairn.records import ActivationResult, NewRun, RunRow
from cairn.store.protocol import Commit, RunClaim, WorkClaim
from cairn.worker import dispatch
from tests import flows


class _Taker:
    """A stand-in for a worker in the client's process (a LocalDispatcher) that takes every run
    started there: how it commits the run's first activation is what each test is about."""

    id: str
    lease: float

    def __init__(self, client: cairn.Client) -> None:
        self.store = client.store
        self.refused: list[str] = []
        dispatch.register(self.store, self)

    async def start_run(self, run: NewRun) -> tuple[RunRow, bool] | None:
        """As the worker does: create the run leased to itself, then activate it from memory."""
        now = time.time()
        existing = await self.store.insert_run(run, self.id, self.lease, now)
        if existing is not None:
            self.refused.append(run.id)
            return existing, False
        row = run.born(self.id, now)
        await self.activate_first(RunClaim(row, 1, [], [], False, now))
        return row, True

    async def activate_first(self, claim: RunClaim) -> None:
        raise NotImplementedError


class _CrashingTaker(_Taker):
    """Takes a run at birth, commits its first activation as the engine decides it (the first
    action born leased to itself) and then dies: nothing more of it runs."""

    id = "crashed-after-its-first-commit"
    lease = 0.5

    def __init__(self, client: cairn.Client) -> None:
        super().__init__(client)
        self.taken: list[str] = []

    async def activate_first(self, claim: RunClaim) -> None:
        inst = WorkflowInstance.restore(flows.Sequence3.__cairn_workflow__, claim.run, [], 0)
        first = inst.activate([], claim.now)
        births = frozenset(s.seq for s in first.new_steps)
        assert births, "the first activation schedules the first action"
        await self.store.commit_activation(Commit(claim.run, 1, first, (), births, self.id, self.lease, None))
        inst.close()  # the process is gone
        self.taken.append(claim.run.id)


async def test_a_run_born_leased_to_a_worker_that_died_is_taken_over(db_url: str) -> None:
    starter, other = cairn.Client(db_url), cairn.Client(db_url)
    taker = _CrashingTaker(starter)
    try:
        handle = await starter.start(flows.Sequence3, 1)
        row = await handle.describe()
        assert (row.lease_owner, row.status) == (taker.id, RunStatus.RUNNING)  # born leased: nobody else may claim it
        assert taker.taken == [handle.id]
        # Another worker (another process, in effect: its own client) takes over once the lease lapses.
        async with cairn.Worker(other, poll_interval=0.1, lease=5.0):
            assert await other.get(handle.id).result(timeout=15) == 4
    finally:
        await starter.close()
        await other.close()


async def test_starting_an_existing_id_gives_the_reserved_slot_back(client: cairn.Client) -> None:
    async with cairn.Worker(client, concurrency=1, poll_interval=0.1, lease=5.0):
        assert await client.run(flows.Sequence3, 1, id="once", timeout=10) == 4
        for _ in range(3):  # each start reserves the worker's only run slot, then finds the run exists
            assert await client.run(flows.Sequence3, 1, id="once", timeout=10) == 4
        # Had a slot leaked, this worker (concurrency 1) could take no run any more.
        assert await client.run(flows.Sequence3, 2, timeout=10) == 5


async def test_a_stopped_worker_takes_no_runs_at_birth(client: cairn.Client) -> None:
    worker = cairn.Worker(client, poll_interval=0.1, lease=5.0)
    await worker.start()
    await worker.stop()
    handle = await client.start(flows.Sequence3, 1)
    assert (await handle.describe()).lease_owner is None
    async with cairn.Worker(client, poll_interval=0.1, lease=5.0):
        assert await handle.result(timeout=10) == 4


async def test_each_next_action_starts_in_the_commit_that_schedules_it(client: cairn.Client) -> None:
    # One action slot: it must be free again once an action has run, so that the commit carrying
    # the action's result can start the next action right away on this worker (born running).
    async with cairn.Worker(client, concurrency=1, poll_interval=0.1, lease=5.0):
        handle = await client.start(flows.Sequence3, 1)
        assert await handle.result(timeout=10) == 4
    events = await handle.events()
    scheduled = {e.step: e.at for e in events if e.kind == "step.scheduled"}
    started = {e.step: e.at for e in events if e.kind == "step.started"}
    assert sorted(scheduled) == [1, 2, 3]
    assert started == scheduled  # started in the same transaction: one clock reading


class _TakerHoldingTheLease(_Taker):
    """A worker in this process ("w1") that already holds the lease of an existing run with token
    1, the token a run is born with: only the insert's own check can stop it from taking the run
    for one it just created (and committing its "first" activation over it)."""

    id = "w1"
    lease = 30.0

    async def activate_first(self, claim: RunClaim) -> None:
        done = ActivationResult(status=RunStatus.COMPLETED, result="999")
        await self.store.commit_activation(Commit(claim.run, 1, done, (), frozenset(), self.id, self.lease, None))


async def test_starting_an_existing_id_never_writes_over_that_run(client: cairn.Client) -> None:
    first = await client.start(flows.function_style, 1, id="taken")  # no worker here: pending
    workflows = [flows.function_style.__cairn_workflow__.id]
    (claim,) = (await client.store.claim_work("w1", workflows, [], None, 10, 0, 30.0)).runs
    assert claim.token == 1
    taker = _TakerHoldingTheLease(client)

    again = await client.start(flows.function_style, 2, id="taken")

    assert again.id == first.id
    assert taker.refused == ["taken"]
    row = await first.describe()
    assert (row.status, row.result, json.loads(row.input)) == (RunStatus.PENDING, None, {"x": 1})
    assert (row.lease_owner, row.lease_token) == ("w1", 1)


class _StartDuringClaim:
    """The store's claim_work, with a run started in the worker's process at the worst moment of
    one claim: after the worker listed the runs it is busy with, before the claim's statements run.
    The run is born leased to the same worker, and its first activation waits until the claim is
    done (holding the run's activation lock), so the claim meets the run exactly as it was born."""

    def __init__(self, client: cairn.Client, worker: cairn.Worker, run_id: str) -> None:
        self.client, self.worker, self.run_id = client, worker, run_id
        self.claim_work = client.store.claim_work
        self.claimed: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self.handle: cairn.RunHandle | None = None
        client.store.claim_work = self  # type: ignore[method-assign]

    async def __call__(self, *args: Any, **kwargs: Any) -> WorkClaim:
        if self.claimed.done():
            return await self.claim_work(*args, **kwargs)
        async with self.worker._runner._exclusive(self.run_id):
            self.handle = await self.client.start(flows.function_style, 4, id=self.run_id)
            work = await self.claim_work(*args, **kwargs)
        self.claimed.set_result([c.run.id for c in work.runs])
        return work


async def test_a_claim_under_way_leaves_a_run_born_meanwhile_to_its_birth(
    client: cairn.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A run started while its worker's claim is under way is not taken by that claim: the claim
    would move its lease (token 1 -> 2), the born activation's commit would be refused ("lease
    moved") and the run activated twice (1 run in about 3,000 in the naive loop of `cairn bench`)."""
    caplog.set_level(logging.INFO, logger="cairn")
    async with cairn.Worker(client) as worker:
        race = _StartDuringClaim(client, worker, "born-during-a-claim")
        worker._wakeup.set()  # claim now rather than at the next poll
        claimed = await asyncio.wait_for(race.claimed, 10)
        assert race.handle is not None
        assert await race.handle.result(timeout=10) == 9
    assert "born-during-a-claim" not in claimed, "the claim took a run born while it was under way"
    moved = [r.getMessage() for r in caplog.records if "lease moved" in r.getMessage()]
    assert moved == []


async def test_randomized_starts_beside_claims_under_way_activate_each_run_once(
    client: cairn.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """2,000 runs started in a loop beside their worker, while each of its claims lets the loop run
    0-3 times between listing the runs it is busy with and running its statements (a window that
    is otherwise the claim's time in flight): no run's lease is moved under its born activation."""
    caplog.set_level(logging.INFO, logger="cairn")
    rng = random.Random(20)
    claim_work = client.store.claim_work

    async def widened(*args: Any, **kwargs: Any) -> WorkClaim:
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)  # a turn of the loop for the starts, not a synchronisation
        return await claim_work(*args, **kwargs)

    client.store.claim_work = widened  # type: ignore[method-assign]
    async with cairn.Worker(client):
        handles = [await client.start(flows.function_style, i) for i in range(2000)]
        results = await asyncio.gather(*(h.result(timeout=120) for h in handles))
    assert results == [2 * i + 1 for i in range(2000)]
    moved = [r.getMessage() for r in caplog.records if "lease moved" in r.getMessage()]
    assert moved == [], f"{len(moved)} born activations lost their lease to their own worker's claim"
