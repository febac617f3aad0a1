"""One busy key never holds back the other keys of a `per_key` queue, however many of its runs wait
ahead of theirs, and what a claim costs does not grow with that backlog (both backends).

A claim used to read the queue's due runs in claim order and pass over those of keys at their
limit, reading at most 512: behind 600 runs of one customer (per_key=1, one of them in flight),
another customer's run waited until all but 512 of them had run. And to count what was in flight,
it read every pending run of the queue. Claims here are driven through the store one transaction
at a time, as in tests/behaviour/test_schedule_queue_fuzz.py; the backlog is written directly
(setup only: the claim is what is tested).
"""

from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

import cairn
from cairn.clock import SYSTEM
from cairn.store import queue_tx
from cairn.store.base import Tx
from tests.helpers import FixedClock

pytestmark = pytest.mark.timeout(60)

WORKFLOW = "tests.per_key_backlog.made_up"
"""Runs written directly and only claimed, never activated: any workflow name will do."""
KEYED = cairn.Queue("bk-keyed", per_key=1, register=False)
RANKED = cairn.Queue("bk-ranked", per_key=1, priority=True, register=False)
PAIRS = cairn.Queue("bk-pairs", per_key=2, register=False)
BACKLOG = 600
"""More runs of the busy key than a claim ever read ahead (512)."""


def queue_runs(
    db_url: str, queue: str, prefix: str, n: int, key: str | None, priority: int = 0, ahead: bool = False
) -> list[str]:
    """`n` pending runs of `queue` with `key`, as a start with a key writes them, due minutes ago
    and first in, first out by their number: after every run written before, or `ahead` of them
    all (setup only)."""
    queue_runs.at += 1.0  # type: ignore[attr-defined]
    due = time.time() - 600 + (-300 if ahead else queue_runs.at)  # type: ignore[attr-defined]
    ids = [f"{prefix}{i:05d}" for i in range(n)]
    # The column holds the negated client priority (claim order is "priority DESC").
    rows = [
        (run_id, WORKFLOW, "{}", queue, due - 1, due - 1, due + i * 1e-4, -priority, key)
        for i, run_id in enumerate(ids)
    ]
    sql = (
        "INSERT INTO cairn_runs (id, workflow, status, input, queue, created_at, updated_at, ready_at, lease_token, "
        "priority, queue_key) VALUES ({p}, {p}, 'pending', {p}, {p}, {p}, {p}, {p}, 0, {p}, {p})"
    )
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.executemany(sql.format(p="?"), rows)
    else:
        with psycopg.connect(db_url) as pg, pg.cursor() as cur:
            cur.executemany(sql.format(p="%s").encode(), rows)
    return ids


queue_runs.at = 0.0  # type: ignore[attr-defined]


async def claim(client: cairn.Client, worker: str, room: int) -> set[str]:
    work = await client.store.claim_work(worker, [WORKFLOW], [], None, room, 0, 60.0)
    return {r.run.id for r in work.runs}


async def test_a_backlog_of_one_key_does_not_hold_back_another_key(client: cairn.Client, db_url: str) -> None:
    await client.store.upsert_queues([KEYED.spec], "test")
    (first,) = queue_runs(db_url, KEYED.name, "a-first", 1, "a")
    assert await claim(client, "w1", 1) == {first}  # "a" at its limit from now on
    backlog = queue_runs(db_url, KEYED.name, "a", BACKLOG, "a")
    (other,) = queue_runs(db_url, KEYED.name, "b", 1, "b")
    (keyless,) = queue_runs(db_url, KEYED.name, "n", 1, None)  # not limited per key
    assert await claim(client, "w2", 4) == {other, keyless}
    assert await claim(client, "w2", 4) == set()  # every key at its limit, and nothing else waits
    await client.get(first).cancel()
    assert await claim(client, "w3", 4) == {backlog[0]}  # "a" again, first in, first out


async def test_priority_order_holds_among_the_runs_behind_a_backlog(client: cairn.Client, db_url: str) -> None:
    await client.store.upsert_queues([RANKED.spec], "test")
    (first,) = queue_runs(db_url, RANKED.name, "a-first", 1, "a")
    assert await claim(client, "w1", 1) == {first}
    queue_runs(db_url, RANKED.name, "a", BACKLOG, "a")  # priority 0: ahead of every run below
    (c,) = queue_runs(db_url, RANKED.name, "c", 1, "c", priority=3)
    (b,) = queue_runs(db_url, RANKED.name, "b", 1, "b", priority=5)
    (d,) = queue_runs(db_url, RANKED.name, "d", 1, "d", priority=1)  # last in, first of these by priority
    assert await claim(client, "w2", 2) == {d, c}
    assert await claim(client, "w2", 2) == {b}


async def test_a_key_below_its_limit_takes_only_its_room_from_its_own_backlog(
    client: cairn.Client, db_url: str
) -> None:
    """per_key=2 with one run of "a" in flight: one more of "a" (its oldest), and the others' runs."""
    await client.store.upsert_queues([PAIRS.spec], "test")
    (first,) = queue_runs(db_url, PAIRS.name, "a-first", 1, "a")
    assert await claim(client, "w1", 1) == {first}
    backlog = queue_runs(db_url, PAIRS.name, "a", BACKLOG, "a")
    others = queue_runs(db_url, PAIRS.name, "b", 3, "b")
    assert await claim(client, "w2", 8) == {backlog[0], *others[:2]}
    assert await claim(client, "w2", 8) == set()


