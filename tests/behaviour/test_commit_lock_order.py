"""Two workers' commits that touch each other's runs never deadlock (both backends; the forced
orders are PostgreSQL's, where commits take row locks, while SQLite serialises its writers).

A commit writes into runs other than its own: a child's end into its parent (the step it waited on,
and a wake-up), a cancel into the child its parent stopped waiting for, a signal into its target, a
child it starts under an id that exists into that run, an action's outcome recorded apart into the
action's run. Taken in the order each commit meets them, two commits could lock the same two runs in
opposite orders (a parent then its child, while the child's worker, its group commit having fenced
the child already, writes the parent): a deadlock, which PostgreSQL breaks only after its
deadlock_timeout (1 s), the losing worker's whole batch stalled that long and then sent again.

Each test here holds one worker's commit inside its transaction, with the locks it has taken by
then, starts the other worker's commit, waits until it waits for a lock, and lets the first go on.
Before, the first then waited for the second: a deadlock (`Database.lock_conflicts` counts the
transactions refused as its loser) and a stall of a second. Now a commit that touches another run
first locks every run it will write, in id order (see `journal_tx.lock_in_order`).

The randomized test at the end has parents, children and siblings cancel, signal and end at once on
two real workers, and counts the deadlocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

import cairn
from cairn import RunStatus, StepKind, StepStatus
from cairn.errors import LeaseLost
from cairn.records import ActivationResult, NewRun, NewStep, RunRow
from cairn.store import journal_tx
from cairn.store.base import Database, Tx
from cairn.store.protocol import Commit, RunClaim
from cairn.store.sql_store import SqlStore
from tests import lock_order_flows as lf
from tests.conftest import eventually
from tests.helpers import holds, sql_row, waits_for_a_lock

pytestmark = pytest.mark.timeout(120)

WF = "tests.lock_order.driven"
"""Runs driven through the store directly: no worker serves this workflow."""
LEASE = 30.0


def _store(client: cairn.Client) -> SqlStore:
    assert isinstance(client.store, SqlStore)
    return client.store


def _db(client: cairn.Client) -> Database:
    return _store(client).db


@asynccontextmanager
async def _second(url: str) -> AsyncIterator[cairn.Client]:
    """Another process's client on the same database: a worker of its own, its own group commits."""
    other = cairn.Client(url)
    await other.store.open()
    try:
        yield other
    finally:
        await other.close()


async def _claim(client: cairn.Client, worker: str) -> dict[str, RunClaim]:
    work = await _store(client).claim_work(worker, [WF], [], None, 20, 0, LEASE, None, set())
    return {c.run.id: c for c in work.runs}


def _child_step(seq: int, child_id: str) -> NewStep:
    return NewStep(seq, StepKind.CHILD, WF, "{}", options={"run_id": child_id})


def _send(seq: int, target: str, name: str, payload: Any) -> NewStep:
    return NewStep(seq, StepKind.SEND_SIGNAL, name, json.dumps({"run_id": target, "payload": payload}))


async def _parent(client: cairn.Client, run_id: str, children: int) -> tuple[RunRow, int]:
    """A run leased to w1 (sticky) whose first activation started `children` children, each
    awaited at its own step (1, 2, ...): its row and token for the next commit."""
    store = _store(client)
    await store.insert_run(NewRun(run_id, WF, "{}", "default"))
    claim = (await _claim(client, "w1"))[run_id]
    steps = [_child_step(seq, f"{run_id}:{seq}") for seq in range(1, children + 1)]
    result = ActivationResult(new_steps=steps, status=RunStatus.RUNNING)
    await store.commit_activation(Commit(claim.run, claim.token, result, owner="w1", lease=LEASE, now=claim.now))
    row = await store.get_run(run_id)
    assert row is not None and row.lease_owner == "w1"
    return row, claim.token + 1


