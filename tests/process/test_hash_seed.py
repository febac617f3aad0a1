"""A set of strings in a payload is written in one order in every process. Python iterates such a
set in an order that changes with the process's hash seed: recorded by one worker and replayed by
another (a restart, a deploy, another machine), a set passed to an action was a different call, and
the run paused on a NonDeterminismError it had done nothing to earn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cairn
from cairn import RunStatus
from tests.conftest import eventually
from tests.helpers import registered, status_is
from tests.process import setflows

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]

PRINT = (
    "import pydantic, cairn.serialization as s; words = [f'word-{i}' for i in range(12)]\n"
    "class M(pydantic.BaseModel):\n    tags: frozenset[str]\n"
    "print(list(set(words)))\n"
    "print(s.dumps({'set': set(words), 'nested': [{'a', 'b', 'c'}], 'model': M(tags=frozenset(words))}))"
)


def _in_process_with_seed(seed: int) -> tuple[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    out = subprocess.run([sys.executable, "-c", PRINT], env=env, check=True, capture_output=True, text=True)
    iterated, dumped = out.stdout.splitlines()
    return iterated, dumped


def test_a_set_of_strings_is_the_same_json_whatever_the_hash_seed() -> None:
    seen = [_in_process_with_seed(seed) for seed in (1, 2, 3)]
    assert len({iterated for iterated, _ in seen}) > 1, "the seeds should iterate the set in different orders"
    assert len({dumped for _, dumped in seen}) == 1
    assert '"set":["word-0","word-1","word-10","word-11","word-2"' in seen[0][1]


@pytest.fixture
def worker_with_seed(db_url: str) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(seed: int) -> subprocess.Popen[bytes]:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        cmd = [sys.executable, "-m", "cairn.cli.main", "worker", "tests.process.setflows", "--db", db_url]
        env = {**os.environ, "PYTHONHASHSEED": str(seed)}
        procs.append(subprocess.Popen([*cmd, "--poll", "0.1"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


async def test_a_set_passed_to_an_action_replays_in_a_worker_with_another_hash_seed(
    db_url: str, worker_with_seed: Callable[[int], subprocess.Popen[bytes]]
) -> None:
    client = cairn.Client(db_url)
    try:
        worker_with_seed(1)
        await eventually(lambda: registered(client, "tests.process.setflows.tagged"), timeout=30, what="registered")
        handle = await client.start("tests.process.setflows.tagged", setflows.WORDS)
        await eventually(lambda: status_is(handle, RunStatus.WAITING), timeout=30, what="the run waiting")
        (call,) = [s for s in await handle.steps() if s.name.endswith("count_tags")]
        assert call.args["tags"] == sorted(setflows.WORDS)

        worker_with_seed(2)  # iterates the set in another order: replays the memory write and the call
        await handle.signal("go")
        assert await handle.result(timeout=30) == [12, 13, sorted(setflows.WORDS)]
    finally:
        await client.close()
