"""Scenario 2: the LISTEN connections of every Cairn process (workers and the client) terminated by
the server (`pg_terminate_backend`), again and again, while runs are started. SPEC 6: notifications
are a hint and a safety poll always runs, so runs still complete; the listeners come back by
themselves. Runs on a database of its own, whose LISTEN backends are Cairn's and this test's only."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import psycopg
import pytest

import cairn
from tests.chaos import flows
from tests.chaos.harness import Figures, Workers, pick, read_effects, record, resume_times
from tests.chaos.invariants import check
from tests.conftest import eventually
from tests.helpers import LISTENERS, registered, terminate_listeners

ROUNDS = pick(3, 20)
BATCH = pick(10, 25)
pytestmark = [pytest.mark.process, pytest.mark.timeout(pick(120, 600))]


def _listeners(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) {LISTENERS}").fetchone()  # type: ignore[arg-type]
        return int(row[0]) if row else 0


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_listen_connections_terminated(db_url: str, tmp_path: Path) -> None:
    began = time.monotonic()
    workers = Workers(db_url, tmp_path, lease=5, poll=1, concurrency=16)
    figures = Figures("listen_terminated", "postgres")
    client = cairn.Client(db_url)
    expected: dict[str, int] = {}
    terminated_at: list[float] = []
    try:
        for _ in range(2):
            workers.start()
        await eventually(lambda: registered(client, ".five_steps"), timeout=30, what="workers registered")
        # The client LISTENs from its first result wait (a process LISTENs only for what it awaits).
        warm = await client.start(flows.five_steps, 0, id="warm-up")
        expected[warm.id] = flows.expected_five_steps(0)
        await warm.result(timeout=60)
        await eventually(lambda: _count_at_least(db_url, 3), timeout=30, what="three LISTEN connections")
        terminated = 0
        for r in range(ROUNDS):
            # A storm: every LISTEN backend terminated as soon as it is back, while a batch runs, so
            # that most notifications are lost and the safety poll must carry the runs.
            stop = asyncio.Event()
            storm = asyncio.create_task(_storm(db_url, stop, terminated_at))
            batch = [await client.start(flows.five_steps, n, id=f"l{r}-{n}") for n in range(BATCH)]
            expected.update({h.id: flows.expected_five_steps(n) for n, h in enumerate(batch)})
            for handle in batch:
                await handle.result(timeout=60)
            stop.set()
            terminated += await storm
            await eventually(lambda: _count_at_least(db_url, 3), timeout=30, what="the listeners back")
        figures.notes["terminated"] = terminated
        assert terminated >= 3 * ROUNDS, f"only {terminated} LISTEN backends found to terminate"
        problems = await check(client, expected, workers.effects, figures, bound=0, deadline=time.monotonic() + 30)
        figures.resumed(resume_times(terminated_at, read_effects(workers.effects)))
        record(figures, began)
        assert not problems, "\n".join(problems[:20]) + "\n" + workers.logs()
    finally:
        workers.close()
        await client.close()


async def _storm(url: str, stop: asyncio.Event, at: list[float]) -> int:
    """Terminate LISTEN backends every 50 ms until `stop`; how many were terminated."""
    n = 0
    while not stop.is_set():
        killed = await asyncio.to_thread(terminate_listeners, url)
        if killed:
            n += killed
            at.append(time.time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)  # the fault injection's pacing
    return n


async def _count_at_least(url: str, n: int) -> bool:
    return _listeners(url) >= n
