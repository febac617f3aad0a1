"""A prune deletes a huge run in transactions bounded by rows, its row last: one run of 200,000 steps
deleted in one transaction held SQLite's write lock for seconds, and every start and commit of
every other process waited that long. Between two pieces the run is hidden, cannot be retried, and
another connection's commit gets in; a prune that dies between pieces is finished by the next."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

import cairn
from cairn.errors import RunIdTaken, RunNotFound
from cairn.store import sql_store
from cairn.store.protocol import Store
from tests.flows import Sequence3
from tests.helpers import new_run, raw_sql, sql_row

pytestmark = pytest.mark.timeout(60)

STEPS = 20_000
PIECE = 2_000
TOTAL = STEPS * 2 + 2_000 + 500 + 50 + 1
"""The big run's rows, its own included."""
HISTORY = ("cairn_steps", "cairn_events", "cairn_properties", "cairn_memory", "cairn_signals")


def _grow(db_url: str, run_id: str) -> None:
    """A finished run's history of STEPS steps and as many events, with properties, memory and
    signals, written in a few statements (a workflow running that long would take minutes)."""
    if db_url.startswith("sqlite"):
        numbers = f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {STEPS})"
    else:
        numbers = f"WITH g(n) AS (SELECT generate_series(1, {STEPS}))"
    rows = {
        "cairn_steps (run_id, seq, kind, name, status, created_at)": "?, n, 'action', 'act', 'completed', 0",
        "cairn_events (run_id, at, kind, step)": "?, 0, 'step.completed', n",
        "cairn_properties (run_id, activation, after_step, properties)": "?, n, n, '{}'",
        "cairn_memory (run_id, key, value, updated_at)": "?, 'k' || n, '1', 0",
        "cairn_signals (run_id, name, payload, created_at, consumed_by)": "?, 'go', '1', 0, n",
    }
    for (into, values), last in zip(rows.items(), (STEPS, STEPS, 2_000, 500, 50), strict=True):
        raw_sql(db_url, f"INSERT INTO {into} {numbers} SELECT {values} FROM g WHERE n <= {last}", run_id)


def _left(db_url: str, run_id: str) -> int:
    """Rows of the run still stored, its own included."""
    counts = " + ".join(f"(SELECT count(*) FROM {t} WHERE run_id = ?)" for t in HISTORY)
    row = sql_row(db_url, f"SELECT {counts} + (SELECT count(*) FROM cairn_runs WHERE id = ?)", *[run_id] * 6)
    assert row is not None
    return int(str(row[0]))


async def _finished_big_run(store: Store, db_url: str) -> float:
    """A finished run "big" of STEPS steps, a small one, and a live one; the cutoff that takes both
    finished ones."""
    for run_id in ("big", "small", "live"):
        await store.insert_run(new_run(run_id))
    await store.cancel("big")
    await store.cancel("small")
    _grow(db_url, "big")
    return await store.now() + 1


Transaction = Callable[..., Awaitable[Any]]


def _counting(store: Store, between: Callable[[int], Awaitable[None]]) -> None:
    """Every transaction of the store counted, `between(n)` awaited after the n-th commits."""
    assert isinstance(store, sql_store.SqlStore)
    db: Any = store.db
    real: Transaction = db.transaction
    done = 0

    async def counted(fn: Any, write: bool = True, rerunnable: bool = False) -> Any:
        nonlocal done
        value = await real(fn, write, rerunnable)
        done += 1
        await between(done)
        return value

    db.transaction = counted


@pytest.fixture
async def cutoff(client: cairn.Client, db_url: str, monkeypatch: pytest.MonkeyPatch) -> float:
    """The big run and the others made, pieces of PIECE rows: the cutoff that takes both finished runs."""
    monkeypatch.setattr(sql_store, "PRUNE_ROWS", PIECE)
    return await _finished_big_run(client.store, db_url)


