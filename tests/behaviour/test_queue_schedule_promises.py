"""SPEC 4's queue and schedule promises where an audit with real worker processes found them broken,
on both backends: a rate limit lets no more than n start in any period, a `cairn.Queue` given to
`client.start` holds its limits though no worker declares it, and `catchup` (by default "none")
drops only the ticks that fell due while no worker was up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

import cairn
from cairn import RunStatus
from cairn.clock import SYSTEM, SkippingClock
from tests import flows
from tests import queueflows as qf
from tests.conftest import eventually
from tests.helpers import FixedClock, raw_sql

pytestmark = pytest.mark.timeout(60)

GATED = "tests.queueflows.gated"
TICK = "tests.flows.tick"


async def test_a_rate_limit_lets_at_most_n_start_in_any_period(client: cairn.Client) -> None:
    # q-rated: RateLimit(2, per=0.5 s), a start every quarter of a second at most.
    await client.store.upsert_queues([qf.RATED.spec], "test")
    clock = FixedClock(await client.store.now())
    client.store.clock = clock
    try:
        for i in range(5):
            await client.start(qf.gated, f"r{i}", queue="q-rated")
        t0, starts = clock.t, []
        # Claims as workers would make them; the second comes 0.2 s after the next start was allowed.
        for offset in (0.0, 0.45, 0.52, 0.8, 0.98):
            clock.t = t0 + offset
            work = await client.store.claim_work("w-rated", [GATED], [], None, 10, 0, 60.0)
            starts += [offset] * len(work.runs)
    finally:
        client.store.clock = SYSTEM
    # No half-second holds three starts: a late start does not let the next one follow sooner.
    assert all(b - a >= 0.5 for a, b in zip(starts, starts[2:], strict=False)), starts
    assert starts == [0.0, 0.45, 0.8]


ADHOC = cairn.Queue("promise-adhoc", concurrency=1, register=False)
"""Declared only where a run is started: no worker's code names it."""


async def test_a_queue_given_to_start_holds_its_limits_where_no_worker_declares_it(
    client: cairn.Client, worker: cairn.Worker
) -> None:
    handles = [await client.start(qf.gated, f"q{i}", queue=ADHOC) for i in range(3)]

    async def statuses() -> list[RunStatus]:
        return [await h.status() for h in handles]

    async def one_started() -> bool:
        return any(s != RunStatus.PENDING for s in await statuses())

    await eventually(one_started, what="the first run to start")
    # Another worker's claim now takes nothing of the queue: its one slot is held.
    other = await client.store.claim_work("w-other", [GATED], [], None, 10, 0, 30.0)
    assert other.runs == []
    assert sum(s != RunStatus.PENDING for s in await statuses()) == 1
    stored = await client.store.get_queue("promise-adhoc")
    assert stored is not None and stored.spec == ADHOC.spec
    done = []
    for _ in handles:  # one at a time, each once the one before it ended
        going = await eventually(lambda: _waiting(handles), what="the next run to start")
        assert sum(s not in (RunStatus.PENDING, RunStatus.COMPLETED) for s in await statuses()) == 1
        await going.signal("go", "ok")
        done.append(await going.result(timeout=30))
    assert sorted(done) == ["okq0", "okq1", "okq2"]


async def _waiting(handles: list[cairn.RunHandle]) -> cairn.RunHandle | None:
    for h in handles:
        if await h.status() == RunStatus.WAITING:
            return h
    return None


@pytest.fixture
def mid_hour(client: cairn.Client) -> Iterator[None]:
    """The database's clock half an hour from any hourly tick, so that only the ticks a test makes
    fall due (time still flows)."""
    clock = SkippingClock()
    clock.advance_to((clock.now() // 3600 + 1) * 3600 + 1800)
    client.store.clock = clock
    yield
    client.store.clock = SYSTEM


@pytest.mark.usefixtures("mid_hour")
async def test_ticks_missed_while_no_worker_was_up_are_dropped_by_default(client: cairn.Client, db_url: str) -> None:
    default = cairn.Schedule("promise-default", flows.tick, every=timedelta(hours=1), args=("d",), register=False)
    assert default.catchup == "none"
    await client.create_schedule(default)
    await client.create_schedule(
        "promise-latest", flows.tick, every=timedelta(hours=1), args=("l",), catchup="latest", overlap="allow"
    )
    # A tick of each fell due a moment ago, while no worker was up.
    missed = await client.store.now() - 0.5
    raw_sql(db_url, "UPDATE cairn_schedules SET next_fire_at = ?", missed)
    async with cairn.Worker(client, poll_interval=0.05):

        async def fired() -> bool:
            return all((r.next_fire_at or 0) > missed + 1 for r in await client.list_schedules())

        await eventually(fired, what="the worker's first firing of the schedules")
        runs = await client.list_runs()
        assert [r.id.split("@")[0] for r in runs] == ["promise-latest"]  # "latest" caught the tick up
        assert await client.get(runs[0].id).result(timeout=10) == "l"


@pytest.mark.usefixtures("mid_hour")
async def test_a_tick_that_fell_due_while_the_worker_was_up_is_late_not_missed(
    client: cairn.Client, db_url: str
) -> None:
    await client.create_schedule("promise-late", flows.tick, every=timedelta(hours=1), args=("x",), catchup="none")
    due = await client.store.now() - 30
    raw_sql(db_url, "UPDATE cairn_schedules SET next_fire_at = ?", due)
    await client.store.fire_schedules([TICK], [], due + 1)  # by a worker up only since: missed
    assert await client.list_runs() == []
    raw_sql(db_url, "UPDATE cairn_schedules SET next_fire_at = ?", due)
    await client.store.fire_schedules([TICK], [], due - 60)  # by one that was up: late, it runs
    await client.store.fire_schedules([TICK], [], due - 60)  # and once
    ticks = [r.id for r in await client.list_runs()]
    assert len(ticks) == 1 and ticks[0].startswith("promise-late@"), ticks
