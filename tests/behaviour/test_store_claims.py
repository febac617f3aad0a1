"""The store's claim and commit transactions on both backends, driven directly (no worker):
group commits fail only the commit that lost its fence, and a claim leaves busy runs alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TypeVar

import psycopg
import pytest

import cairn
from cairn import RunStatus
from cairn.clock import SYSTEM, SkippingClock
from cairn.errors import LeaseLost
from cairn.records import ActivationResult, NewStep
from cairn.store.base import Tx
from cairn.store.protocol import ActionClaim, Commit, Completion, RunClaim, WorkClaim
from cairn.store.sql_store import OWN_NEW_RUN_SETTLE
from cairn.types import StepKind, StepStatus
from tests import flows
from tests.conftest import eventually

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

    assert outcomes[0] == frozenset()  # landed, no child born with it
    assert isinstance(outcomes[1], LeaseLost)
    assert len(transactions) == 3  # tried together, refused by the stale one, then each apart
    assert await first.result(timeout=5) == 10
    paused = await second.describe()
    assert paused.status == RunStatus.PAUSED and paused.result is None  # nothing of the stale commit landed


async def test_a_claim_leaves_runs_this_worker_is_busy_with_alone(client: cairn.Client) -> None:
    clock = client.store.clock = SkippingClock()
    try:
        run = await client.start(flows.function_style, 1)
        (claim,) = (await _claim(client)).runs  # leased to w1, still due until its activation commits

        assert (await _claim(client, busy={run.id})).runs == []
        assert (await _claim(client, worker="w2")).runs == []  # leased to another worker
        # w1 lost track of it (not busy). Just leased, it may be a run born to w1 while that claim
        # was under way (its activation on its way): left alone for OWN_NEW_RUN_SETTLE seconds.
        assert (await _claim(client)).runs == []
        clock.advance(OWN_NEW_RUN_SETTLE)
        (again,) = (await _claim(client)).runs  # then w1 takes it back
        assert again.token == claim.token + 1
    finally:
        client.store.clock = SYSTEM

    with pytest.raises(LeaseLost):
        await client.store.commit_activation(_done(claim, 1))  # the stale activation
    assert (await run.describe()).status == RunStatus.PENDING


async def test_runs_started_together_share_one_transaction(client: cairn.Client, db_url: str) -> None:
    await client.store.open()
    holder = None
    if db_url.startswith("sqlite"):
        # A write that finds SQLite's writer free commits at once on the event loop, alone (its
        # statements take microseconds): grouping pays when writes wait, so make them wait for
        # the lock another connection holds.
        holder = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    transactions = _count_transactions(client)
    starting = asyncio.gather(*(client.start(flows.function_style, i) for i in range(20)))
    if holder is not None:
        await eventually(lambda: _true(len(transactions) == 2), what="two starts waiting for the lock")
        holder.rollback()
        holder.close()
    handles = await starting

    # Group commit: the first goes at once on its own, the others queue behind it and share (a
    # second flusher may take a share as well).
    assert len(transactions) <= 3
    rows = [await h.describe() for h in handles]
    assert [r.status for r in rows] == [RunStatus.PENDING] * 20
    assert len({r.id for r in rows}) == 20


async def test_a_claim_takes_new_runs_only_up_to_their_limit_and_runs_under_way_beyond_it(client: cairn.Client) -> None:
    """A worker with no action slot free takes no new run (its first action would have to be
    claimed by some other worker), but still takes a run woken by its timer."""
    sleeper = await client.start(flows.function_style, 0)
    (claim,) = (await _claim(client)).runs
    woken = ActivationResult(status=RunStatus.WAITING, wake_at=claim.now - 1)  # its timer is due
    await client.store.commit_activation(Commit(claim.run, claim.token, woken))
    new = [await client.start(flows.function_style, i) for i in range(1, 4)]

    def claim_with(new_runs: int, worker: str = "w1") -> Awaitable[WorkClaim]:
        return client.store.claim_work(worker, WORKFLOWS, [], None, 10, 0, 30.0, None, set(), new_runs)

    assert [c.run.id for c in (await claim_with(0)).runs] == [sleeper.id]
    assert [c.run.id for c in (await claim_with(2, "w2")).runs] == [new[0].id, new[1].id]  # oldest first
    assert [c.run.id for c in (await claim_with(0, "w3")).runs] == []
    assert [c.run.id for c in (await claim_with(1, "w3")).runs] == [new[2].id]


async def test_a_claim_takes_the_oldest_due_runs_new_or_under_way(client: cairn.Client) -> None:
    """Runs woken again do not starve new runs of a worker's slots: due runs go oldest first."""
    sleeper = await client.start(flows.function_style, 0)
    (claim,) = (await _claim(client)).runs
    new = await client.start(flows.function_style, 1)  # due from now on
    woken = ActivationResult(status=RunStatus.WAITING, wake_at=claim.now + 0.2)  # due a little later
    await client.store.commit_activation(Commit(claim.run, claim.token, woken))

    async def one(worker: str) -> list[str]:
        work = await client.store.claim_work(worker, WORKFLOWS, [], None, 1, 0, 30.0, None, set(), 1)
        return [c.run.id for c in work.runs]

    async def timer_due() -> bool:
        return await client.store.now() > claim.now + 0.2

    await eventually(timer_due, what="the sleeper's timer to fall due")
    assert await one("w2") == [new.id]
    assert await one("w3") == [sleeper.id]


