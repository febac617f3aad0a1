"""A SQLite writer stopped in the middle of its transaction (issue 18, defect 5): the others get a
clear DatabaseLocked, naming the file, the process holding the lock and how long they waited,
within the busy timeout they chose; once that process goes on or dies, everything proceeds, and
nothing of either side was half-written."""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import cairn
from tests import flows

pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]

HOLDER = """
import os, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
now = time.time()
conn.execute(
    "INSERT INTO cairn_runs (id, workflow, status, input, created_at, updated_at) "
    "VALUES ('holder-run', 'tests.flows.function_style', 'pending', '{\\"x\\": 1}', ?, ?)",
    (now, now),
)
conn.execute("INSERT INTO cairn_events (run_id, at, kind) VALUES ('holder-run', ?, 'started')", (now,))
print("locked", flush=True)
sys.stdin.readline()  # stopped here (SIGSTOP) until told to go on, or killed
conn.execute("COMMIT")
print("committed", flush=True)
"""


@pytest.mark.parametrize("then", ["resumed", "killed"])
async def test_a_writer_stopped_mid_transaction_gives_a_clear_error_then_everything_proceeds(
    tmp_path: Path, then: str
) -> None:
    path = tmp_path / "cairn.db"
    client = cairn.Client(f"sqlite:///{path}?busy_timeout=1")
    await client.store.open()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        os.kill(holder.pid, signal.SIGSTOP)  # frozen with the write lock held

        started = time.monotonic()
        blocked = asyncio.ensure_future(client.start(flows.function_style, 1, id="blocked"))
        # Reads take no lock: they answer while the start waits for the write lock, and so does
        # a process that opens the database meanwhile (a `cairn runs`: it is migrated already).
        assert await asyncio.wait_for(client.list_runs(), 0.5) == []
        assert not blocked.done()
        other = cairn.Client(f"sqlite:///{path}?busy_timeout=1")
        try:
            assert await asyncio.wait_for(other.list_runs(), 0.9) == []
        finally:
            await other.close()
        with pytest.raises(cairn.DatabaseLocked) as caught:
            await blocked
        waited = time.monotonic() - started
        assert waited < 5, f"the busy timeout was 1 s, yet start() waited {waited:.1f}s"
        error = caught.value
        assert isinstance(error, cairn.StoreError)
        message = str(error)
        assert str(path) in message and f"pid {holder.pid}" in message and "write lock" in message
        assert "CAIRN_SQLITE_BUSY_TIMEOUT" in message and "busy_timeout" in message
        assert (error.path, error.holder) == (str(path), holder.pid) and 0.9 < error.waited < 5

        if then == "resumed":
            os.kill(holder.pid, signal.SIGCONT)
            assert holder.stdin is not None
            holder.stdin.write("go\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "committed"
            assert holder.wait(timeout=10) == 0
        else:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)

        handle = await client.start(flows.function_style, 1, id="blocked")
        assert handle.created, "the start that failed wrote something"
        assert await handle.status() == cairn.RunStatus.PENDING
        held = client.get("holder-run")
        if then == "resumed":  # committed whole: the run and its event
            assert await held.status() == cairn.RunStatus.PENDING
            assert [e.kind for e in await held.events()] == ["started"]
        else:  # rolled back whole: neither
            with pytest.raises(cairn.RunNotFound):
                await held.status()
            assert await client.store.list_events("holder-run") == []
    finally:
        if holder.poll() is None:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait(timeout=10)
        await client.close()


def test_a_busy_timeout_that_is_not_a_number_is_refused_with_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"busy_timeout in the database URL must be a number of seconds.*'soon'"):
        cairn.Client(f"sqlite:///{tmp_path}/a.db?busy_timeout=soon")
    monkeypatch.setenv("CAIRN_SQLITE_BUSY_TIMEOUT", "-1")
    with pytest.raises(ValueError, match=r"CAIRN_SQLITE_BUSY_TIMEOUT must be a number of seconds.*'-1'"):
        cairn.Client(f"sqlite:///{tmp_path}/a.db")
    monkeypatch.setenv("CAIRN_SQLITE_BUSY_TIMEOUT", "2.5")
    assert cairn.Client(f"sqlite:///{tmp_path}/a.db").store.db.busy_timeout == 2.5  # type: ignore[attr-defined]


async def test_a_lock_held_by_another_connection_of_this_process_is_said_to_be_so(tmp_path: Path) -> None:
    """Two clients of one file in one process: the lock one holds was blamed on "another process"."""
    url = f"sqlite:///{tmp_path}/cairn.db?busy_timeout=0.3"
    holding, other = cairn.Client(url), cairn.Client(url)
    entered, release = threading.Event(), threading.Event()

    def hold(tx: object) -> None:
        entered.set()
        release.wait()

    await holding.store.open()
    held = threading.Thread(target=asyncio.run, args=(holding.store.db.transaction(hold),))  # type: ignore[attr-defined]
    held.start()
    try:
        assert await asyncio.to_thread(entered.wait, 10)
        with pytest.raises(cairn.DatabaseLocked) as caught:
            await other.start(flows.function_style, 1, id="blocked")
    finally:
        release.set()
        await asyncio.to_thread(held.join)
    error = caught.value
    assert (error.holder, error.ours) == (None, True)
    assert "another connection of this process holds its write lock" in str(error)
    assert "another process" not in str(error)
    assert pickle.loads(pickle.dumps(error)).ours  # as a worker's error crosses to another process
    await other.start(flows.function_style, 1, id="then")
    await holding.close()
    await other.close()
