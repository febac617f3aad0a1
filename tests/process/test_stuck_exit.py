"""Ctrl-C ends a program whose database call is stuck behind another process's lock.

A store's calls that wait in a thread (SQLite's wait for a write lock another process holds, up to
its busy timeout; a PostgreSQL statement behind another session's lock, for as long as that lasts)
kept the process alive after Ctrl-C: the thread pool's threads were joined at exit, and on SQLite
the client's close queued behind the stuck call. The program printed its KeyboardInterrupt and
lived on until the lock went."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from tests.helpers import ROOT, script_env, waiting_on_a_lock

pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]


SCRIPT = """
import asyncio, sys
import cairn
from tests import flows

async def main() -> None:
    client = cairn.Client(sys.argv[1])
    handle = await client.start(flows.function_style, 1, id="stuck")
    print("started", flush=True)
    sys.stdin.readline()  # the test takes the lock meanwhile
    cancel = asyncio.ensure_future(handle.cancel())
    if client.store.db.dialect == "sqlite":
        while not client.store.db._on_thread:  # handed to the writer's thread, which waits for the lock
            await asyncio.sleep(0.002)
        print("stuck", flush=True)
    try:
        await cancel
    finally:
        await client.close()

asyncio.run(main())
"""


@contextmanager
def lock_held(db_url: str) -> Iterator[None]:
    """Another program holds the lock the script's next write needs, until the block ends."""
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with psycopg.connect(db_url) as conn:
        conn.execute("LOCK TABLE cairn_runs IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()


def test_ctrl_c_ends_a_program_whose_database_call_waits_for_another_process_lock(db_url: str) -> None:
    url = f"{db_url}?busy_timeout=60" if db_url.startswith("sqlite") else db_url
    script = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(),
        cwd=ROOT,
    )
    try:
        assert script.stdout is not None and script.stdin is not None
        assert script.stdout.readline().strip() == "started"
        with lock_held(db_url):
            script.stdin.write("go\n")
            script.stdin.flush()
            if db_url.startswith("sqlite"):
                assert script.stdout.readline().strip() == "stuck"
            else:
                deadline = time.monotonic() + 30
                while not waiting_on_a_lock(db_url):  # the cancel's statement, behind the table's lock
                    assert script.poll() is None and time.monotonic() < deadline, "the cancel never waited"
                    time.sleep(0.01)
            interrupted = time.monotonic()
            script.send_signal(signal.SIGINT)
            try:
                _, err = script.communicate(timeout=10)  # the lock is still held: nothing else ends the wait
            except subprocess.TimeoutExpired:
                pytest.fail("the program lived on after Ctrl-C while its database call waited for a lock")
            took = time.monotonic() - interrupted
    finally:
        if script.poll() is None:
            script.kill()
            script.wait()
    assert script.returncode != 0 and "KeyboardInterrupt" in err, err
    assert took < 5, f"the program took {took:.1f}s to end after Ctrl-C"
