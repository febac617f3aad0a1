"""A claim that finds due work locked by another worker's claim in flight (SKIP LOCKED passes it
over) says nothing is due now: that claim takes it, or its rollback leaves it to the safety poll.
It said "due now", and the worker claimed again within a millisecond, two to four times, until the
other claim committed: with two workers and runs started one at a time, 3.2-4.4 claims a start
instead of 2, and two workers slower than one (xproc hunt)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

import cairn
from cairn.records import ActivationResult
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
