"""A parent made due by one child's end goes on at once, though another child's end held its row
when its worker claimed (PostgreSQL: the claim skips locked rows).

A child's end commit locks its parent's row whether or not the parent waits for that child (parent
before child: see `journal_tx.lock_in_order`). The parent waiting for the first of its children,
made due by its end, was skipped by its worker's claim while a sibling's end, which the parent did
not wait for yet (awaited later), held the row; that commit resolved nothing and woke nobody, and the claim counts
only future due times (a run a claim under way holds brings its own wake-up). The parent sat due,
leased to its worker, until that worker's safety poll: 1-3 runs in 25-40 of a parent that starts 3
children on each of two queues served by different worker processes, and awaits each."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import cairn
from cairn.store import journal_tx
from cairn.store.base import Tx
from cairn.store.protocol import Commit

pytestmark = pytest.mark.timeout(60)

KIDS = "locked-parent-kids"
GATE = threading.Event()
"""Holds `ends_later` on its thread (a plain `def` workflow) until the test lets it end."""


@cairn.workflow(queue=KIDS)
async def ends_first() -> int:
    return 1


@cairn.workflow(queue=KIDS)
def ends_later() -> int:
    GATE.wait(20)
    return 2


@cairn.workflow
async def awaits_first_then_later() -> int:
    first = cairn.start_child(ends_first)
    later = cairn.start_child(ends_later)
    return await first.result() + await later.result()


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_parent_due_while_a_sibling_end_holds_it_still_goes_on(
    client: cairn.Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced: the parent's worker claims after the first child ended (the parent due) while the
    later child's end commit, held in its transaction, has the parent's row locked; that commit
    then lands. The parent goes on at once, not at its worker's safety poll (30 s here)."""
    GATE.clear()
    first_ended, later_holds, claimed = threading.Event(), threading.Event(), threading.Event()
    skipped: list[int] = []
    real_commit, real_claim = journal_tx.commit_activation, client.store.claim_work

    def holding(tx: Tx, commit: Commit) -> frozenset[int]:
        born = real_commit(tx, commit)
        if commit.run.workflow == ends_first.__cairn_workflow__.id:
            first_ended.set()
        elif commit.run.workflow == ends_later.__cairn_workflow__.id:
            later_holds.set()  # its transaction holds the parent's row, locked for its end
            claimed.wait(10)
        return born

    async def claim_while_the_parent_is_locked(*args: Any, **kwargs: Any) -> Any:
        if not first_ended.is_set() or claimed.is_set():
            return await real_claim(*args, **kwargs)
        GATE.set()  # the later child ends now, and its commit locks the parent
        assert await asyncio.to_thread(later_holds.wait, 10)
        try:
            work = await real_claim(*args, **kwargs)
            skipped.append(len(work.runs))
            return work
        finally:
            claimed.set()

    monkeypatch.setattr(journal_tx, "commit_activation", holding)
    monkeypatch.setattr(client.store, "claim_work", claim_while_the_parent_is_locked)
    kids = cairn.Client(db_url)
    await kids.store.open()
    try:
        async with (
            cairn.Worker(client, queues=["default"], poll_interval=30.0, lease=60.0),
            cairn.Worker(kids, queues=[KIDS], poll_interval=30.0, lease=60.0),
        ):
            handle = await client.start(awaits_first_then_later)
            assert await asyncio.to_thread(claimed.wait, 10)
            began = time.monotonic()
            assert await handle.result(timeout=10) == 3
            assert time.monotonic() - began < 5
    finally:
        GATE.set()  # never a thread left waiting on it
        claimed.set()
        await kids.close()
    assert skipped == [0]  # the interleaving was the forced one: the locked parent was not claimed
