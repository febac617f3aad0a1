"""A client used before `os.fork()` (as `multiprocessing` does on Linux by default): in the child,
its calls waited for ever on a loop thread that did not exist there. Now the child is told at once
to make a client of its own, `cairn.connect()` gives it one, and the parent's goes on untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]

SCRIPT = """
import asyncio, os, sys
import cairn
from cairn.bench import flows

url = sys.argv[1]

async def use_async(client):
    async with cairn.Worker(client, poll_interval=0.05):
        return await client.run(flows.three_steps, 1, timeout=20)

blocking = cairn.connect_sync(url)
shared = cairn.connect(url)
print("parent", asyncio.run(use_async(shared)), len(blocking.list_runs()), flush=True)
pid = os.fork()
if pid == 0:
    said = []
    for use in (lambda: blocking.list_runs(), lambda: asyncio.run(shared.list_runs())):
        try:
            use()
        except RuntimeError as exc:
            said.append("forked from" in str(exc) and "Make a new client in this process" in str(exc))
    fresh = cairn.connect(url)
    ran = asyncio.run(use_async(fresh))
    blocking.close()  # the parent's: left to it
    print("child", said, ran, fresh is not shared, flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
runs = len(blocking.list_runs())
print("parent", os.waitstatus_to_exitcode(status), runs, asyncio.run(use_async(shared)), flush=True)
blocking.close()
"""


def test_a_client_used_in_a_forked_child_says_so_and_the_parents_goes_on(db_url: str) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, db_url], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["parent 4 1", "child [True, True] 4 True", "parent 0 2 4"]
