"""A script's exception classes across processes: the README's setup, a script run as
`python shop.py` whose workflows run on its embedded worker while `cairn worker shop` runs its
actions. The worker records `shop.Declined`, which the script has as `__main__.Declined`: the
workflow's `except Declined:` got `ActionError` instead, and a per-call `non_retryable=(Flaky,)`,
stored as `__main__.Flaky`, never matched the worker's `shop.Flaky` (retried to the last attempt)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import script_env

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

SHOP = """
import asyncio, sys
import cairn
from cairn import BackoffPolicy, RetryPolicy, Workflow, action, workflow

class Declined(Exception):
    pass

class Flaky(Exception):
    pass

@action(queue="payments")
async def charge(order: str) -> str:
    raise Declined(f"card declined for {order}")

@action(queue="payments", backoff=BackoffPolicy(base_delay=0.01, max_delay=0.02, jitter=False))
async def flaky_charge(order: str) -> str:
    raise Flaky(f"attempt {cairn.context().attempt}")

@workflow
class Checkout(Workflow):
    async def run(self, order: str) -> str:
        try:
            await charge(order)
        except Declined as e:
            return f"caught Declined: {e}"
        except Exception as e:
            return f"not caught as Declined: {type(e).__module__}.{type(e).__qualname__}: {e}"
        return "charged"

@workflow
class PerCall(Workflow):
    async def run(self, order: str) -> str:
        try:
            await self.run_action(flaky_charge(order), retry=RetryPolicy(attempts=4, non_retryable=(Flaky,)))
        except Exception as e:
            return f"{type(e).__qualname__}: {e}"
        return "charged"

async def main(url: str) -> None:
    client = cairn.connect(url)
    async with cairn.Worker(client, queues=["default"]):
        print("CHECKOUT", await client.run(Checkout, "o-1", timeout=60), flush=True)
        print("PERCALL", await client.run(PerCall, "o-2", timeout=60), flush=True)

if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
"""


def test_a_scripts_exception_reaches_its_workflow_as_its_type_from_a_worker_that_imports_the_script(
    db_url: str, tmp_path: Path
) -> None:
    (tmp_path / "shop.py").write_text(SHOP)
    env = {**script_env(), "PYTHONPATH": os.pathsep.join([str(tmp_path), script_env()["PYTHONPATH"]])}
    worker = subprocess.Popen(
        [sys.executable, "-m", "cairn", "worker", "shop", "--queues", "payments", "--db", db_url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        done = subprocess.run(
            [sys.executable, "shop.py", db_url], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90
        )
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=30)
    assert done.returncode == 0, done.stderr[-3000:] + err[-2000:]
    said = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("CHECKOUT", "PERCALL")))
    assert said["CHECKOUT"] == "caught Declined: card declined for o-1"
    assert said["PERCALL"] == "Flaky: attempt 1"  # non_retryable: one attempt
