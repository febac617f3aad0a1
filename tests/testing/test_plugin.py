"""The pytest plugin, as a user's project meets it: installed by the entry point, a `cairn_env`
fixture, and `--cairn-db` running the same tests on PostgreSQL (a fresh database per test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

USER_TESTS = """
from datetime import timedelta

import pytest

import cairn


@cairn.action
async def greet(name: str) -> str:
    return f"hello {name}"


@cairn.workflow
async def slow_greeting(name: str) -> str:
    await cairn.sleep(timedelta(days=7))
    return await greet(name)


@pytest.mark.asyncio
async def test_greeting(cairn_env):
    assert await cairn_env.client.run(slow_greeting, "ada", timeout=30) == "hello ada"
    assert cairn_env.now() - cairn_env.started >= timedelta(days=7)
    print("BACKEND", cairn_env.url.split(":", 1)[0])


@cairn.action
async def approve(run_id: str) -> None:
    await cairn.send_signal(run_id, "approved", "by an action")


@cairn.workflow
async def waits_for_approval() -> str:
    return str(await cairn.wait_for_signal("approved"))


@cairn.workflow
async def approver(run_id: str) -> None:
    await approve(run_id)


@pytest.mark.asyncio
async def test_signals_sent_from_the_test_and_from_an_action_reach_the_environment(cairn_env):
    first = await cairn_env.client.start(waits_for_approval)
    await cairn.send_signal(first.id, "approved", "by the test")
    assert await first.result(timeout=30) == "by the test"
    second = await cairn_env.client.start(waits_for_approval)
    await cairn_env.client.run(approver, second.id, timeout=30)
    assert await second.result(timeout=30) == "by an action"
    assert cairn.connect() is cairn_env.client
"""


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_user.py", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cairn_env_fixture_on_sqlite_by_default(tmp_path: Path) -> None:
    """`cairn.send_signal` outside a workflow (from the test, from an action) went to ./cairn.db,
    the default client's database, not the environment's: RunNotFound, and a cairn.db left behind."""
    done = _pytest(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BACKEND sqlite" in done.stdout
    assert "2 passed" in done.stdout
    assert not list(tmp_path.glob("cairn.db*"))


@pytest.mark.process
def test_cairn_db_runs_the_same_tests_on_postgres(tmp_path: Path, pg_server: str) -> None:
    done = _pytest(tmp_path, "--cairn-db", pg_server)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "BACKEND postgresql" in done.stdout
    assert "2 passed" in done.stdout
