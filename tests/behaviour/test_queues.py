"""Queues with flow control on both backends: concurrency, per_key, per_worker, priority order,
dedup_key and the rate limit, enforced by the claim whichever worker asks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

import cairn
from cairn import RunStatus
from cairn.store.base import WORK
from cairn.store.protocol import Commit, WorkClaim
from cairn.testing import environment
from tests import flows
from tests import queueflows as qf
from tests.conftest import eventually
from tests.helpers import cli_in_thread, holds

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def _marks() -> Iterator[None]:
    qf.MARKS.clear()
    yield
    qf.MARKS.clear()


@asynccontextmanager
async def workers(client: cairn.Client, db_url: str, n: int = 2, concurrency: int = 8) -> AsyncIterator[None]:
    """`n` workers, each on its own client (as separate processes would be), sharing the database."""
    async with AsyncExitStack() as stack:
        for i in range(n):
            c = client if i == 0 else cairn.Client(db_url)
            if i:
                stack.push_async_callback(c.close)
            await stack.enter_async_context(cairn.Worker(c, concurrency=concurrency, poll_interval=0.05, lease=5.0))
        yield


async def test_concurrency_one_never_runs_two_at_once(client: cairn.Client, db_url: str) -> None:
    handles = [await client.start(qf.serial, f"s{i}") for i in range(6)]
    async with workers(client, db_url):
        results = [await h.result(timeout=30) for h in handles]
    assert results == [f"s{i}" for i in range(6)]
    assert qf.MARKS.peak["one"] == 1
    assert qf.MARKS.order == [f"s{i}" for i in range(6)]  # first in, first out


async def test_an_action_queue_limits_attempts_in_flight(client: cairn.Client, db_url: str) -> None:
    async with workers(client, db_url):
        result = await client.run(qf.fan_two, 6, 0.15, timeout=30)
    assert result == [f"a{i}" for i in range(6)]
    assert qf.MARKS.peak["two"] == 2  # never more, and the limit is used


async def test_a_fan_out_on_a_limited_queue_leaves_the_other_slots_to_other_runs(
    client: cairn.Client, db_url: str
) -> None:
    """docs/howto/queues.md: a worker's action slots go first come, first served; a run that
    gathers many calls of a queue with `concurrency=2` holds two, and a run started behind it
    finishes while all of the fan-out's calls are still to end."""
    qf.BULK_RELEASED = asyncio.Event()
    async with workers(client, db_url, n=1, concurrency=4):
        fan = await client.start(qf.bulk_fan, 20)
        try:
            await eventually(lambda: holds(qf.MARKS.now["bulk"] == 2), what="the fan-out at its queue's limit")
            assert await client.run(flows.function_style, 1, timeout=30) == 3
            assert qf.MARKS.now["bulk"] == 2 and await fan.status() in (RunStatus.RUNNING, RunStatus.WAITING)
        finally:
            qf.BULK_RELEASED.set()
        assert await fan.result(timeout=30) == sum(range(20))
    assert qf.MARKS.peak["bulk"] == 2


async def test_per_key_one_per_key_while_keys_run_in_parallel(client: cairn.Client, db_url: str) -> None:
    handles = [await client.start(qf.keyed, f"{k}{i}", k, key=k) for i in range(3) for k in ("a", "b")]
    async with workers(client, db_url):
        for h in handles:
            await h.result(timeout=30)
    assert qf.MARKS.peak["key:a"] == 1 and qf.MARKS.peak["key:b"] == 1
    assert qf.MARKS.peak["all"] == 2  # the two keys went side by side


async def test_per_worker_limits_each_worker(client: cairn.Client, db_url: str) -> None:
    async with workers(client, db_url, n=1):
        assert await client.run(qf.fan_per_worker, 4, 0.1, timeout=30) == [f"p{i}" for i in range(4)]
    assert qf.MARKS.peak["per-worker"] == 1
    qf.MARKS.clear()
    async with workers(client, db_url, n=2):
        await client.run(qf.fan_per_worker, 6, 0.2, timeout=30)
    assert qf.MARKS.peak["per-worker"] <= 2


