"""Scenario 1: PostgreSQL restarted with `pg_ctl restart -m immediate` (a crash and recovery) every
5-20 s under load on 3 worker processes. SPEC 6: a database restart pauses progress and recovers by
itself; no step is lost or recorded twice. Runs on a private cluster the test starts, so restarting
it harms nobody."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

import cairn
from tests.chaos import flows
from tests.chaos.harness import Figures, Workers, pick, read_effects, record, resume_times
from tests.chaos.invariants import check
from tests.conftest import _pg_bin, eventually, start_cluster
from tests.helpers import registered

RUNS = pick(60, 500)
RESTARTS = pick(2, None)  # the long run restarts until its 3 minutes are up
DURATION = pick(40.0, 180.0)
PAUSE = pick((5.0, 10.0), (5.0, 20.0))
ACTION_SECONDS = pick(1.0, 1.8)  # long: the load outlasts the 3 minutes of restarts
CONCURRENCY = pick(4, 8)
WORKERS = 3
pytestmark = [
    pytest.mark.process,
    pytest.mark.timeout(pick(150, 600)),
    pytest.mark.skipif(_pg_bin() is None, reason="needs PostgreSQL server binaries to start a private cluster"),
]


async def test_postgres_restarts_under_load(tmp_path: Path) -> None:
    began = time.monotonic()
    url, restart, stop = start_cluster(restart_mode="immediate")
    workers = Workers(url, tmp_path, lease=2, poll=0.5, concurrency=CONCURRENCY)
    figures = Figures("pg_restart", "postgres")
    client = cairn.Client(url)
    try:
        for _ in range(WORKERS):
            workers.start(env={"CAIRN_CHAOS_ACTION_SECONDS": str(ACTION_SECONDS)})
        await eventually(lambda: registered(client, ".five_steps"), timeout=30, what="workers registered")
        handles = [await client.start(flows.five_steps, n) for n in range(RUNS)]
        await eventually(lambda: _ended(workers.effects, 1), timeout=30, what="load under way")
        rng = random.Random()
        restarted_at: list[float] = []
        outages: list[float] = []  # how long each restart kept the server away (pg_ctl -w)
        load_began = time.monotonic()
        while time.monotonic() - load_began < DURATION and (RESTARTS is None or len(restarted_at) < RESTARTS):
            await asyncio.sleep(rng.uniform(*PAUSE))  # the fault injection's own pacing
            if await _all_done(client, RUNS):
                break
            down = time.time()
            await asyncio.to_thread(restart)
            restarted_at.append(time.time())
            outages.append(restarted_at[-1] - down)
        figures.restarts = len(restarted_at)
        figures.notes["outage_max"] = round(max(outages, default=0.0), 2)
        assert figures.restarts >= pick(2, 5), "the load finished before the restarts; make it longer"
        died = [p.returncode for p in workers.procs if p.poll() is not None]
        assert not died, f"workers died with the database: {died}\n{workers.logs()}"

        problems = await check(
            client,
            {h.id: flows.expected_five_steps(n) for n, h in enumerate(handles)},
            workers.effects,
            figures,
            bound=figures.restarts * CONCURRENCY * WORKERS,
            deadline=time.monotonic() + 120,
        )
        figures.resumed(resume_times(restarted_at, read_effects(workers.effects)))
        record(figures, began)
        assert not problems, "\n".join(problems[:20])
    finally:
        workers.close()
        await client.close()
        stop()


async def _ended(path: Path, n: int) -> bool:
    return sum(1 for e in read_effects(path) if e.kind == "E") >= n


async def _all_done(client: cairn.Client, n: int) -> bool:
    return (await client.count_runs())["completed"] >= n