async def test_a_huge_run_is_pruned_in_pieces_and_others_commit_between_them(
    client: cairn.Client, db_url: str, cutoff: float
) -> None:
    store = client.store
    seen: dict[str, object] = {}
    left = [TOTAL + 1]  # rows stored after each transaction
    other = cairn.Client(db_url)  # another connection (on SQLite: one more writer of the file)
    await other.store.open()
    try:

        async def between(n: int) -> None:
            left.append(_left(db_url, "big") + _left(db_url, "small"))
            if n == 1:  # the first piece is committed: the write lock is free, the run half gone
                await other.store.insert_run(new_run("started-meanwhile"))
                seen["left"] = _left(db_url, "big")
                seen["shown"] = await other.store.get_run("big")
                seen["listed"] = [r.id for r in await other.store.list_runs(limit=10)]

        _counting(store, between)
        assert await store.prune(cutoff, None, 10) == 2
    finally:
        await other.close()
    assert len(left) > TOTAL // PIECE and left[-1] == 0
    assert max(a - b for a, b in itertools.pairwise(left)) <= PIECE + 2  # and the runs' rows
    assert 0 < int(str(seen["left"])) < TOTAL, "the other connection's start came after the whole prune"
    assert seen["shown"] is None  # begun: never seen with part of its history
    assert seen["listed"] == ["started-meanwhile", "live"]  # nor the small one, deleted with it
    assert _left(db_url, "big") == 0 and _left(db_url, "small") == 0
    assert {r.id for r in await store.list_runs(limit=10)} == {"live", "started-meanwhile"}


class Crash(Exception):
    """The process dying between two transactions of a prune."""


async def test_a_prune_that_dies_between_pieces_is_finished_by_the_next(
    client: cairn.Client, db_url: str, cutoff: float
) -> None:
    store = client.store

    async def die(n: int) -> None:
        if n == 3:
            raise Crash

    _counting(store, die)
    with pytest.raises(Crash):
        await store.prune(cutoff, None, 10)
    await client.close()
    assert 0 < _left(db_url, "big") < TOTAL  # part of it gone

    after = cairn.Client(db_url)  # the next process
    await after.store.open()
    try:
        assert await after.store.get_run("big") is None
        with pytest.raises(RunNotFound):
            await after.store.retry("big")  # its history is partly gone: it must not run again
        # Its id is not free yet, nor is it an idempotent start of a run nobody can see: a start
        # with it failed on an assertion ("refused as existing, yet it is not there").
        with pytest.raises(RunIdTaken, match="a prune is deleting"):
            await after.store.insert_run(new_run("big"))
        # Both runs begun are finished, though this prune's cutoff takes nothing by age.
        assert await after.store.prune(0.0, None, 10) == 2
        assert _left(db_url, "big") == 0 and _left(db_url, "small") == 0
        assert {r.id for r in await after.store.list_runs(limit=10)} == {"live"}
        assert await after.store.insert_run(new_run("big")) is None  # free again: a new run
    finally:
        await after.close()


async def test_a_run_half_pruned_is_gone_from_every_read(client: cairn.Client, db_url: str, cutoff: float) -> None:
    """A prune that died after its first piece left "big" marked, part of its history gone: to
    everyone but the next prune it is deleted. Its result was still handed to a wait, it was still
    counted (while the pages a count describes did not list it), a signal to it was refused as to
    a finished run, a schedule still showed it as its last run's status, and a start of its id
    with a queue's key returned it as the run that holds that id."""
    store = client.store
    await client.create_schedule("nightly", Sequence3, every=timedelta(days=1), args=(1,))
    raw_sql(db_url, "UPDATE cairn_schedules SET last_run_id = ? WHERE id = 'nightly'", "big")

    async def die(n: int) -> None:
        if n == 1:
            raise Crash

    _counting(store, die)
    with pytest.raises(Crash):
        await store.prune(cutoff, None, 10)
    assert 0 < _left(db_url, "big") < TOTAL  # begun, not finished

    big = client.get("big")
    with pytest.raises(RunNotFound):
        await big.status()  # as before: not shown
    with pytest.raises(RunNotFound):
        await big.result(timeout=5)
    with pytest.raises(RunNotFound):
        await big.signal("go", 1)
    counts = await client.count_runs()
    assert counts["cancelled"] == 0 and counts["pending"] == 1, counts  # "live" alone, as the pages show
    assert [r.id for r in (await client.runs_page()).runs] == ["live"]
    assert await client.run_counts("workflow") == {"tests.flows.Sequence3": {"pending": 1}}
    assert await client.run_counts("queue") == {"default": {"pending": 1}}
    assert await store.count_runs("cancelled") == 0
    [nightly] = await client.list_schedules()
    assert nightly.last_status is None  # as once the prune is through
    with pytest.raises(RunIdTaken, match="a prune is deleting"):
        await store.insert_run(dataclasses.replace(new_run("big"), key="k"))  # a queue's start, as a plain one
    assert await store.prune(0.0, None, 10) == 2
    assert _left(db_url, "big") == 0
