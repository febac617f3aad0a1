"""Deleting a run finds its signals by the run's key: a prune costs the same beside many signals of
other runs. Only the signals not yet consumed were indexed by run, so every run deleted (its foreign
key's ON DELETE CASCADE, a prune's own delete of its signals) read every signal ever sent: a prune
of 2,000 runs beside 200,000 consumed signals took 51 s on PostgreSQL, 1.2 s with the index. A
worker's retention prunes in its heartbeat, and a heartbeat that late lets its leases lapse."""

from __future__ import annotations

import statistics
import time

import pytest

import cairn
from cairn.bench.scenarios import bulk_runs
from tests.helpers import raw_sql

pytestmark = pytest.mark.timeout(300)

RUNS = 50
"""Finished runs a prune deletes, each with one consumed signal."""
SIGNALS = 200_000
"""Consumed signals of another run, still going, beside them."""
WORKFLOW = "tests.prune_cost.made_up"


def _finished_runs(db_url: str, prefix: str, before: float) -> None:
    """RUNS finished runs, each with a consumed signal, written directly (setup: nothing measured)."""
    bulk_runs(db_url, prefix, RUNS, "completed", before, workflow=WORKFLOW)
    raw_sql(db_url, "UPDATE cairn_runs SET completed_at = ? WHERE id LIKE ?", before - 1, f"{prefix}%")
    raw_sql(
        db_url,
        "INSERT INTO cairn_signals (run_id, name, payload, created_at, consumed_by) "
        "SELECT id, 'go', '1', 0, 1 FROM cairn_runs WHERE id LIKE ?",
        f"{prefix}%",
    )


async def _prune_ms(client: cairn.Client, db_url: str, rounds: list[str]) -> float:
    """Median milliseconds of a prune of RUNS runs, one prune per round (each of fresh runs)."""
    took = []
    for prefix in rounds:
        now = await client.store.now()
        _finished_runs(db_url, prefix, now - 100)
        t0 = time.perf_counter()
        removed = await client.store.prune(now - 50, limit=RUNS)
        took.append((time.perf_counter() - t0) * 1000)
        assert removed == RUNS
    return statistics.median(took)


async def test_a_prune_costs_the_same_beside_many_signals_of_other_runs(client: cairn.Client, db_url: str) -> None:
    alone = await _prune_ms(client, db_url, ["a", "b", "c"])
    bulk_runs(db_url, "live", 1, "running", await client.store.now(), workflow=WORKFLOW)
    if db_url.startswith("sqlite"):
        numbers = f"WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {SIGNALS})"
    else:
        numbers = f"WITH g(n) AS (SELECT generate_series(1, {SIGNALS}))"
    raw_sql(
        db_url,
        f"INSERT INTO cairn_signals (run_id, name, payload, created_at, consumed_by) {numbers} "
        "SELECT 'live000000', 'go', '1', 0, n FROM g",
    )
    beside = await _prune_ms(client, db_url, ["d", "e", "f"])
    # Reading every signal for each run deleted: 1.7-3.7 s here, against 1-30 ms.
    said = f"a prune of {RUNS} runs: {alone:.0f} ms alone, {beside:.0f} ms beside {SIGNALS:,} signals"
    assert beside < max(3 * alone, alone + 150), said
