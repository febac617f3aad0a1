"""A script that starts a worker without `if __name__ == "__main__":` and runs isolate=True actions.

multiprocessing runs the worker's main script again in each child process it starts. Before, such
a script started a second worker and its own runs inside every isolated action's process. Now the
child refuses at once: no second run, and the worker's stderr says what to write instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cairn
from tests.helpers import script_env

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]


def _run_script(script: Path, text: str, url: str) -> subprocess.CompletedProcess[str]:
    """`text` written to `script` and run as `python script URL` in its folder."""
    script.write_text(text)
    return subprocess.run(
        [sys.executable, str(script), url],
        cwd=script.parent,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )


UNGUARDED = """
import asyncio, sys
import cairn
from tests import isolate_flows

async def main() -> None:
    client = cairn.connect(sys.argv[1])
    async with cairn.Worker(client):
        print("RESULT", await client.run(isolate_flows.always_crash_flow, timeout=60), flush=True)

asyncio.run(main())  # no `if __name__ == "__main__":`
"""


def test_a_script_without_a_main_guard_starts_no_worker_in_an_isolated_actions_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    done = _run_script(tmp_path / "unguarded.py", UNGUARDED, url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("RESULT") == 1, done.stdout
    assert "ActionCrashed" in done.stdout and "exited with code 1" in done.stdout, done.stdout
    assert 'start the worker under `if __name__ == "__main__":`' in done.stderr, done.stderr[-3000:]
    with cairn.connect_sync(url) as client:
        runs = client.list_runs()
    assert [r.workflow for r in runs] == ["tests.isolate_flows.always_crash_flow"]  # one run: the script's own


GUARDED = """
import asyncio, json, os, sys
import cairn

@cairn.action(isolate=True)
def in_its_own_process(x: int) -> list[int]:
    return [x + 1, os.getpid()]

@cairn.workflow
async def uses_it(x: int) -> list[int]:
    return await in_its_own_process(x)

async def main() -> None:
    client = cairn.connect(sys.argv[1])
    async with cairn.Worker(client):
        value, child = await client.run(uses_it, 1, timeout=60)
        print("RESULT", json.dumps({"value": value, "child": child, "script": os.getpid()}), flush=True)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_a_script_may_define_isolate_true_actions_it_runs_itself(tmp_path: Path) -> None:
    """As the README says: under `if __name__ == "__main__":`, a script's own isolate=True action
    runs in its own process. It was refused at run time ("defined in __main__, which the child
    process cannot import"): the child imports the script as `__mp_main__`, where the action's id
    was `__mp_main__.in_its_own_process`, not the script's `guarded.in_its_own_process`."""
    done = _run_script(tmp_path / "guarded.py", GUARDED, f"sqlite:///{tmp_path / 'c.db'}")
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    said = json.loads(line.removeprefix("RESULT "))
    assert said["value"] == 2 and said["child"] != said["script"], said