async def test_a_claim_that_lapsed_holds_no_place_and_is_claimed_again(client: cairn.Client, db_url: str) -> None:
    """A run a queue's claim leased counts in flight until it begins or its lease runs out (its
    worker died): then it is the first of its key to start again, and once only."""
    await client.store.upsert_queues([KEYED.spec], "test")
    clock = FixedClock(await client.store.now())
    client.store.clock = clock
    try:
        (first,) = queue_runs(db_url, KEYED.name, "a-first", 1, "a")
        backlog = queue_runs(db_url, KEYED.name, "a", BACKLOG, "a")
        (other,) = queue_runs(db_url, KEYED.name, "b", 1, "b")
        work = await client.store.claim_work("w1", [WORKFLOW], [], None, 1, 0, 30.0)
        assert {r.run.id for r in work.runs} == {first}
        assert await claim(client, "w2", 4) == {other}  # "a" is in flight: its lease is live
        clock.t += 31.0  # w1 died: its claim of "a" lapsed, and w2's of "b" is live
        assert await claim(client, "w3", 4) == {first}
        assert await claim(client, "w3", 4) == set()
        clock.t += 61.0
        assert await claim(client, "w4", 4) == {first, other}  # both claims lapsed: again, once each
        assert backlog[0] not in await claim(client, "w4", 4)
    finally:
        client.store.clock = SYSTEM


# --- what a claim costs ---------------------------------------------------------------------------


@contextmanager
def counting(tx: Tx, db_url: str) -> Iterator[Callable[[], int]]:
    """What the statements run inside reads: on PostgreSQL the rows of cairn_runs fetched (by the
    transaction's own counters), on SQLite the virtual machine's instructions, in hundreds."""
    if db_url.startswith("sqlite"):
        conn: sqlite3.Connection = tx._conn  # type: ignore[attr-defined]
        ticks = [0]

        def tick() -> int:
            ticks[0] += 1
            return 0

        conn.set_progress_handler(tick, 100)
        try:
            yield lambda: ticks[0]
        finally:
            conn.set_progress_handler(None, 0)
        return
    cur: psycopg.Cursor[Any] = tx.cur  # type: ignore[attr-defined]
    sql = b"SELECT seq_tup_read + idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'cairn_runs'"

    def fetched() -> int:
        cur.execute(sql)
        row = cur.fetchone()
        return int(row[0]) if row else 0

    before = fetched()
    yield lambda: fetched() - before


class _Undone(Exception):
    """Raised to roll a measured claim back: every claim measured finds the same queue."""


async def _claim_cost(client: cairn.Client, db_url: str, room: int) -> tuple[int, set[str], float]:
    """One claim of the queue, rolled back: (what it read, the runs it took, its milliseconds)."""
    out: list[Any] = []

    def tx_fn(tx: Tx) -> None:
        now = tx.now()  # the transaction begun: what it reads is counted from here
        t0 = time.perf_counter()
        with counting(tx, db_url) as read:
            took = queue_tx.claim(tx, now, "w-cost", [WORKFLOW], [], [KEYED.name], room, 0, 60.0)
            out.append((read(), {str(r[0]) for r in took.runs}, (time.perf_counter() - t0) * 1000))
        raise _Undone

    with pytest.raises(_Undone):
        await client.store.db.transaction(tx_fn)  # type: ignore[attr-defined]
    result: tuple[int, set[str], float] = out[0]
    return result


async def test_a_claim_costs_the_same_behind_100_or_5000_runs_of_a_busy_key(client: cairn.Client, db_url: str) -> None:
    """The queue's own claim (the part a limited queue adds to every claim): behind 100 and then
    5,000 runs of a key at its limit, 16 runs of other keys are taken, for what reading a few reads.
    It read the whole backlog (counting what is in flight) and at most 512 of it (the runs behind
    them waited)."""
    await client.store.upsert_queues([KEYED.spec], "test")
    (first,) = queue_runs(db_url, KEYED.name, "a-first", 1, "a")
    assert await claim(client, "w1", 1) == {first}
    queue_runs(db_url, KEYED.name, "a", 100, "a")
    others = set()  # 16 keys' runs and 16 keyless ones, alternately: a claim of 16 takes 8 of each
    for i in range(16):
        others |= {
            *queue_runs(db_url, KEYED.name, f"k{i}-", 1, f"k{i}"),
            *queue_runs(db_url, KEYED.name, f"n{i}-", 1, None),
        }

    async def measure() -> tuple[int, float]:
        costs = [await _claim_cost(client, db_url, 16) for _ in range(9)]
        assert all(len(took) == 16 and took <= others for _, took, _ in costs), costs[0]
        return min(read for read, _, _ in costs), statistics.median(ms for _, _, ms in costs)

    small, small_ms = await measure()
    queue_runs(db_url, KEYED.name, "z", 4900, "a", ahead=True)
    big, big_ms = await measure()
    # Read: about 150 rows on PostgreSQL (500 on the small table, read whole where that is cheaper)
    # and 7,000 instructions on SQLite, at both sizes. Counting what was in flight alone read 5,200
    # rows against 500, and 57,000 instructions against 8,500.
    assert big <= 1.5 * small + 50, f"a claim read {big} behind 5,000 runs of a busy key, {small} behind 100"
    assert big_ms < 2.5 * small_ms + 1.0, f"a claim took {big_ms:.2f} ms behind 5,000, {small_ms:.2f} ms behind 100"
