"""`cairn --help` (and each command's) imports no heavy dependency and starts in under 0.3 s;
`python -m cairn` is the same command line."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("pydantic", "rich", "psycopg", "fastapi", "mountaineer_di", "uvicorn", "cairn.api", "cairn.store.sql_store")

PROBE = """
import json, sys, time
began = time.perf_counter()
from cairn.cli.main import cli
try:
    cli(sys.argv[1:], prog_name="cairn", standalone_mode=False)
except SystemExit:
    pass
took = time.perf_counter() - began
print(json.dumps({"took": took, "loaded": [m for m in HEAVY if m in sys.modules]}))
""".replace("HEAVY", repr(HEAVY))


def _probe(*args: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("command", ["", "worker", "dev", "start", "runs", "show", "result", "replay", "bench"])
def test_help_imports_nothing_heavy(command: str) -> None:
    args = [command, "--help"] if command else ["--help"]
    assert _probe(*args)["loaded"] == []


def test_help_takes_under_a_third_of_a_second() -> None:
    # The best of three, measured inside the process (interpreter start-up excluded): the
    # machine is shared, and one slow run says more about the neighbours than about us.
    best = min(float(str(_probe("--help")["took"])) for _ in range(3))
    assert best < 0.3, f"cairn --help took {best:.3f}s to import and run"


def test_python_dash_m_cairn_is_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cairn", "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: cairn" in done.stdout
    db = f"sqlite:///{tmp_path}/cairn.db"
    runs = [sys.executable, "-m", "cairn", "runs", "--db", db, "--json"]
    done = subprocess.run(runs, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("error: no database at ")  # reading creates nothing
    asyncio.run(_create(db))
    done = subprocess.run(runs, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


async def _create(url: str) -> None:
    import cairn

    client = cairn.Client(url)
    await client.store.open()
    await client.close()


DEFINES = """
import json, sys, cairn

@cairn.action
async def add_one(x: int) -> int:
    return x + 1

@cairn.workflow
async def flow(x: int) -> int:
    return await add_one(x)

client, worker = cairn.Client, cairn.Worker
print(json.dumps([m for m in ("fastapi", "mountaineer_di", "starlette", "uvicorn") if m in sys.modules]))
"""


def test_defining_actions_imports_no_web_framework() -> None:
    """mountaineer-di imports FastAPI whenever it is installed (0.2 s): a worker process, each
    isolated action's child and every script that defines an action would pay it, though only an
    action that injects a dependency needs the resolver."""
    done = subprocess.run([sys.executable, "-c", DEFINES], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