async def test_priority_lower_first_then_first_in_first_out(client: cairn.Client, db_url: str) -> None:
    async with workers(client, db_url, n=1):  # declares the queue (priority=True)
        pass
    for label, priority in (("p5", 5), ("p1-first", 1), ("p3", 3), ("p1-second", 1), ("none", None)):
        await client.start(qf.ranked, label, priority=priority)
    async with workers(client, db_url, n=2):
        for run in await client.list_runs(limit=10):
            await client.get(run.id).result(timeout=30)
    # No priority is 0, before any positive one (as DBOS orders them); ties first in, first out.
    assert qf.MARKS.order == ["none", "p1-first", "p1-second", "p3", "p5"]


async def test_runs_of_any_priority_that_wait_are_taken_again_when_due(client: cairn.Client, db_url: str) -> None:
    """Waiting runs are claimed in walks by priority (the default one by due time alone): one of
    each kind of priority wakes from its sleep and ends."""
    async with workers(client, db_url, n=1):
        handles = [
            await client.start(qf.ranked_nap, label, priority=priority)
            for label, priority in (("none", None), ("zero", 0), ("p3", 3))
        ]
        assert [await h.result(timeout=30) for h in handles] == ["none", "zero", "p3"]


async def test_priority_on_a_queue_without_it_is_refused(client: cairn.Client) -> None:
    with pytest.raises(ValueError, match="does not take priorities"):
        await client.start(qf.serial, "x", priority=1)
    # Nor does the default queue, or a queue nobody declared (they were let through, and the
    # priority was stored and ignored).
    with pytest.raises(ValueError, match=r"queue 'default' does not take priorities"):
        await client.start(flows.function_style, 1, priority=3)
    with pytest.raises(ValueError, match=r"queue 'nowhere' does not take priorities"):
        await client.start(flows.function_style, 1, queue="nowhere", priority=3)
    assert await client.list_runs() == []  # nothing was written


async def test_dedup_key_returns_the_unfinished_run(client: cairn.Client, db_url: str) -> None:
    first = await client.start(qf.gated, "1", dedup_key="order-1")
    again = await client.start(qf.gated, "2", dedup_key="order-1")
    assert again.id == first.id and not again.created
    other = await client.start(qf.gated, "3", dedup_key="order-2")
    assert other.id != first.id and other.created
    async with workers(client, db_url, n=1):
        await first.signal("go", "ok")
        assert await first.result(timeout=30) == "ok1"
        fresh = await client.start(qf.gated, "4", dedup_key="order-1")  # the key is free again
        assert fresh.id != first.id and fresh.created
        for h in (other, fresh):
            await h.signal("go", "ok")
            await h.result(timeout=30)
    assert len(await client.list_runs(status=RunStatus.COMPLETED)) == 3


async def test_a_failed_run_whose_dedup_key_another_run_holds_now_is_refused_a_retry(
    client: cairn.Client, db_url: str
) -> None:
    """The key is free once its run has failed, and another run took it; a retry of the failed one
    would make two unfinished runs hold it. It was a raw database error (HTTP 500); now it is
    refused, saying which run holds the key, and changes nothing."""
    async with workers(client, db_url, n=1):
        first = await client.start(qf.fails_when_told, "1", dedup_key="order-9")
        await first.signal("go", "fail")
        with pytest.raises(RuntimeError, match="1 failed as told"):
            await first.result(timeout=30)
        second = await client.start(qf.fails_when_told, "2", dedup_key="order-9")
        assert second.created
        with pytest.raises(cairn.IllegalTransition, match=f"run '{second.id}' holds its dedup_key 'order-9'"):
            await first.retry()
        assert await first.status() == RunStatus.FAILED
        await second.signal("go", "ok")
        assert await second.result(timeout=30) == "2"
        assert await first.retry() != RunStatus.FAILED  # the key is free again: retried
        with pytest.raises(RuntimeError, match="1 failed as told"):  # its journal holds the same signal
            await first.result(timeout=30)


async def test_rate_limit_spaces_starts_evenly(client: cairn.Client, db_url: str) -> None:
    async with workers(client, db_url, n=2):
        assert len(await client.run(qf.fan_rated, 6, timeout=30)) == 6
    starts = sorted(qf.MARKS.starts)
    assert len(starts) == 6
    # Two a half-second: each start is due a quarter of a second after the last was due, so k
    # starts later is more than k - 1 quarters later, and no half-second holds more than 2 + 1.
    assert starts[5] - starts[0] >= 4 * 0.25 - 0.05, starts
    assert all(b - a >= 0.5 - 0.05 for a, b in zip(starts, starts[3:], strict=False)), starts


