"""A PostgreSQL restart under load: workers and clients ride it out, and no step is lost or
recorded twice. Runs on a private cluster the test starts, so restarting it harms nobody."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cairn
from cairn import RunStatus, StepKind
from tests.conftest import _pg_bin, eventually, start_cluster
from tests.helpers import registered

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


async def _effects_seen(log: Path, n: int) -> bool:
    return log.exists() and len(log.read_text().splitlines()) >= n
