"""The `cairn_env` fixture as a user's own test suite meets it, under pytest-asyncio in strict mode
(`@pytest.mark.asyncio` on each test) and in auto mode: a fresh database and fresh fakes per test,
time skipping, a plain `def` test with `environment()`, and a test on another event loop than the
fixture's, which fails at once saying why instead of waiting for ever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

USER_TESTS = """
import asyncio
from datetime import timedelta

import pytest

import cairn
from cairn.testing import environment

CALLS = []


@cairn.action
async def charge(user: str) -> str:
    CALLS.append(user)
    return f"real {user}"


@cairn.workflow
async def renewal(user: str) -> str:
    await cairn.sleep(timedelta(days=30))
    return await charge(user)


MARK
async def test_first_has_its_fake_and_skips_a_month(cairn_env):
    async def fake(user: str) -> str:
        return f"fake {user}"

    cairn_env.replace_action(charge, fake)
    assert await cairn_env.client.run(renewal, "ada", timeout=30) == "fake ada"
    assert cairn_env.now() - cairn_env.started >= timedelta(days=30)


MARK
async def test_second_sees_neither_its_runs_nor_its_fake(cairn_env):
    assert await cairn_env.client.list_runs() == []
    assert await cairn_env.client.run(renewal, "bob", timeout=30) == "real bob"
    assert CALLS == ["bob"]


def test_a_plain_def_test_runs_an_environment_itself():
    async def main():
        async with environment() as env:
            return await env.client.run(renewal, "cy", timeout=30)

    assert asyncio.run(main()) == "real cy"


@pytest.mark.asyncio(loop_scope="module")
async def test_on_another_loop_than_the_fixture(cairn_env):
    # The fixture's loop (function scope) does not run during this test: its worker cannot move.
    with pytest.raises(RuntimeError, match="another event loop than the test environment"):
        await cairn_env.client.run(renewal, "dan")
"""

FAST = ["-p", "no:cacheprovider", "-p", "no:schemathesis", "-p", "no:hypothesispytest", "-p", "no:anyio"]
"""Plugins of this repository's environment that a user's project would not have (they take
seconds to load); the cairn and pytest-asyncio plugins load as in any project."""


@pytest.mark.process
def test_cairn_env_under_pytest_asyncio_strict_and_auto_modes(tmp_path: Path) -> None:
    runs = {}
    for mode, mark in (("strict", "@pytest.mark.asyncio"), ("auto", "")):
        root = tmp_path / mode
        root.mkdir()
        (root / "test_user.py").write_text(USER_TESTS.replace("MARK", mark))
        options = ["-o", f"asyncio_mode={mode}", "-o", "asyncio_default_fixture_loop_scope=function"]
        runs[mode] = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-q", *FAST, *options, "-W", "error", "test_user.py"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for mode, run in runs.items():
        out, _ = run.communicate(timeout=120)
        assert run.returncode == 0, f"{mode} mode:\n{out}"
        assert "4 passed" in out, f"{mode} mode:\n{out}"
