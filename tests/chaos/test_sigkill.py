"""Scenario 5: worker processes SIGKILLed mid-load, one at a time (each replaced at once) and then
all of them together, restarted after. SPEC 6: a worker killed with SIGKILL loses nothing, its work
is picked up once its lease expires; on SQLite the database file stays intact (PRAGMA
integrity_check) with 4 processes writing to it when they die."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

import cairn
from tests.chaos import flows
from tests.chaos.harness import Figures, Workers, pick, read_effects, record, resume_times
from tests.chaos.invariants import check
from tests.conftest import eventually
from tests.helpers import registered

RUNS = pick(150, 1000)
WORKERS = 4
CONCURRENCY = 8
ROLLING = pick(4, 16)  # one worker killed and replaced at each of these points of the load
KILL_ALL = pick(1, 3)  # then every worker at once, this many times
ACTION_SECONDS = 0.2
pytestmark = [pytest.mark.process, pytest.mark.timeout(pick(150, 900))]


async def test_sigkill_workers_mid_load(db_url: str, tmp_path: Path) -> None:
    began = time.monotonic()
    backend = db_url.split(":")[0]
    workers = Workers(db_url, tmp_path, lease=1, poll=0.2, concurrency=CONCURRENCY)
    env = {"CAIRN_CHAOS_ACTION_SECONDS": str(ACTION_SECONDS)}
    figures = Figures("sigkill", "postgres" if backend.startswith("postgres") else "sqlite")
    client = cairn.Client(db_url)
    killed_at: list[float] = []
    try:
        for _ in range(WORKERS):
            workers.start(env)
        await eventually(lambda: registered(client, ".five_steps"), timeout=30, what="workers registered")
        handles = [await client.start(flows.five_steps, n) for n in range(RUNS)]
        total = RUNS * 5
        faults = ROLLING + KILL_ALL
        for i in range(faults):
            # Pace the faults by the load's progress (a share of the actions finished), not by a clock.
            goal = int(total * 0.8 * (i + 1) / (faults + 1))
            await eventually(lambda g=goal: _ended(workers.effects, g), timeout=60, what=f"{goal} actions done")
            alive = workers.alive()
            victims = alive[:1] if i < ROLLING else alive
            for victim in victims:
                workers.kill(victim)
            killed_at.append(time.time())
            figures.kills += len(victims)
            for _ in victims:
                workers.start(env)
        assert not await _ended(workers.effects, total), "the load finished before the last kill"

        problems = await check(
            client,
            {h.id: flows.expected_five_steps(n) for n, h in enumerate(handles)},
            workers.effects,
            figures,
            bound=figures.kills * CONCURRENCY,
            deadline=time.monotonic() + 90,
        )
        figures.resumed(resume_times(killed_at, read_effects(workers.effects)))
        if figures.backend == "sqlite":
            workers.close()
            with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
                integrity = conn.execute("PRAGMA integrity_check").fetchall()
            figures.notes["integrity"] = integrity[0][0]
            if integrity != [("ok",)]:
                problems.append(f"PRAGMA integrity_check: {integrity}")
        record(figures, began)
        assert not problems, "\n".join(problems[:20]) + "\n" + workers.logs()
    finally:
        workers.close()
        await client.close()


async def _ended(path: Path, n: int) -> bool:
    return sum(1 for e in read_effects(path) if e.kind == "E") >= n