def _action(seq: int) -> NewStep:
    return NewStep(seq=seq, kind=StepKind.ACTION, name="double", args="{}")


def _attempt(claim: RunClaim, seq: int, attempt: int = 1) -> ActionClaim:
    return ActionClaim(claim.run.id, seq, "double", "{}", attempt, None, None)


async def test_commits_made_together_each_write_their_own_run(client: cairn.Client) -> None:
    handles = await asyncio.gather(*(client.start(flows.function_style, i) for i in range(10)))
    claims = {c.run.id: c for c in (await _claim(client)).runs}  # all ten (a claim takes up to ten)
    assert len(claims) == 10
    number = {h.id: i for i, h in enumerate(handles)}
    transactions = _count_transactions(client)

    # First activations: each schedules two actions, born leased to this worker.
    await asyncio.gather(
        *(
            client.store.commit_activation(
                Commit(
                    c.run,
                    c.token,
                    ActivationResult(new_steps=[_action(1), _action(2)]),
                    (),
                    frozenset({1, 2}),
                    "w1",
                    30,
                )
            )
            for c in claims.values()
        )
    )
    # Second: each carries its run's own two results and ends the run with a value of its own.
    await asyncio.gather(
        *(
            client.store.commit_activation(
                Commit(
                    replace(c.run, activations=1, status=RunStatus.RUNNING),
                    c.token + 1,
                    ActivationResult(delivered=[1, 2], status=RunStatus.COMPLETED, result=str(number[c.run.id])),
                    [Completion(_attempt(c, seq), f"{number[c.run.id]}{seq}", None) for seq in (1, 2)],
                    owner="w1",
                    lease=30,
                )
            )
            for c in claims.values()
        )
    )

    assert len(transactions) < len(claims)  # carried together, not one transaction per commit
    for h in handles:
        assert await h.result(timeout=5) == number[h.id]
        steps = await client.store.list_steps(h.id)
        assert [(s.seq, s.status, s.result, s.delivered_in) for s in steps] == [
            (1, StepStatus.COMPLETED, f"{number[h.id]}1", 2),
            (2, StepStatus.COMPLETED, f"{number[h.id]}2", 2),
        ]


