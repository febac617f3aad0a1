"""A PostgreSQL restart under load: workers and clients ride it out, and no step is lost or
recorded twice. Runs on a private cluster the test starts, so restarting it harms nobody."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

import cairn
from cairn import RunStatus, StepKind
from tests.conftest import _pg_bin, eventually, start_cluster
from tests.helpers import holds, registered

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]


@pytest.mark.skipif(_pg_bin() is None, reason="needs PostgreSQL server binaries to start a private cluster")
async def test_postgres_restart_mid_run(tmp_path: Path) -> None:
    url, restart, stop = start_cluster()
    log = tmp_path / "effects.log"
    env = {**os.environ, "CAIRN_EFFECTS_LOG": str(log)}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cairn.cli.main",
            "worker",
            "tests.process.chaosflows",
            "--db",
            url,
            "--lease",
            "2",
            "--poll",
            "0.2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = cairn.Client(url)
    try:
        await eventually(lambda: registered(client, ".paced"), timeout=30, what="worker registered")
        handles = [await client.start("tests.process.chaosflows.paced", n) for n in range(20)]
        await eventually(lambda: _effects_seen(log, 20), timeout=30, what="runs under way")
        await asyncio.to_thread(restart)
        for handle in handles:
            assert await handle.result(timeout=90) == 15
        assert worker.poll() is None, "the worker died with the database"
        effects = collections.Counter(tuple(line.split()) for line in log.read_text().splitlines())
        assert all(c == 1 for c in effects.values())
        for handle in handles:
            assert [e.kind for e in await handle.events()].count("completed") == 1
            for step in (s for s in await handle.steps() if s.kind == StepKind.ACTION):
                seen = {int(a) for (r, q, a) in effects if r == handle.id and int(q) == step.seq}
                assert step.attempt in seen and seen <= set(range(1, step.attempt + 1))
        assert await client.list_runs(status=RunStatus.COMPLETED, limit=100) != []
        worker.terminate()
        _, stderr = worker.communicate(timeout=15)
        assert b"lost" in stderr or b"unavailable" in stderr, "the worker never noticed the restart"
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=15)
        await client.close()
        stop()


@cairn.action(id="tests.db_restart.inc")
async def inc(x: int) -> int:
    return x + 1


@cairn.workflow(id="tests.db_restart.two_steps")
async def two_steps(x: int) -> int:
    return await inc(await inc(x))


@pytest.mark.skipif(_pg_bin() is None, reason="needs PostgreSQL server binaries to start a private cluster")
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
async def test_work_resumes_as_soon_as_the_server_is_back(busy: bool) -> None:
    """After a restart, the next run completes within moments of the server accepting connections
    again, whether the restart caught the process's connections idle in the pool or in use.
    psycopg_pool alone tries to reconnect a second after its first try failed (then 2 s, 4 s...), and
    after a connection fails its check it waits a second before handing out the next: each restart
    of 0.2 s held every commit of the process 0.6 to 3.8 s."""
    url, restart, stop = start_cluster()
    client = cairn.Client(url)
    resumed: list[float] = []
    try:
        async with cairn.Worker(client):
            finished = [time.monotonic()]
            done = asyncio.Event()

            async def loop(n: int) -> None:
                while not done.is_set():
                    assert await client.run(two_steps, n) == n + 2
                    finished.append(time.monotonic())

            loops = [asyncio.create_task(loop(n)) for n in range(8 if busy else 0)]
            await asyncio.gather(*(client.run(two_steps, n) for n in range(8)))  # several connections in the pools
            for _ in range(3):
                await asyncio.to_thread(restart)
                back = time.monotonic()
                if busy:
                    await eventually(lambda b=back: holds(finished[-1] > b), timeout=30, what="a run after the restart")
                    resumed.append(min(t for t in finished if t > back) - back)
                else:
                    assert await asyncio.wait_for(client.run(two_steps, 1), timeout=30) == 3
                    resumed.append(time.monotonic() - back)
            done.set()
            await asyncio.gather(*loops)
    finally:
        await client.close()
        stop()
    assert max(resumed) < 0.5, f"seconds from each restart's end to the next run's end: {resumed}"


async def _effects_seen(log: Path, n: int) -> bool:
    return log.exists() and len(log.read_text().splitlines()) >= n


AMBIGUOUS = (
    "committing its results failed",  # an activation commit whose outcome was unknown: run let go
    "work item failed",  # the same, for a run's first activation
    "lease moved",  # a commit fenced out: the run was taken over
    "superseded",  # an attempt's result dropped: another attempt ran it again
)
"""Worker log lines that mean a restart cost work: a run let go, or an action run twice."""


def _crash_and_restart(url: str, restart: Callable[[], None]) -> None:
    """`pg_ctl stop -m immediate`, then start: the postmaster (a backend's parent) gets SIGQUIT, so
    every session ends at once and the server recovers from its WAL when it starts again."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        with open(f"/proc/{row[0]}/stat") as stat:  # while the backend lives: its parent
            postmaster = int(stat.read().rsplit(")", 1)[1].split()[1])
    os.kill(postmaster, signal.SIGQUIT)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{postmaster}").exists():  # pg_ctl start refuses while the old one lives
        assert time.monotonic() < deadline, "the postmaster did not stop"
        time.sleep(0.05)
    restart()  # "old server process not running; starting server anyway"


@pytest.mark.skipif(_pg_bin() is None, reason="needs PostgreSQL server binaries to start a private cluster")
@pytest.mark.parametrize("how", ["fast", "immediate"])
async def test_a_restart_under_load_drops_nothing(tmp_path: Path, how: str) -> None:
    """Issue 18, defect 2: after a restart, pooled connections from before it must not fail the
    commits of work that was already safe. With two workers busy and actions in flight, the
    server restarts twice (a fast shutdown, or an immediate one with recovery); every run
    completes, every action's side effect happens once (one attempt each: no lease ran out, no
    run was let go), and no worker logs a commit it had to give up on."""
    url, fast_restart, stop = start_cluster()

    def restart() -> None:
        fast_restart() if how == "fast" else _crash_and_restart(url, fast_restart)

    log = tmp_path / "effects.log"
    env = {**os.environ, "CAIRN_EFFECTS_LOG": str(log), "CAIRN_BUMP_SECONDS": "0.05"}
    command = [sys.executable, "-m", "cairn.cli.main", "worker", "tests.process.chaosflows", "--db", url]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [
        subprocess.Popen(
            [*command, "--lease", "10", "--poll", "0.5", "--concurrency", "20"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=path.open("w"),  # a file, not a pipe: a full pipe would stall the worker
        )
        for path in logs
    ]
    client = cairn.Client(url)
    runs = 100
    try:
        await eventually(lambda: registered(client, ".five_steps"), timeout=30, what="workers registered")
        handles = await asyncio.gather(*(client.start("tests.process.chaosflows.five_steps", n) for n in range(runs)))
        await eventually(lambda: _effects_seen(log, runs), timeout=60, what="actions under way")
        await asyncio.to_thread(restart)
        await eventually(lambda: _effects_seen(log, 2 * runs), timeout=60, what="progress after the restart")
        await asyncio.to_thread(restart)  # a second one: the connections made after the first go stale too
        for handle in handles:
            assert await handle.result(timeout=120) == 15
        assert all(w.poll() is None for w in workers), "a worker died with the database"
        effects = collections.Counter(tuple(line.split()[:2]) for line in log.read_text().splitlines())
        assert len(effects) == 5 * runs
        twice = {k: c for k, c in effects.items() if c > 1}
        assert twice == {}, f"side effects repeated after the restarts: {twice}"
        for handle in handles:
            steps = [s for s in await handle.steps() if s.kind == StepKind.ACTION]
            assert [s.attempt for s in steps] == [1] * 5, f"run {handle.id} ran an action again"
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
        for w in workers:
            w.wait(timeout=30)
        await client.close()
        stop()
    stderr = "".join(path.read_text(errors="replace") for path in logs)
    given_up = [line for line in stderr.splitlines() if any(a in line for a in AMBIGUOUS)]
    assert given_up == [], "commits given up after the restarts:\n" + "\n".join(given_up[:20])
    assert "unavailable" in stderr or "lost" in stderr, "the workers never noticed the restarts"