async def test_bad_queue_arguments_change_nothing(client: cairn.Client) -> None:
    with pytest.raises(ValueError, match="queue key"):
        await client.start(qf.keyed, "x", "k", key="")
    with pytest.raises(ValueError, match="priority must be an integer"):
        await client.start(qf.keyed, "x", "k", priority="high")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dedup_key"):
        await client.start(qf.keyed, "x", "k", dedup_key="a\x00b")
    assert await client.list_runs() == []


async def test_queues_are_listed_with_their_limits_and_counts(client: cairn.Client, db_url: str) -> None:
    async with workers(client, db_url, n=1):
        pass
    await client.start(qf.serial, "waiting")
    queues = {q.name: q for q in await client.list_queues()}
    assert queues["q-one"].spec.concurrency == 1 and queues["q-one"].runs_waiting == 1
    assert queues["q-rated"].spec.rate_n == 2 and queues["q-rated"].spec.rate_period == 0.5
    assert queues["q-rated"].rate_next_at is None  # nothing started yet
    listed = await cli_in_thread(["queues", "--db", client.url, "--json"])
    assert listed.exit_code == 0, listed.output
    one = next(q for q in json.loads(listed.output) if q["name"] == "q-one")
    assert one["concurrency"] == 1 and one["runs_waiting"] == 1 and one["runs_in_flight"] == 0
    table = await cli_in_thread(["queues", "--db", client.url])
    assert "concurrency=1" in table.output and "rate_limit=2/0.5s" in table.output


async def test_a_child_started_without_waiting_runs_in_its_own_workflows_queue(
    client: cairn.Client, db_url: str
) -> None:
    """`cairn.start_child` put the child in its parent's queue, not its own workflow's (as
    `cairn.child` does): children of a q-one workflow ran all at once in the default queue, and a
    q-one parent's child of a workflow on no queue waited for the place its parent held, for ever."""
    async with workers(client, db_url):
        assert await client.run(qf.starts_serial_children, 3, timeout=30) == ["c0", "c1", "c2"]
        assert await client.run(qf.starts_a_plain_child, "plain", timeout=30) == "plain"
    assert qf.MARKS.peak["one"] == 1
    queues = {r.workflow: r.queue for r in await client.list_runs(limit=100)}
    assert queues["tests.queueflows.serial"] == "q-one" and queues["tests.queueflows.echo"] == "default"


async def test_a_run_paused_before_it_began_is_not_counted_in_flight(client: cairn.Client, db_url: str) -> None:
    """`cairn queues` and GET /api/queues counted runs paused before their first activation as in
    flight (3 of a queue of concurrency 2), though they hold no place in it."""
    async with workers(client, db_url, n=1):
        pass
    for label in ("p0", "p1", "p2"):
        assert await (await client.start(qf.serial, label)).pause() == RunStatus.PAUSED
    one = next(q for q in await client.list_queues() if q.spec.name == "q-one")
    assert (one.runs_waiting, one.runs_in_flight) == (0, 0)


async def test_a_rate_limit_changed_by_a_deploy_spaces_the_next_start_by_the_new_rate(client: cairn.Client) -> None:
    """A deploy from one start an hour to ten a second kept the next start an hour after the last."""
    hourly = cairn.Queue("q-rate-change", rate_limit=cairn.RateLimit(1, per=timedelta(hours=1)), register=False)
    fast = cairn.Queue("q-rate-change", rate_limit=cairn.RateLimit(10, per=timedelta(seconds=1)), register=False)
    await client.store.upsert_queues([hourly.spec], "first deploy")
    for i in range(3):
        await client.start(qf.echo, f"r{i}", queue="q-rate-change")

    async def claimed() -> int:
        work = await client.store.claim_work("w1", ["tests.queueflows.echo"], [], None, 4, 0, 60.0)
        return len(work.runs)

    assert await claimed() == 1
    assert await claimed() == 0  # the next in an hour
    await client.store.upsert_queues([fast.spec], "second deploy")
    (row,) = [q for q in await client.list_queues() if q.spec.name == "q-rate-change"]
    assert row.rate_next_at is not None and row.rate_next_at < await client.store.now() + 0.2
    assert await eventually(claimed, timeout=5, what="a start at the new rate") == 1


