"""The store's claim and commit transactions on both backends, driven directly (no worker):
group commits fail only the commit that lost its fence, and a claim leaves busy runs alone."""

from __future__ import annotations

import pytest

import cairn
from cairn import RunStatus
from cairn.errors import LeaseLost
from cairn.store.protocol import ActivationResult, Commit, RunClaim, WorkClaim
from tests import flows

pytestmark = pytest.mark.timeout(60)

WORKFLOWS = [flows.function_style.__cairn_workflow__.id]


async def _claim(client: cairn.Client, worker: str = "w1", busy: set[str] | None = None) -> WorkClaim:
    return await client.store.claim_work(worker, WORKFLOWS, [], None, 10, 0, 30.0, None, busy or set())


def _done(claim: RunClaim, value: int) -> Commit:
    return Commit(claim.run, claim.token, ActivationResult(status=RunStatus.COMPLETED, result=str(value)))


async def test_a_group_commit_fails_only_the_commit_that_lost_its_fence(client: cairn.Client) -> None:
    first = await client.start(flows.function_style, 1)
    second = await client.start(flows.function_style, 2)
    claims = {c.run.id: c for c in (await _claim(client)).runs}
    assert set(claims) == {first.id, second.id}
    await second.pause()  # a control operation moves the second run's token under the worker

    outcomes = await client.store.commit_activations([_done(claims[first.id], 10), _done(claims[second.id], 20)])

    assert outcomes[0] is None
    assert isinstance(outcomes[1], LeaseLost)
    assert await first.result(timeout=5) == 10
    paused = await second.describe()
    assert paused.status == RunStatus.PAUSED and paused.result is None  # nothing of the stale commit landed


async def test_a_claim_leaves_runs_this_worker_is_busy_with_alone(client: cairn.Client) -> None:
    run = await client.start(flows.function_style, 1)
    (claim,) = (await _claim(client)).runs  # leased to w1, still due until its activation commits

    assert (await _claim(client, busy={run.id})).runs == []
    assert (await _claim(client, worker="w2")).runs == []  # leased to another worker
    (again,) = (await _claim(client)).runs  # w1 lost track of it (not busy): it takes it back
    assert again.token == claim.token + 1

    outcomes = await client.store.commit_activations([_done(claim, 1)])  # the stale activation
    assert isinstance(outcomes[0], LeaseLost)
    assert (await run.describe()).status == RunStatus.PENDING
