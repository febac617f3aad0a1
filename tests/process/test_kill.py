"""A real worker process SIGKILLed mid-workflow: another finishes the run from the journal.

Steps recorded before the kill are not executed again; the step in flight at the kill runs once
more (at-least-once), and every side effect is accounted for by an attempt the journal records.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cairn
from cairn import StepKind, StepStatus
from tests.conftest import eventually
from tests.helpers import holds, registered
from tests.process import killflows

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]


@pytest.fixture
def effects_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "effects.log"
    log.touch()
    monkeypatch.setenv("CAIRN_EFFECTS_LOG", str(log))
    monkeypatch.setenv("CAIRN_SLOW_STEP", "3")
    return log


@pytest.fixture
def spawn(db_url: str) -> Iterator[collections.abc.Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cairn.cli.main",
                "worker",
                "tests.process.killflows",
                "--db",
                db_url,
                "--lease",
                "1",
                "--poll",
                "0.1",
            ],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def _effects(log: Path) -> collections.Counter[str]:
    return collections.Counter(line for line in log.read_text().splitlines() if line.startswith("start "))


async def test_sigkill_mid_workflow_resumes_without_reexecuting(
    db_url: str, effects_log: Path, spawn: collections.abc.Callable[[], subprocess.Popen[bytes]]
) -> None:
    client = cairn.Client(db_url)
    try:
        first = spawn()
        await eventually(
            lambda: registered(client, "tests.process.killflows.long_chain"), timeout=20, what="worker registered"
        )
        handle = await client.start("tests.process.killflows.long_chain", 6)
        await eventually(lambda: holds("start 3" in effects_log.read_text()), timeout=20, what="step 4 running")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        before = await handle.steps()
        recorded = {s.seq for s in before if s.status == StepStatus.COMPLETED and s.kind == StepKind.ACTION}
        assert recorded == {1, 2, 3}, f"expected steps 1-3 recorded at the kill, got {sorted(recorded)}"

        spawn()
        result = await handle.result(timeout=40)
        assert result == sum(i * i for i in range(6)) + sum((100 + i) ** 2 for i in range(3))

        effects = _effects(effects_log)
        actions = [s for s in await handle.steps() if s.kind == StepKind.ACTION]
        for step in actions:
            count = effects[f"start {step.args['i']}"]
            assert count == step.attempt, f"step {step.seq}: {count} side effects, journal says {step.attempt} attempts"
            if step.seq in recorded:
                assert count == 1, f"step {step.seq} was recorded before the kill but ran again"
        slow = next(s for s in actions if s.args["i"] == 3)
        assert slow.attempt == 2  # killed in flight once, then completed by the second worker
        assert await handle.status() == cairn.RunStatus.COMPLETED
    finally:
        await client.close()


async def test_uninterrupted_run_gives_the_same_result(client: cairn.Client, effects_log: Path) -> None:
    async with cairn.Worker(client, poll_interval=0.1):
        value = await client.run(killflows.long_chain, 6, timeout=30)
    assert value == sum(i * i for i in range(6)) + sum((100 + i) ** 2 for i in range(3))
    assert all(count == 1 for count in _effects(effects_log).values())
