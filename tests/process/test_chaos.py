"""Chaos: 200 workflows of 5 actions on 3 worker processes while one is SIGKILLed every couple of
seconds and replaced. Every run completes exactly once, and every side effect is accounted for by
an attempt the journal records (at-least-once, with exact accounting)."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cairn
from cairn import RunStatus, StepKind
from tests.conftest import eventually
from tests.helpers import registered

ROOT = Path(__file__).resolve().parents[2]
RUNS = 200
pytestmark = [pytest.mark.process, pytest.mark.timeout(240)]


def _worker(db_url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cairn.cli.main",
            "worker",
            "tests.process.chaosflows",
            "--db",
            db_url,
            "--lease",
            "1",
            "--poll",
            "0.2",
            "--concurrency",
            "8",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_runs_survive_repeated_sigkills(db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    env = {**os.environ, "CAIRN_EFFECTS_LOG": str(log), "CAIRN_BUMP_SECONDS": "0.1"}
    client = cairn.Client(db_url)
    workers = [_worker(db_url, env) for _ in range(3)]
    kills = 0
    try:
        await eventually(lambda: registered(client, "five_steps"), timeout=30, what="workers registered")
        handles = [await client.start("tests.process.chaosflows.five_steps", n) for n in range(RUNS)]
        deadline = time.monotonic() + 150
        while await _done(client) < RUNS:
            assert time.monotonic() < deadline, f"only {await _done(client)} of {RUNS} runs completed" + await _stuck(
                client
            )
            await asyncio.sleep(0.5 if kills == 0 else 1.0)  # the chaos interval, not a synchronisation
            victim = workers[kills % 3]
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=10)
            workers[kills % 3] = _worker(db_url, env)
            kills += 1
        assert kills >= 2, "the run finished before the chaos began; make it longer"

        effects = collections.Counter(tuple(line.split()) for line in log.read_text().splitlines())
        assert all(count == 1 for count in effects.values()), "an attempt's side effect happened twice"
        accounted = 0
        for handle in handles:
            assert await handle.result(timeout=5) == 15
            completions = [e for e in await handle.events() if e.kind == "completed"]
            assert len(completions) == 1, f"run {handle.id} completed {len(completions)} times"
            steps = [s for s in await handle.steps() if s.kind == StepKind.ACTION]
            assert [s.seq for s in steps] == [1, 2, 3, 4, 5]
            for step in steps:
                seen = {int(a) for (r, q, a) in effects if r == handle.id and int(q) == step.seq}
                assert step.attempt in seen, f"{handle.id} step {step.seq}: final attempt left no effect"
                assert seen <= set(range(1, step.attempt + 1)), f"{handle.id} step {step.seq}: {seen}"
                accounted += len(seen)
        assert accounted == sum(effects.values()), "side effects from attempts the journal does not record"
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
            w.wait(timeout=10)
        await client.close()


async def _done(client: cairn.Client) -> int:
    return len(await client.list_runs(status=RunStatus.COMPLETED, limit=RUNS))


async def _stuck(client: cairn.Client) -> str:
    """What the unfinished runs look like, for the failure message."""
    lines = []
    for status in (RunStatus.RUNNING, RunStatus.PENDING, RunStatus.WAITING, RunStatus.PAUSED, RunStatus.FAILED):
        for row in await client.list_runs(status=status, limit=5):
            steps = await client.get(row.id).steps()
            lines.append(
                f"\n{row.id} {row.status} activations={row.activations} owner={row.lease_owner} "
                f"token={row.lease_token} error={(row.error or '')[:300]} "
                f"steps={[(s.seq, s.status.value, s.attempt) for s in steps]}"
            )
    return "".join(lines)