@pytest.mark.parametrize(
    ("db_url", "declarer"),
    [("sqlite", "this client"), ("postgres", "this client"), ("postgres", "another client")],
    indirect=["db_url"],  # SQLite tells other processes only of work: they read limits at their heartbeat
)
async def test_a_limit_declared_while_a_worker_runs_holds_at_once(
    client: cairn.Client, db_url: str, declarer: str
) -> None:
    """A worker reads which queues have limits at its heartbeat: until then, a queue another deploy
    had just declared with a limit still had its runs started at birth, beside the limit (all
    three at once in a queue of concurrency 1). A declaration now tells workers at once (on SQLite,
    those of the process that declares; on PostgreSQL, every one)."""
    other = client if declarer == "this client" else cairn.Client(db_url)
    try:
        async with cairn.Worker(client, poll_interval=0.05, lease=30.0) as worker:  # its heartbeat: every 10 s
            await other.store.upsert_queues([cairn.Queue("q-late", concurrency=1, register=False).spec], "v2")
            if other is not client:  # heard through the database: soon, well before the heartbeat
                await eventually(lambda: holds("q-late" in worker._runner.limited), timeout=5, what="the limit heard")
            handles = [await client.start(qf.limited_later, f"l{i}") for i in range(3)]

            async def statuses() -> list[RunStatus]:
                return sorted([await h.status() for h in handles], key=str)

            await eventually(lambda: _has(statuses, RunStatus.WAITING), what="the first run under way")
            assert await statuses() == [RunStatus.PENDING, RunStatus.PENDING, RunStatus.WAITING]
            for h in handles:
                await h.cancel()
    finally:
        if other is not client:
            await other.close()


async def _has(statuses: Callable[[], Awaitable[list[RunStatus]]], status: RunStatus) -> bool:
    return status in await statuses()


async def test_a_run_held_in_its_queue_sleeps_from_its_start_not_its_creation(db_url: str) -> None:
    """A run's first activation took its creation as its logical time: a run held two hours by its
    queue's rate started `sleep(3600)` an hour overdue and woke at once (`cairn.now()` said the time
    it was created)."""
    async with environment(db_url) as env:
        handles = [await env.client.start(qf.held_then_sleeps, i) for i in range(3)]
        for h in handles:
            assert 3600 <= await h.result() < 3660
            run = await h.describe()
            assert run.started_at is not None and run.completed_at is not None
            assert run.completed_at - run.started_at >= 3600
        assert env.skipped >= timedelta(hours=5) - timedelta(
            seconds=5
        )  # two holds of two hours, the last hour (less real time)


async def test_cli_start_takes_key_priority_and_dedup_key(client: cairn.Client) -> None:
    args = ["start", "tests.queueflows.gated", "--input", '["c"]', "--db", client.url, "--dedup-key", "d-1"]
    first = await cli_in_thread([*args, "--key", "k"])
    assert first.exit_code == 0, first.output
    again = await cli_in_thread(args)
    assert again.exit_code == 0 and "existed already" in again.output
    assert len(await client.list_runs()) == 1


async def test_the_sync_client_takes_queue_arguments(client: cairn.Client, db_url: str) -> None:
    def use() -> tuple[str, str, list[str]]:
        sync = cairn.connect_sync(db_url)
        try:
            first = sync.start(qf.gated, "s", key="k", dedup_key="sync-1")
            again = sync.start(qf.gated, "s", dedup_key="sync-1")
            return first.id, again.id, [q.spec.name for q in sync.list_queues()]
        finally:
            sync.close()

    first, again, _ = await asyncio.to_thread(use)
    assert first == again


async def test_two_declarations_of_one_queue_the_last_wins_and_says_so(
    client: cairn.Client, caplog: pytest.LogCaptureFixture
) -> None:
    from cairn.registry import Registry

    first, second = Registry(), Registry()
    first.register_queue(cairn.Queue("q-twice", concurrency=1, register=False))
    second.register_queue(cairn.Queue("q-twice", concurrency=3, register=False))
    async with cairn.Worker(client, registry=first, poll_interval=0.05):
        pass
    with caplog.at_level("WARNING", logger="cairn.worker"):
        async with cairn.Worker(client, registry=second, poll_interval=0.05):
            pass
    assert "q-twice was declared elsewhere with other limits; now concurrency=3" in caplog.text
    row = await client.store.get_queue("q-twice")
    assert row is not None and row.spec.concurrency == 3


