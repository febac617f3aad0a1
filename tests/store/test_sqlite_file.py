"""The SQLite file as users handle it: deleted under a running worker (`rm cairn.db` to start
afresh), or not writable. A worker went on with the deleted file for ever, unseen, and a read-only
file gave "attempt to write a readonly database", naming neither the file nor what to do."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cairn
from cairn.errors import DatabaseReplaced
from tests import flows

pytestmark = pytest.mark.timeout(60)


async def test_a_worker_whose_database_file_is_deleted_stops_saying_so(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    client = cairn.Client(f"sqlite:///{path}")
    worker = cairn.Worker(client, poll_interval=0.05)
    await worker.start()
    try:
        assert await client.run(flows.Sequence3, 1, timeout=10) == 4
        for leftover in tmp_path.glob("app.db*"):
            leftover.unlink()
        with pytest.raises(DatabaseReplaced, match="deleted or replaced while this process had it open"):
            await asyncio.wait_for(worker.serve_until_stopped(), 20)
        with pytest.raises(DatabaseReplaced):
            await client.list_runs()
        with pytest.raises(DatabaseReplaced):  # a wait is told so, not kept waiting for ever
            await asyncio.wait_for(client.get("any").result(), 5)
    finally:
        await worker.stop()
        await client.close()


SCRIPT = """
import asyncio, sys
import cairn
from tests import flows

async def main() -> None:
    client = cairn.Client(sys.argv[1])
    try:
        await client.start(flows.Sequence3, 1)
    except cairn.StoreError as exc:
        print(f"StoreError: {exc}")
    finally:
        await client.close()

asyncio.run(main())
"""


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop root's file override")
@pytest.mark.parametrize("unwritable", ["file", "directory"])
def test_a_database_that_cannot_be_written_is_named_with_what_to_do(tmp_path: Path, unwritable: str) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    path = folder / "app.db"
    if unwritable == "file":
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"import cairn, asyncio; asyncio.run(cairn.Client('sqlite:///{path}').store.open())",
            ],
            check=True,
        )
        path.chmod(0o444)
    folder.chmod(0o555)
    try:
        # As an ordinary user: root's override of file modes dropped.
        drop = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]
        done = subprocess.run(
            [*drop, sys.executable, "-c", SCRIPT, f"sqlite:///{path}"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    finally:
        folder.chmod(0o755)
    said = done.stdout + done.stderr
    assert "StoreError: cannot write the SQLite database at" in said and str(path) in said, said
    assert "must be writable by this user" in said, said


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("sqlite:///./run#1.db", "a '#' in it ends the file's name there"),
        ("sqlite:///./what?.db", "unknown option .db after '?'"),
        ("sqlite:///./app.db?synchronus=full", "unknown option synchronus after '?'"),
    ],
)
def test_a_sqlite_url_that_would_open_another_file_is_refused(url: str, said: str) -> None:
    """`run#1.db` opened `run`, `what?.db` opened `what`, and a misspelt option was ignored."""
    with pytest.raises(ValueError, match=re.escape(said)):
        cairn.Client(url).store  # noqa: B018  (the store is made, and checks the URL, here)
    assert cairn.Client("sqlite:///./app.db?synchronous=full&busy_timeout=3").store is not None


@cairn.action
def moves_elsewhere(folder: str) -> str:
    os.chdir(folder)  # as a library might
    return folder


@cairn.workflow
async def changes_directory(folder: str) -> str:
    await moves_elsewhere(folder)
    await cairn.sleep(1.1)  # past the file check's second
    return "after"


async def test_a_relative_database_path_holds_when_the_process_changes_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`./cairn.db` named another file once an action changed directory: the worker said the
    database was deleted and stopped, and result() waited for ever."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    client = cairn.Client("sqlite:///./cairn.db")
    try:
        async with cairn.Worker(client, poll_interval=0.05):
            assert await client.run(changes_directory, str(tmp_path / "elsewhere"), timeout=20) == "after"
            assert len(await client.list_runs()) == 1
    finally:
        await client.close()
    assert (tmp_path / "cairn.db").exists() and not (tmp_path / "elsewhere" / "cairn.db").exists()
