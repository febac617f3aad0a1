"""A claim passes over the runs busy here that are due, and claims again once they are not, unless
a commit of this worker's sent after that claim began has landed for them: that commit's own
wake-up then says whether the run is due. Both halves: the run still goes on at once when such a
commit leaves it due (forced interleaving, with a safety poll too long to hide a lost wake-up), and
a loop of starts beside a worker no longer makes a claim per run."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import cairn
from tests.behaviour.test_due_while_busy import ends_at_once, waits_for_an_ended_child
from tests.conftest import eventually
from tests.helpers import status_is

pytestmark = pytest.mark.timeout(60)


GATE = threading.Event()
"""Holds the first activation of `gated_signal_wait` on its thread (a plain `def` workflow)."""


@cairn.workflow
def gated_signal_wait() -> str:
    GATE.wait(20)
    payload: str = cairn.wait_for_signal("go")
    return payload


async def test_a_commit_landing_while_a_claim_is_on_its_way_still_wakes_the_run(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced: a claim begins while the run's first activation is under way (woken by the signal
    the run will wait for); the activation's commit goes out after that claim began, matches the
    signal (the run is due again) and lands before the claim reads the database. The claim finds
    the run busy and due, and drops it as news its commit's own wake-up carries: the run goes on
    at once, not at the next safety poll (30 s here)."""
    GATE.clear()
    seen: list[tuple[str, int]] = []
    target: list[str] = []
    landed = asyncio.Event()
    try:
        async with cairn.Worker(client, poll_interval=30.0, lease=60.0) as worker:
            runner = worker._runner
            real_landed, real_claim = runner.landed, client.store.claim_work

            def noting_landed(run_id: str, sent: int) -> None:
                real_landed(run_id, sent)
                seen.append((run_id, sent))
                landed.set()

            async def claim_after_the_commit(*args: Any, **kwargs: Any) -> Any:
                busy = args[8] if len(args) > 8 else kwargs["busy"]
                if target and target[0] in busy and not GATE.is_set():
                    GATE.set()  # the activation goes on, and commits after this claim began
                    await asyncio.wait_for(landed.wait(), 10)
                return await real_claim(*args, **kwargs)

            monkeypatch.setattr(runner, "landed", noting_landed)
            monkeypatch.setattr(client.store, "claim_work", claim_after_the_commit)
            handle = await client.start(gated_signal_wait)
            target.append(handle.id)
            began = time.monotonic()
            await handle.signal("go", "went")  # wakes the claim loop while the run is busy
            assert await handle.result(timeout=10) == "went"
            assert time.monotonic() - began < 5
    finally:
        GATE.set()  # never a thread left waiting on it
    assert seen and seen[0][0] == handle.id  # the interleaving was the forced one


@cairn.workflow
async def waits_for_go() -> int:
    go: int = await cairn.wait_for_signal("go")
    return go


HOLDS = [threading.Event() for _ in range(5)]
"""Each holds the first activation of one `held_at_birth` run on its thread (plain `def` workflows)."""


@cairn.workflow
def held_at_birth(i: int) -> int:
    HOLDS[i].wait(20)
    return i


async def test_runs_passed_over_at_birth_cost_no_claim_once_their_first_commit_lands(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs started here are born leased to this worker and due until their first commit. A claim
    made while their first activations are under way (woken here by a signal to another run)
    passes them over. Their commits, sent after that claim began, say whether they are due: no
    claim follows as they end. It used to: as each ended, a claim, which passed over the ones still
    under way again; under a loop of starts, a chain of claims for nothing as long as the starts
    went on (up to 60 per 1,000 runs on PostgreSQL)."""
    for hold in HOLDS:
        hold.clear()
    claims = 0
    real_claim = client.store.claim_work

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return await real_claim(*args, **kwargs)

    try:
        async with cairn.Worker(client, poll_interval=30.0) as worker:  # no safety poll to count
            waiting = await client.start(waits_for_go)
            assert await eventually(lambda: status_is(waiting, cairn.RunStatus.WAITING), what="the run waiting")
            held = [await client.start(held_at_birth, i) for i in range(len(HOLDS))]
            monkeypatch.setattr(client.store, "claim_work", counted)
            await waiting.signal("go", 7)  # one wake-up of the claim loop, with the held runs under way
            assert await waiting.result(timeout=10) == 7
            woken = claims
            assert woken >= 1 and all(h.id in worker._runner.busy() for h in held)
            for i, handle in enumerate(held):  # one at a time: each ends with the others under way
                HOLDS[i].set()
                assert await handle.result(timeout=10) == i
                await eventually(lambda h=handle: _not_busy(worker, h.id), what="the run no longer busy")
                for _ in range(20):  # the turns of the loop a claim it woke would take to begin
                    await asyncio.sleep(0)
            # One more may come from elsewhere (SQLite's commit watcher wakes claim loops at its first look).
            assert claims - woken <= 1, f"{claims - woken} claims as the passed-over runs ended"
    finally:
        for hold in HOLDS:
            hold.set()


async def _not_busy(worker: cairn.Worker, run_id: str) -> bool:
    return run_id not in worker._runner.busy()


async def test_a_commit_sent_before_a_claim_began_does_not_excuse_that_claim(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced: a run's first commit leaves it due (the child it waits for had ended) and lands on
    the database; its wake-up starts a claim (and is used up by it); only then does the worker
    learn that the commit landed, while that claim is on its way. The claim finds the run busy and
    due: it must claim again once the run is no longer busy, as no other wake-up will come (the
    safety poll is 30 s here)."""
    began, landed = asyncio.Event(), asyncio.Event()
    async with cairn.Worker(client, poll_interval=30.0, lease=60.0) as worker:
        await client.run(ends_at_once, 1, id="ended-child", timeout=10)
        runner = worker._runner
        real_landed, real_claim, real_commit = runner.landed, client.store.claim_work, client.store.commit_activation
        target: list[str] = []

        def noting_landed(run_id: str, sent: int) -> None:
            real_landed(run_id, sent)
            if run_id in target:
                landed.set()

        async def commit_then_wait_for_a_claim(commit: Any) -> frozenset[int]:
            started = await real_commit(commit)
            if commit.run.id in target and not began.is_set():
                await asyncio.wait_for(began.wait(), 10)  # landed, but the worker hears of it only now
            return started

        async def claim_that_hears_of_the_landing(*args: Any, **kwargs: Any) -> Any:
            busy = args[8] if len(args) > 8 else kwargs["busy"]
            if not target or target[0] not in busy or began.is_set():
                return await real_claim(*args, **kwargs)
            began.set()
            work = await real_claim(*args, **kwargs)
            await asyncio.wait_for(landed.wait(), 10)
            return work

        monkeypatch.setattr(runner, "landed", noting_landed)
        monkeypatch.setattr(client.store, "commit_activation", commit_then_wait_for_a_claim)
        monkeypatch.setattr(client.store, "claim_work", claim_that_hears_of_the_landing)
        target.append("waits-1")
        started = time.monotonic()
        handle = await client.start(waits_for_an_ended_child, "ended-child", id="waits-1")
        assert await handle.result(timeout=10) == 2
        assert time.monotonic() - started < 5
    assert began.is_set() and landed.is_set()  # the interleaving was the forced one
