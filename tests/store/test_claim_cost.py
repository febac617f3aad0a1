"""A worker's claim costs the same however many runs wait, even when the backlog arrived after the
worker had been claiming for a while: the plans its statements were first given, on a small table,
must not decide what a claim costs once the table is big (issue 17)."""

from __future__ import annotations

import statistics
import time

import psycopg
import pytest

import cairn

pytestmark = pytest.mark.timeout(300)

WORKFLOW = "tests.claim_cost.made_up"
"""Runs inserted directly and only claimed, never activated: any workflow name will do."""


def _insert_pending(url: str, prefix: str, n: int) -> None:
    """`n` due runs, written directly (setup: no engine is measured)."""
    now = time.time()
    rows = [(f"{prefix}{i:06d}", WORKFLOW, now - 2) for i in range(n)]
    sql = (
        "INSERT INTO cairn_runs (id, workflow, status, input, queue, created_at, updated_at, ready_at) "
        "VALUES ({p}, {p}, 'pending', '{{\"args\": []}}', 'default', {p}, {p}, {p})"
    )
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executemany(sql.format(p="?"), [(i, w, t, t, t) for i, w, t in rows])
        return
    with psycopg.connect(url) as pg, pg.cursor() as cur:
        cur.executemany(sql.format(p="%s"), [(i, w, t, t, t) for i, w, t in rows])


async def _claim_ms(client: cairn.Client, times: int) -> float:
    """Median milliseconds of a claim of 16 runs. Their leases run out at once, so every claim finds
    the same backlog (and takes the same runs)."""
    took = []
    for i in range(times):
        t0 = time.perf_counter()
        work = await client.store.claim_work(f"w{i}", [WORKFLOW], [], None, 16, 0, 0.001)
        took.append((time.perf_counter() - t0) * 1000)
        assert len(work.runs) == 16
    return statistics.median(took[times // 2 :])


async def test_a_claim_costs_no_more_after_a_burst_of_starts(client: cairn.Client, db_url: str) -> None:
    await client.store.open()
    _insert_pending(db_url, "a", 100)
    # Claiming long enough on a small table for PostgreSQL to settle on the plans it keeps for the
    # statements psycopg prepares (after 5 runs, then 5 custom plans each).
    small = await _claim_ms(client, 40)
    _insert_pending(db_url, "b", 50_000)  # the burst: statistics still describe the small table
    big = await _claim_ms(client, 20)
    # With a plan kept from the small table, a claim read and sorted every due run (7x here).
    assert big < 2.5 * small + 1.0, f"a claim took {big:.2f} ms with 50,100 runs waiting, {small:.2f} ms with 100"