async def test_a_commit_carrying_a_superseded_result_writes_nothing(client: cairn.Client) -> None:
    await client.start(flows.function_style, 1)
    (claim,) = (await _claim(client)).runs
    first = ActivationResult(new_steps=[_action(1), _action(2)])
    await client.store.commit_activation(Commit(claim.run, claim.token, first, (), frozenset({1, 2}), "w1", 30))

    stale = [Completion(_attempt(claim, 1), "1", None), Completion(_attempt(claim, 2, attempt=7), "2", None)]
    ending = ActivationResult(delivered=[1, 2], status=RunStatus.COMPLETED, result="3")
    with pytest.raises(LeaseLost, match=r"step 2 of run \S+ was superseded"):
        await client.store.commit_activation(Commit(claim.run, claim.token + 1, ending, stale, owner="w1", lease=30))

    run = await client.store.get_run(claim.run.id)
    assert run is not None and run.status == RunStatus.RUNNING and run.lease_token == claim.token + 1
    steps = await client.store.list_steps(claim.run.id)
    assert [(s.status, s.result) for s in steps] == [(StepStatus.RUNNING, None)] * 2


async def test_row_writes_out_of_their_usual_order_keep_the_order_given(client: cairn.Client) -> None:
    """Within one piece, a row write named earlier in ROW_WRITES than the last one sends what is
    held back first: here the fence checks the token that the finish before it advanced."""
    handle = await client.start(flows.function_style, 1)
    (claim,) = (await _claim(client)).runs
    ended = {
        **dict.fromkeys(["result", "error", "properties", "started_at", "completed_at", "wake_at", "pause_reason"]),
        **dict.fromkeys(["lease_owner", "lease"]),
        "id": handle.id,
        "token": claim.token,
        "status": RunStatus.PAUSED,
        "activations": 0,
        "now": 1.0,
        "parked": 1,
    }

    def out_of_order(tx: Tx) -> None:
        tx.write_row("finish_activation", ended, notify="work")
        advanced = {"id": handle.id, "token": claim.token + 1, "now": 1.0}
        tx.write_row("fence_run", advanced, expect=LeaseLost("the finish did not go first"))

    await client.store.db.transaction(out_of_order)

    run = await handle.describe()
    assert (run.status, run.lease_token) == (RunStatus.PAUSED, claim.token + 1)


async def _true(value: bool) -> bool:
    return value


def _count_transactions(client: cairn.Client) -> list[bool]:
    """One entry per transaction the store's database runs from now on (the real database runs
    them; this only counts what passes through)."""
    calls: list[bool] = []
    real = client.store.db.transaction

    async def counted(fn: Callable[[Tx], T], write: bool = True, rerunnable: bool = False) -> T:
        calls.append(write)
        return await real(fn, write, rerunnable)

    client.store.db.transaction = counted  # type: ignore[method-assign]
    return calls


def _sql(db_url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """One statement on its own connection, as an operator's script would run it."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"))
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            rows = conn.execute(statement, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()
    with psycopg.connect(db_url, autocommit=True) as pg:
        cur = pg.execute(statement.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []


async def test_deleting_a_run_deletes_its_steps_and_events(
    client: cairn.Client, worker: cairn.Worker, db_url: str
) -> None:
    """Retention is a DELETE on the runs table: what a run wrote goes with it, and other runs'
    rows stay (PostgreSQL does it with a trigger, not a foreign key checked on every insert)."""
    gone = await client.start(flows.function_style, 1)
    kept = await client.start(flows.function_style, 2)
    await gone.result(timeout=10)
    await kept.result(timeout=10)
    count = "SELECT COUNT(*) FROM {} WHERE run_id = ?"
    for table in ("cairn_steps", "cairn_events"):
        assert _sql(db_url, count.format(table), (gone.id,))[0][0] > 0

    await asyncio.to_thread(_sql, db_url, "DELETE FROM cairn_runs WHERE id = ?", (gone.id,))

    for table in ("cairn_steps", "cairn_events"):
        assert _sql(db_url, count.format(table), (gone.id,))[0][0] == 0, f"{table} kept a deleted run's rows"
        assert _sql(db_url, count.format(table), (kept.id,))[0][0] > 0, f"{table} lost another run's rows"
