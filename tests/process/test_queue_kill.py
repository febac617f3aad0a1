"""A concurrency=1 queue under several real worker processes: the worker holding the slot is
SIGKILLed; its run is taken over when its lease runs out, and no two runs ever overlap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cairn
from tests.conftest import eventually
from tests.process import queueflows

ROOT = Path(__file__).resolve().parents[2]
LEASE = 1.0
pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]


@pytest.fixture
def queue_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "queue.log"
    log.touch()
    monkeypatch.setenv("CAIRN_QUEUE_LOG", str(log))
    return log


@pytest.fixture
def spawn(db_url: str) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        args = ["worker", "tests.process.queueflows", "--db", db_url, "--lease", str(LEASE), "--poll", "0.1"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "cairn.cli.main", *args],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def marks(log: Path) -> list[tuple[str, str, int, float]]:
    out = []
    for line in log.read_text().splitlines():
        what, label, pid, at = line.split()
        out.append((what, label, int(pid), float(at)))
    return out


def intervals(log: Path, killed: dict[int, float]) -> list[tuple[float, float, str]]:
    """Each attempt's (start, end): an attempt cut short by a SIGKILL ends when its worker died."""
    open_: dict[tuple[str, int], float] = {}
    out = []
    for what, label, pid, at in marks(log):
        if what == "start":
            open_[(label, pid)] = at
        else:
            out.append((open_.pop((label, pid)), at, label))
    for (label, pid), start in open_.items():
        assert pid in killed, f"attempt {label} on live worker {pid} never ended"
        out.append((start, killed[pid], label))
    return sorted(out)


def overlaps(spans: list[tuple[float, float, str]]) -> list[tuple[str, str]]:
    """Pairs of spans (sorted by start) of which the later began before an earlier one ended."""
    found, last_end, last = [], float("-inf"), ""
    for start, end, label in spans:
        if start < last_end:
            found.append((last, label))
        if end > last_end:
            last_end, last = end, label
    return found


async def test_sigkill_of_the_slot_holder_frees_the_slot_within_the_lease_never_two_at_once(
    db_url: str, queue_log: Path, spawn: Callable[[], subprocess.Popen[bytes]]
) -> None:
    client = cairn.Client(db_url)
    try:
        procs = {p.pid: p for p in (spawn(), spawn(), spawn())}
        slow = await client.start(queueflows.one_at_a_time, "slow", 30.0)  # holds the slot until killed
        handles = [await client.start(queueflows.one_at_a_time, f"r{i}", 0.05) for i in range(12)]

        async def slow_started() -> int | None:
            started = [pid for what, label, pid, _ in marks(queue_log) if what == "start" and label == "slow"]
            return started[0] if started else None

        holder = await eventually(slow_started, timeout=60, what="the slow run to hold the slot")
        assert holder in procs
        procs[holder].send_signal(signal.SIGKILL)
        procs[holder].wait(timeout=10)
        killed = {holder: time.time()}
        assert await slow.result(timeout=60) == "slow"  # taken over after its lease, quick the second time
        for h in handles:
            assert await h.result(timeout=90) is not None
        resumed = [
            at for what, label, pid, at in marks(queue_log) if (what, label) == ("start", "slow") and pid != holder
        ]
        assert resumed, "the killed run was never taken over"
        assert resumed[0] - killed[holder] < LEASE + 3.0, "the slot came back long after the lease"
    finally:
        await client.close()
    spans = intervals(queue_log, killed)
    assert overlaps(spans) == [], spans