async def test_a_limited_queue_with_nothing_held_back_costs_no_claim_per_action(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limited queues this process declares (tests.queueflows) wait for nothing: an action slot
    freed here must not wake the claim loop. It did at every one, whenever any limited queue was
    declared: a claim per action for nothing, a third of a loop of starts' throughput on PostgreSQL."""
    from tests.behaviour.test_due_while_busy import ends_at_once

    claims = 0
    real_claim = client.store.claim_work

    async def counted(*args: object, **kwargs: object) -> object:
        nonlocal claims
        claims += 1
        return await real_claim(*args, **kwargs)  # type: ignore[arg-type]

    async with cairn.Worker(client, poll_interval=30.0):  # no safety poll to count
        assert any(q.spec.limited for q in await client.list_queues())
        monkeypatch.setattr(client.store, "claim_work", counted)
        for i in range(30):
            assert await client.run(ends_at_once, i, timeout=10) == i + 1
    assert claims <= 3, claims


def _no_retry_poll(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Claims of `store` ask no early look again at a limited queue they found full: only a wake-up
    (or the safety poll) starts the next run held back, not the 0.1 s retry that hid a missing one."""
    real_claim = store.claim_work

    async def claim_work(*args: Any, **kwargs: Any) -> WorkClaim:
        work: WorkClaim = await real_claim(*args, **kwargs)
        return replace(work, retry_in=None)

    monkeypatch.setattr(store, "claim_work", claim_work)


async def test_the_end_of_a_run_of_a_limited_queue_starts_the_next_at_once(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of a queue with concurrency=1 that calls an action ends with the commit that carries the
    action's result. The slot the action freed woke the claim loop before that commit landed: the
    claim found the queue full, and the next run waited for the 0.1 s retry (8.7 runs/s on SQLite
    where runs of an empty workflow went at 600 a second). That commit wakes it now."""
    _no_retry_poll(client.store, monkeypatch)
    handles = [await client.start(qf.serial, f"s{i}", 0.0) for i in range(11)]
    async with cairn.Worker(client, poll_interval=30.0, lease=60.0):  # no safety poll to make up for it
        results = [await handles[0].result(timeout=5)]
        began = time.monotonic()  # the worker is up: what follows is 10 runs, each started as one ends
        results += [await h.result(timeout=2) for h in handles[1:]]
        took = time.monotonic() - began
    assert results == [f"s{i}" for i in range(11)] and qf.MARKS.peak["one"] == 1
    assert took < 0.5, took  # 10 x 0.1 s with the retry poll; typically 20 ms on SQLite, 150 ms on PostgreSQL


async def test_the_end_of_a_run_of_a_limited_queue_wakes_workers_of_other_processes(
    client: cairn.Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process's worker whose claim found the queue full hears of the place the run's end
    gives back (NOTIFY on PostgreSQL, the commit watcher on SQLite), not only at its next poll."""
    other = cairn.Client(db_url)
    await other.store.open()
    heard: list[float] = []
    unsubscribe = other.store.subscribe_key(WORK, lambda _detail: heard.append(time.monotonic()))
    ended: list[float] = []
    real_commit = client.store.commit_activation

    async def commit_activation(commit: Commit) -> frozenset[int]:
        if commit.result.status.is_terminal:  # noted as it goes out: its NOTIFY may come back first
            ended.append(time.monotonic())
        return await real_commit(commit)

    monkeypatch.setattr(client.store, "commit_activation", commit_activation)
    try:
        handle = await client.start(qf.serial, "s", 0.0)
        await eventually(lambda: _said(heard), 5.0, "the start's notification")
        heard.clear()  # what comes now comes from the run's commits: its first one wakes nobody

        async def heard_the_end() -> bool:
            return bool(heard and ended and heard[-1] >= ended[0])

        async with cairn.Worker(client, poll_interval=30.0, lease=60.0):
            assert await handle.result(timeout=5) == "s"
            await eventually(heard_the_end, 2.0, "a notification sent as the run ended")
    finally:
        unsubscribe()
        await other.close()


async def _said(heard: list[float]) -> bool:
    return bool(heard)
