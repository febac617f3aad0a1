"""A claim that finds due work locked by another worker's claim in flight (SKIP LOCKED passes it
over) says nothing is due now: that claim takes it, or its rollback leaves it to the safety poll.
It said "due now", and the worker claimed again within a millisecond, two to four times, until the
other claim committed: with two workers and runs started one at a time, 3.2-4.4 claims a start
instead of 2, and two workers slower than one (xproc hunt)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import cairn
from cairn import RunStatus
from cairn.records import ActivationResult
from cairn.store.base import WORK, Tx
from cairn.store.open import open_store
from cairn.store.protocol import Commit
from tests import flows
from tests.helpers import action_step, new_run

WORKFLOW, ACTION = "tests.flows.Sequence3", "tests.flows.add_one"

pytestmark = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)


@pytest.fixture
def other_claim(db_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection standing for another worker's claim under way: rows it locks stay locked."""
    with psycopg.connect(db_url) as conn:
        yield conn
        conn.rollback()


async def test_a_run_another_claim_holds_is_not_due_for_this_one(
    client: cairn.Client, other_claim: psycopg.Connection[tuple[object, ...]]
) -> None:
    handle = await client.start(flows.Sequence3, 1)
    run = await client.store.get_run(handle.id)
    assert run is not None
    other_claim.execute("SELECT id FROM cairn_runs WHERE id = %s FOR UPDATE", (handle.id,))
    work = await client.store.claim_work("w2", [run.workflow], [], None, 16, 16, 30.0)
    assert work.runs == []
    assert work.next_due_in is None, work.next_due_in


async def test_an_attempt_another_claim_holds_is_not_due_for_this_one(
    client: cairn.Client, other_claim: psycopg.Connection[tuple[object, ...]]
) -> None:
    """An action step due, locked by another worker's claim of actions."""
    store = client.store
    await store.insert_run(new_run("r1"))
    (claim,) = (await store.claim_work("w1", [WORKFLOW], [], None, 16, 0, 30.0)).runs
    await store.commit_activation(Commit(claim.run, claim.token, ActivationResult(new_steps=[action_step(1)])))
    other_claim.execute("SELECT seq FROM cairn_steps WHERE run_id = 'r1' AND seq = 1 FOR UPDATE")
    work = await store.claim_work("w2", [], [ACTION], None, 0, 16, 30.0)
    assert work.actions == []
    assert work.next_due_in is None, work.next_due_in


async def test_a_full_claim_wakes_the_claims_that_passed_over_what_it_left(db_url: str) -> None:
    """Worker A, one slot free, claims while two runs are due (one waiting on a timer due now, one
    new): its walks lock both, its limit takes one. Worker B's claim meanwhile passes over both and
    hears of no future wake-up; once A commits, the run A left is free, and B must hear of it
    rather than wait for its safety poll (xproc-regr2 hunt: 0.2-1 s later, against 8 ms)."""
    s_a, s_b = open_store(db_url), open_store(db_url)
    await s_a.open()
    await s_b.open()
    try:
        await s_a.insert_run(new_run("waiting1"))
        (claim,) = (await s_a.claim_work("w0", [WORKFLOW], [], None, 1, 1, 30.0)).runs
        due = ActivationResult(status=RunStatus.WAITING, wake_at=time.time() - 5)
        await s_a.commit_activation(Commit(claim.run, claim.token, due))
        await s_a.insert_run(new_run("new1"))
        loop = asyncio.get_running_loop()
        in_claim, release = threading.Event(), threading.Event()
        original = s_a.db.transaction

        def held_open(fn: Callable[[Tx], Any]) -> Callable[[Tx], Any]:
            def run(tx: Tx) -> Any:
                out = fn(tx)
                in_claim.set()
                release.wait(10)
                return out

            return run

        s_a.db.transaction = lambda fn, *a, **k: original(held_open(fn), *a, **k)  # type: ignore[method-assign]
        a_claim = asyncio.create_task(s_a.claim_work("wA", [WORKFLOW], [], None, 1, 1, 30.0))
        await loop.run_in_executor(None, in_claim.wait, 10)
        work_b = await s_b.claim_work("wB", [WORKFLOW], [], None, 4, 4, 30.0)
        assert work_b.runs == [] and work_b.next_due_in is None  # both passed over
        heard = asyncio.Event()
        unsubscribe = s_b.subscribe_key(WORK, lambda _detail: loop.call_soon_threadsafe(heard.set))
        try:
            release.set()
            (taken,) = (await a_claim).runs
            await asyncio.wait_for(heard.wait(), 5)
        finally:
            unsubscribe()
        left = {"waiting1", "new1"} - {taken.run.id}
        assert [c.run.id for c in (await s_b.claim_work("wB", [WORKFLOW], [], None, 4, 4, 30.0)).runs] == list(left)
    finally:
        await s_a.close()
        await s_b.close()
