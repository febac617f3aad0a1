"""The store's claim and commit transactions on both backends, driven directly (no worker):
group commits fail only the commit that lost its fence, and a claim leaves busy runs alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

import pytest

import cairn
from cairn import RunStatus
from cairn.errors import LeaseLost
from cairn.store.base import Tx
from cairn.store.protocol import ActivationResult, Commit, RunClaim, WorkClaim
from tests import flows

T = TypeVar("T")

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

    transactions = _count_transactions(client)
    outcomes = await asyncio.gather(
        client.store.commit_activation(_done(claims[first.id], 10)),
        client.store.commit_activation(_done(claims[second.id], 20)),
        return_exceptions=True,
    )

    assert outcomes[0] is None
    assert isinstance(outcomes[1], LeaseLost)
    assert len(transactions) == 3  # tried together, refused by the stale one, then each apart
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

    with pytest.raises(LeaseLost):
        await client.store.commit_activation(_done(claim, 1))  # the stale activation
    assert (await run.describe()).status == RunStatus.PENDING


async def test_runs_started_together_share_one_transaction(client: cairn.Client) -> None:
    transactions = _count_transactions(client)
    handles = await asyncio.gather(*(client.start(flows.function_style, i) for i in range(20)))

    assert len(transactions) == 1  # group commit: one transaction for the twenty inserts
    rows = [await h.describe() for h in handles]
    assert [r.status for r in rows] == [RunStatus.PENDING] * 20
    assert len({r.id for r in rows}) == 20


def _count_transactions(client: cairn.Client) -> list[bool]:
    """One entry per transaction the store's database runs from now on (the real database runs
    them; this only counts what passes through)."""
    calls: list[bool] = []
    real = client.store.db.transaction

    async def counted(fn: Callable[[Tx], T], write: bool = True) -> T:
        calls.append(write)
        return await real(fn, write)

    client.store.db.transaction = counted  # type: ignore[method-assign]
    return calls
