"""A deploy that changes a workflow under a running run, in real worker processes: the run pauses
on the divergence with a NonDeterminismError naming the step, and after the code is fixed and the
run retried (or resumed) it carries on from where it was, every recorded step kept, none re-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cairn
from cairn import RunStatus
from tests.conftest import eventually
from tests.helpers import registered, status_is

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

ORIGINAL = """
    a = await step_a(x)
    b = await gated(a)  # in flight while the code is deployed
    return await step_b(b)
"""
DIVERGED = """
    a = await step_a(x)
    b = await step_b(a)  # a new call where the old one was
    return await gated(b)
"""
FIXED = ORIGINAL


def write_module(folder: Path, body: str) -> None:
    source = (
        textwrap.dedent(
            """
        import os
        import cairn
        from cairn import action, workflow

        @action(id="deploy.step_a")
        async def step_a(x: int) -> int:
            with open(os.environ["CAIRN_EFFECTS_LOG"], "a") as f:
                f.write(f"a {x}\\n")
            return x + 1

        @action(id="deploy.step_b")
        async def step_b(x: int) -> int:
            with open(os.environ["CAIRN_EFFECTS_LOG"], "a") as f:
                f.write(f"b {x}\\n")
            return x * 10

        @action(id="deploy.gated", retry=cairn.RetryPolicy(attempts=10_000),
                backoff=cairn.BackoffPolicy(base_delay=0.05, max_delay=0.1, jitter=False))
        async def gated(x: int) -> int:
            if not os.path.exists(os.environ["CAIRN_GATE"]):
                raise cairn.TransientError("the gate is closed")
            with open(os.environ["CAIRN_EFFECTS_LOG"], "a") as f:
                f.write(f"g {x}\\n")
            return x + 100

        @workflow(id="deploy.flow")
        async def flow(x: int) -> int:
        """
        )
        + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ")
        + "\n"
    )
    (folder / "deployed.py").write_text(source)


@pytest.fixture
def deploy(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Deploy a version of the module: stop the running worker process, start one on the new code."""
    monkeypatch.setenv("CAIRN_EFFECTS_LOG", str(tmp_path / "effects.log"))
    monkeypatch.setenv("CAIRN_GATE", str(tmp_path / "gate"))
    running: list[subprocess.Popen[bytes]] = []

    def stop() -> None:
        while running:
            proc = running.pop()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)

    def to(body: str) -> None:
        stop()
        write_module(tmp_path, body)
        cmd = [sys.executable, "-m", "cairn.cli.main", "worker", "deployed", "--db", db_url, "--poll", "0.1"]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        running.append(subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL))

    yield to
    stop()


@pytest.mark.parametrize("how", ["retry", "resume"])
async def test_a_run_paused_on_divergence_continues_after_the_fix(
    db_url: str, tmp_path: Path, deploy: Callable[[str], None], how: str
) -> None:
    client = cairn.Client(db_url)
    try:
        deploy(ORIGINAL)
        await eventually(lambda: registered(client, "deploy.flow"), timeout=30, what="the first worker registered")
        handle = await client.start("deploy.flow", 1, id="deployed-run")
        await eventually(lambda: _retrying(handle), timeout=30, what="step 2 in flight")

        deploy(DIVERGED)  # step 2's result reaches a worker running other code
        (tmp_path / "gate").touch()
        await eventually(lambda: status_is(handle, RunStatus.PAUSED), timeout=30, what="the run paused")
        row = await handle.describe()
        error = json.loads(row.error or "{}")
        assert row.pause_reason == "nondeterminism" and error["type"] == "NonDeterminismError"
        assert "step 2" in error["message"] and "deploy.gated" in error["message"]
        assert "deploy.step_b" in error["message"]
        assert [s.name for s in await handle.steps()] == ["deploy.step_a", "deploy.gated"]

        deploy(FIXED)
        assert await getattr(handle, how)() == RunStatus.RUNNING
        assert await handle.result(timeout=30) == 1020
        assert [(s.name, s.result) for s in await handle.steps()] == [
            ("deploy.step_a", 2),
            ("deploy.gated", 102),
            ("deploy.step_b", 1020),
        ]
        assert (tmp_path / "effects.log").read_text().splitlines() == ["a 1", "g 2", "b 102"]
    finally:
        await client.close()


async def _retrying(handle: cairn.RunHandle) -> bool:
    return any(s.name == "deploy.gated" and s.attempt > 1 for s in await handle.steps())