class _Gate:
    """Holds one commit inside its transaction, past the locks it has taken by then: a statement
    that waits for its answer sends what the commit holds back (its fence, and anything it locked
    first), and the commit's thread then waits to be let go. Only on PostgreSQL, where a
    transaction runs on a connection thread (SQLite may write on the event loop)."""

    def __init__(self, active: bool) -> None:
        self.active = active
        self.entered = threading.Event()
        self.release = threading.Event()
        if not active:
            self.release.set()

    def hold(self, tx: Tx) -> None:
        if not self.active:
            return
        tx.now()  # on the event loop (no connection), this sends the commit to a thread first
        self.entered.set()
        assert self.release.wait(30), "the held commit was never let go"

    async def held(self) -> None:
        await eventually(lambda: holds(self.entered.is_set()), what="the first commit held inside its transaction")


@contextmanager
def _hold_in(monkeypatch: pytest.MonkeyPatch, name: str, gate: _Gate, when: Callable[..., bool]) -> Iterator[None]:
    """Wrap `journal_tx.<name>` so that the call `when(*args)` picks holds its transaction there."""
    original = getattr(journal_tx, name)

    def wrapper(tx: Tx, *args: Any, **kwargs: Any) -> Any:
        if when(*args):
            gate.hold(tx)
        return original(tx, *args, **kwargs)

    monkeypatch.setattr(journal_tx, name, wrapper)
    yield


async def _deadlock_timeout(url: str) -> float:
    def read() -> float:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(b"SELECT setting::float / 1000 FROM pg_settings WHERE name = 'deadlock_timeout'")
            value = row.fetchone()
            assert value is not None
            return float(value[0])

    return await asyncio.to_thread(read)


async def _interleave(
    url: str, gate: _Gate, first: Callable[[], Awaitable[Any]], second: Callable[[], Awaitable[Any]]
) -> tuple[list[Any], float]:
    """Run `first` until the gate holds it (on PostgreSQL), then `second` until it waits for a lock,
    then let `first` go on: both outcomes (errors as values) and how long they took from then. On
    SQLite, one after the other (its writers take turns: the order is what is tested there)."""
    if not gate.active:
        one = await _outcome(first)
        started = time.monotonic()
        two = await _outcome(second)
        return [one, two], time.monotonic() - started
    one_task = asyncio.ensure_future(_outcome(first))
    await gate.held()
    two_task = asyncio.ensure_future(_outcome(second))
    await eventually(lambda: waits_for_a_lock(url), what="the second commit waiting for a row the first holds")
    started = time.monotonic()
    gate.release.set()
    outcomes = await asyncio.wait_for(asyncio.gather(one_task, two_task), 20)
    return list(outcomes), time.monotonic() - started


