"""Scenario 4: every id started twice at once, from two clients (two connection pools), while
workers run. SPEC 3/6: a start with an existing id returns the existing run, so there is exactly
one run per id, and each completes exactly once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

import cairn
from tests.chaos import flows
from tests.chaos.harness import Figures, Workers, pick, record
from tests.chaos.invariants import check
from tests.conftest import eventually
from tests.helpers import registered

IDS = pick(300, 2000)
pytestmark = [pytest.mark.process, pytest.mark.timeout(pick(120, 600))]


async def test_each_id_started_twice_concurrently(db_url: str, tmp_path: Path) -> None:
    began = time.monotonic()
    workers = Workers(db_url, tmp_path, lease=5, poll=0.2, concurrency=16)
    figures = Figures("duplicate_starts", "postgres" if db_url.startswith("postgres") else "sqlite")
    first, second = cairn.Client(db_url), cairn.Client(db_url)
    try:
        for _ in range(2):
            workers.start()
        await eventually(lambda: registered(first, ".five_steps"), timeout=30, what="workers registered")
        handles = await asyncio.gather(
            *(c.start(flows.five_steps, n, id=f"dup-{n}") for n in range(IDS) for c in (first, second))
        )
        assert [h.id for h in handles] == [f"dup-{n}" for n in range(IDS) for _ in range(2)]
        figures.notes["starts"] = len(handles)
        problems = await check(
            first,
            {f"dup-{n}": flows.expected_five_steps(n) for n in range(IDS)},
            workers.effects,
            figures,
            bound=0,  # no fault: every action runs once
            deadline=time.monotonic() + pick(90, 400),
        )
        counts = await first.count_runs()
        figures.notes["runs_created"] = sum(counts.values())
        if sum(counts.values()) != IDS:
            problems.append(f"{sum(counts.values())} runs for {IDS} ids: {counts}")
        record(figures, began)
        assert not problems, "\n".join(problems[:20]) + "\n" + workers.logs()
    finally:
        workers.close()
        await first.close()
        await second.close()
