"""Children a workflow starts on a worker that serves them are born leased to that worker, in the
commit of the step that starts them, and activated there from memory, with no claim (as runs
started in the worker's process are: see test_born_claimed). Being leased at birth must not cost
durability: a child born to a worker that died is taken over once its lease runs out."""

from __future__ import annotations

from typing import Any

import pytest

import cairn
from cairn import RunStatus
from cairn.engine.instance import WorkflowInstance
from cairn.store.protocol import Commit
from cairn.types import StepKind
from tests import flows

pytestmark = pytest.mark.timeout(60)


@cairn.workflow
async def born_kid(x: int) -> int:
    return await flows.add_one(x)


@cairn.workflow
async def parent_of_kids(n: int) -> int:
    total = 0
    for i in range(n):
        total += await cairn.child(born_kid, i)
    return total


async def test_a_child_started_here_is_born_leased_and_never_claimed(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each child starts in its parent's commit, leased to the worker that made it: no claim takes
    it (a claim is a wake-up and a transaction: 4-6 ms each on PostgreSQL)."""
    claimed: list[str] = []
    claim_work = client.store.claim_work

    async def noting(*args: Any, **kwargs: Any) -> Any:
        work = await claim_work(*args, **kwargs)
        claimed.extend(c.run.id for c in work.runs)
        return work

    monkeypatch.setattr(client.store, "claim_work", noting)
    async with cairn.Worker(client, poll_interval=0.1, lease=5.0) as worker:
        free = worker._run_slots.free
        handle = await client.start(parent_of_kids, 3)
        assert await handle.result(timeout=10) == 6
    assert worker._run_slots.free == free  # every slot a child reserved was given back
    kids = [f"{handle.id}:{seq}" for seq in (1, 2, 3)]
    for kid in kids:
        events = await client.get(kid).events()
        assert [e.kind for e in events][:1] == ["started"] and events[-1].kind == "completed"
        started = await client.get(kid).describe()
        assert started.status == RunStatus.COMPLETED and started.parent_id == handle.id
    assert not set(kids) & set(claimed), f"children claimed: {sorted(set(kids) & set(claimed))}"


class _Dead:
    id = "died-after-starting-a-child"
    lease = 0.5


async def test_a_child_born_leased_to_a_worker_that_died_is_taken_over(db_url: str) -> None:
    """A worker commits a parent's first activation, its child born leased to itself, and dies:
    the child is leased (nobody else takes it at once), and another worker takes it over once the
    lease lapses, the parent then going on as usual."""
    starter, other = cairn.Client(db_url), cairn.Client(db_url)
    try:
        handle = await starter.start(parent_of_kids, 1)  # no worker in this process: pending
        defn = parent_of_kids.__cairn_workflow__
        (claim,) = (await starter.store.claim_work(_Dead.id, [defn.id], [], None, 10, 0, _Dead.lease)).runs
        inst = WorkflowInstance.restore(defn, claim.run, claim.journal, 0)
        first = inst.activate(claim.batch, claim.now)
        inst.close()
        (child,) = [s for s in first.new_steps if s.kind == StepKind.CHILD]
        commit = Commit(claim.run, claim.token, first, (), frozenset({child.seq}), _Dead.id, _Dead.lease, None)
        assert await starter.store.commit_activation(commit) == frozenset({child.seq})
        kid = await starter.get(f"{handle.id}:{child.seq}").describe()
        assert (kid.status, kid.lease_owner, kid.lease_token) == (RunStatus.PENDING, _Dead.id, 1)
        async with cairn.Worker(other, poll_interval=0.1, lease=5.0):
            assert await other.get(handle.id).result(timeout=15) == 1
        assert (await starter.get(kid.id).describe()).lease_token > 1  # claimed: taken over, not born
    finally:
        await starter.close()
        await other.close()
