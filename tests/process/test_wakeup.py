"""An idle worker process picks up a run started from another process at once, not at its safety
poll: PostgreSQL wakes it with NOTIFY, SQLite with the worker's `PRAGMA data_version` watcher. And
the starter's result wait hears of its end the same way, not at the waiter's safety read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cairn
from tests import flows

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]
POLL = 60.0
"""The worker's safety poll: far beyond the test's deadlines, so only a wake-up can pass it."""


async def test_idle_worker_wakes_for_a_run_started_elsewhere(db_url: str) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "cairn.cli.main", "worker", "tests.flows", "--db", db_url, "--poll", str(POLL)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = cairn.Client(db_url)
    try:
        # The first run may be taken by the worker's first claim at start-up; after it the worker
        # is idle, waiting for a wake-up or its poll a minute away.
        assert await client.run(flows.function_style, 1, timeout=30) == 3
        took = []
        for x in range(5):
            started = time.monotonic()
            assert await client.run(flows.function_style, x, timeout=10) == 2 * x + 1
            took.append(time.monotonic() - started)
            assert took[-1] < 5, "the run waited for a poll, not a wake-up"
        # The waiter's safety read comes a second after the wait began: only news beats it.
        assert sorted(took)[2] < 0.5, f"results were heard of only after {sorted(took)} s"
    finally:
        await client.close()
        worker.terminate()
        try:
            worker.wait(timeout=15)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