async def _outcome(fn: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await fn()
    except Exception as exc:  # a value to check: LeaseLost is one commit's right answer
        return exc


async def _steps(client: cairn.Client, run_id: str) -> dict[int, tuple[StepStatus, str | None]]:
    return {s.seq: (s.status, s.result) for s in await _store(client).list_steps(run_id)}


# --- forced interleavings ------------------------------------------------------------------------------


async def test_a_parent_cancelling_its_child_and_the_childs_group_commit_do_not_deadlock(
    client: cairn.Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker 1 commits a parent that stopped waiting for its child `p:1` (so it cancels it);
    worker 2's group commit holds that child's activation (it sleeps) and the end of its sibling
    `p:2`, written into the parent. Before: worker 1 locked the parent (its fence) and then the
    child; worker 2 fenced the child and then locked the parent for its sibling's end. Now each
    locks the parent and both children in id order before anything else."""
    postgres = db_url.startswith("postgresql")
    parent, token = await _parent(client, "p", children=2)
    async with _second(db_url) as other:
        claims = await _claim(other, "w2")
        assert set(claims) == {"p:1", "p:2"}
        now = await _store(other).now()
        sleeps = Commit(
            claims["p:1"].run,
            claims["p:1"].token,
            ActivationResult(status=RunStatus.RUNNING, wake_at=now + 3600),
            owner="w2",
            lease=LEASE,
            now=now,
        )
        ends = Commit(
            claims["p:2"].run,
            claims["p:2"].token,
            ActivationResult(status=RunStatus.COMPLETED, result='"two"'),
            now=now,
        )
        cancels = Commit(
            parent, token, ActivationResult(cancelled=[1], status=RunStatus.RUNNING), owner="w1", lease=LEASE, now=now
        )
        gate = _Gate(postgres)

        async def worker_2() -> list[Any]:  # one group commit: both are queued before its flusher runs
            store = _store(other)
            return await asyncio.gather(
                store.commit_activation(sleeps), store.commit_activation(ends), return_exceptions=True
            )

        with _hold_in(monkeypatch, "_cancel_step", gate, lambda run, seq, *_: run.id == "p" and seq == 1):
            (cancelled, (slept, ended)), took = await _interleave(
                db_url, gate, lambda: _store(client).commit_activation(cancels), worker_2
            )

        assert cancelled == frozenset() and ended == frozenset()  # landed (no child born in either)
        assert isinstance(slept, LeaseLost)  # its run was cancelled under it, by the parent's commit
        assert (await _store(client).get_run("p:1")).status == RunStatus.CANCELLED  # type: ignore[union-attr]
        assert (await _store(client).get_run("p:2")).status == RunStatus.COMPLETED  # type: ignore[union-attr]
        steps = await _steps(client, "p")
        assert steps[1][0] == StepStatus.CANCELLED
        assert steps[2] == (StepStatus.COMPLETED, '"two"')
        row = await _store(client).get_run("p")
        assert row is not None and row.status == RunStatus.RUNNING and await _woken(db_url, "p")
        conflicts = _db(client).lock_conflicts + _db(other).lock_conflicts
        if postgres:
            assert took < await _deadlock_timeout(db_url) / 2, (
                f"the commits took {took:.3f}s once let go ({conflicts=})"
            )
        assert conflicts == 0


async def test_a_parent_and_its_child_signalling_each_other_do_not_deadlock(
    client: cairn.Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker 1 commits a parent that signals its child while worker 2 commits the child, which
    signals its parent. Before: each fenced its own run and then woke the other (an UPDATE of its
    row). Now each locks both runs, in id order, first."""
    postgres = db_url.startswith("postgresql")
    parent, token = await _parent(client, "q", children=1)
    async with _second(db_url) as other:
        child = (await _claim(other, "w2"))["q:1"]
        now = await _store(other).now()
        pings = Commit(
            parent,
            token,
            ActivationResult(new_steps=[_send(2, "q:1", "ping", 1)], status=RunStatus.RUNNING),
            owner="w1",
            lease=LEASE,
            now=now,
        )
        pongs = Commit(
            child.run,
            child.token,
            ActivationResult(new_steps=[_send(1, "q", "pong", 2)], status=RunStatus.RUNNING, wake_at=now + 3600),
            owner="w2",
            lease=LEASE,
            now=now,
        )
        gate = _Gate(postgres)
        with _hold_in(monkeypatch, "signal", gate, lambda target, *_: target == "q:1"):
            (pinged, ponged), took = await _interleave(
                db_url,
                gate,
                lambda: _store(client).commit_activation(pings),
                lambda: _store(other).commit_activation(pongs),
            )

        assert pinged == frozenset() and ponged == frozenset()  # both landed
        assert (await _steps(client, "q"))[2] == (StepStatus.COMPLETED, "null")  # sent
        assert (await _steps(client, "q:1"))[1] == (StepStatus.COMPLETED, "null")
        assert await _buffered(client, "q") == [("pong", "2")]
        assert await _buffered(client, "q:1") == [("ping", "1")]
        for run_id in ("q", "q:1"):  # each woken by the other's signal
            row = await _store(client).get_run(run_id)
            assert row is not None and row.status == RunStatus.RUNNING and await _woken(db_url, run_id)
        conflicts = _db(client).lock_conflicts + _db(other).lock_conflicts
        if postgres:
            assert took < await _deadlock_timeout(db_url) / 2, (
                f"the commits took {took:.3f}s once let go ({conflicts=})"
            )
        assert conflicts == 0


async def test_a_grandchild_held_elsewhere_is_waited_for_holding_nothing(
    client: cairn.Client, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A parent's commit cancels the child it stopped waiting for, and with it that child's own
    child, which no commit can name before it runs: its row is taken NOWAIT. Held by another
    transaction (here a bare one, as a commit of the grandchild would hold it), the parent's
    commit is refused, nothing of it applied, and sent again a few milliseconds later until the
    row is free, instead of waiting for it while holding the parent and the child."""
    caplog.set_level(logging.DEBUG, logger="cairn.store")
    parent, token = await _parent(client, "g", children=1)
    child = (await _claim(client, "w2"))["g:1"]
    now = await _store(client).now()
    starts = ActivationResult(new_steps=[_child_step(1, "g:1:1")], status=RunStatus.RUNNING)
    await _store(client).commit_activation(Commit(child.run, child.token, starts, now=now))
    assert (await _store(client).get_run("g:1:1")) is not None
    cancels = Commit(
        parent, token, ActivationResult(cancelled=[1], status=RunStatus.RUNNING), owner="w1", lease=LEASE, now=now
    )
    if db_url.startswith("postgresql"):
        holder = await asyncio.to_thread(psycopg.connect, db_url)
        try:
            await asyncio.to_thread(holder.execute, b"SELECT 1 FROM cairn_runs WHERE id = 'g:1:1' FOR NO KEY UPDATE")
            commit = asyncio.ensure_future(_store(client).commit_activation(cancels))
            await eventually(lambda: holds("held elsewhere" in caplog.text), what="the commit refused the grandchild")
            assert not commit.done()
        finally:
            await asyncio.to_thread(holder.rollback)
            await asyncio.to_thread(holder.close)
        await asyncio.wait_for(commit, 10)
    else:
        await _store(client).commit_activation(cancels)
    for run_id in ("g:1", "g:1:1"):
        assert (await _store(client).get_run(run_id)).status == RunStatus.CANCELLED  # type: ignore[union-attr]
    assert (await _steps(client, "g"))[1][0] == StepStatus.CANCELLED
    assert _db(client).lock_conflicts == 0


async def _woken(url: str, run_id: str) -> bool:
    """Whether the run is due now (a result or a signal arrived for it), not at its timer."""
    row = await asyncio.to_thread(sql_row, url, "SELECT ready_at, updated_at FROM cairn_runs WHERE id = ?", run_id)
    assert row is not None
    return row[0] is not None and float(row[0]) <= float(row[1])  # type: ignore[arg-type]


async def _buffered(client: cairn.Client, run_id: str) -> list[tuple[str, str | None]]:
    """The signals buffered for a run, not yet taken by a wait."""
    url = client.url
    query = "SELECT name, payload FROM cairn_signals WHERE run_id = ? AND consumed_by IS NULL ORDER BY id"
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return [(str(n), p) for n, p in conn.execute(query, (run_id,)).fetchall()]

    def read() -> list[tuple[str, str | None]]:
        with psycopg.connect(url, autocommit=True) as conn:
            return [(str(n), p) for n, p in conn.execute(query.replace("?", "%s").encode(), (run_id,)).fetchall()]

    return await asyncio.to_thread(read)


# --- randomized: two real workers -----------------------------------------------------------------------

SEED = int(os.environ.get("CAIRN_FUZZ_SEED", "20250707"))
FAMILIES = int(200 * float(os.environ.get("CAIRN_FUZZ_SCALE", "1")))


@dataclass
class _Family:
    handle: cairn.RunHandle
    kind: str
    children: list[str]
    expect: Any
    cancel_at: float | None = None


def _family(client: cairn.Client, rng: random.Random, key: str) -> tuple[str, Callable[[], Awaitable[_Family]]]:
    kind = rng.choice(["rally", "twins", "impatient"])

    async def start() -> _Family:
        if kind == "rally":
            n = rng.randint(1, 3)
            handle = await client.start(lf.rally, key, n, id=key)
            return _Family(handle, kind, [f"{key}:v"], [n, n])
        if kind == "twins":
            n = rng.randint(1, 3)
            handle = await client.start(lf.twins, key, n, id=key)
            return _Family(handle, kind, [f"{key}:a", f"{key}:b"], [n, n])
        patience = rng.uniform(0.01, 0.04)
        naps = [patience * rng.uniform(0.5, 1.5) for _ in range(rng.randint(1, 3))]
        handle = await client.start(lf.impatient, key, naps, patience, id=key)
        return _Family(handle, kind, [f"{key}:{i}" for i in range(len(naps))], None)

    return kind, start


async def _settled_right(client: cairn.Client, family: _Family) -> None:
    """The family's runs have all ended, as their code says they must."""
    store, parent = _store(client), family.handle.id
    row = await store.get_run(parent)
    assert row is not None
    children = {c: await store.get_run(c) for c in family.children}
    ended = {c: r.status for c, r in children.items() if r is not None}
    if row.status == RunStatus.CANCELLED:  # by the test, before it ended (its children started or not)
        assert family.cancel_at is not None, f"{parent} was cancelled, yet the test did not cancel it"
        assert set(ended.values()) <= {RunStatus.COMPLETED, RunStatus.CANCELLED}, f"{parent}: {ended}"
        return
    assert len(ended) == len(children), f"{parent}: a child was never started"
    assert row.status == RunStatus.COMPLETED, f"{parent} ({family.kind}) ended {row.status}: {row.error}"
    result = json.loads(row.result or "null")
    if family.kind != "impatient":
        assert result == family.expect, f"{parent}: {result}"
        assert set(ended.values()) == {RunStatus.COMPLETED}, f"{parent}: {ended}"
        return
    assert len(result) == len(family.children)
    for child, got in zip(family.children, result, strict=True):
        if got == "woke":
            assert ended[child] == RunStatus.COMPLETED, f"{child} woke, yet ended {ended[child]}"
        else:  # given up on: cancelled by the parent's commit, unless its end landed first
            assert got == "timeout" and ended[child] in (RunStatus.CANCELLED, RunStatus.COMPLETED), (child, got)


async def test_families_writing_into_each_other_on_two_workers_never_deadlock(
    client: cairn.Client, db_url: str
) -> None:
    """A few hundred families (a parent and its child signalling each other, twins doing so, a
    parent giving up on sleeping children as they end), some cancelled by the test at a random
    moment, all at once on two workers, each its own store and group commits: no transaction is
    ever refused as a deadlock's loser, and every run ends as its code says."""
    rng = random.Random(SEED)
    options: dict[str, Any] = {"poll_interval": 0.05, "lease": 5.0, "concurrency": 32}
    async with _second(db_url) as other:
        async with cairn.Worker(client, **options), cairn.Worker(other, **options):
            started = time.monotonic()
            families: list[_Family] = []
            cancels: list[asyncio.Future[Any]] = []
            for i in range(FAMILIES):
                _, start = _family(client, rng, f"f{i}")
                family = await start()
                families.append(family)
                if rng.random() < 0.15:
                    family.cancel_at = rng.uniform(0.0, 0.2)
                    cancels.append(asyncio.ensure_future(_cancel_later(family)))
            await asyncio.gather(*cancels)
            for family in families:
                with contextlib.suppress(cairn.WorkflowCancelled):
                    await family.handle.result(timeout=60)
            took = time.monotonic() - started
        for family in families:
            await _settled_right(client, family)
        conflicts = _db(client).lock_conflicts + _db(other).lock_conflicts
    kinds = Counter(f.kind for f in families)
    assert conflicts == 0, f"{conflicts} transactions lost a deadlock (seed {SEED}, {dict(kinds)}, {took:.1f}s)"


async def _cancel_later(family: _Family) -> None:
    assert family.cancel_at is not None
    await asyncio.sleep(family.cancel_at)
    with contextlib.suppress(cairn.IllegalTransition):  # it completed first
        await family.handle.cancel()
