"""A process stopped in the middle of one of Cairn's transactions on PostgreSQL (SIGSTOP, a paused
VM, a debugger) must not hold its row locks for as long as it stays stopped: every other worker
waited on them, a new worker could not even start (its queue upsert waited on the row), and the
stopped worker's runs were never taken over when their leases ran out. The server now ends such a
transaction once it has sat idle past `IDLE_IN_TRANSACTION`, and the locks go with it.

SQLite's write lock is the file's: a stopped process holding it is documented in
docs/concepts/leases.md."""

from __future__ import annotations

import asyncio
import threading
import time

import psycopg
import pytest

import cairn
from cairn.bench import flows
from cairn.store import postgres
from cairn.store.base import Tx

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_transaction_stopped_between_statements_lets_its_locks_go(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres, "IDLE_IN_TRANSACTION", 1.0)
    client = cairn.Client(db_url)
    stopped, resumed = threading.Event(), threading.Event()
    attempts: list[float] = []

    def holds_the_run_then_stops(tx: Tx) -> None:
        tx.all("lock_run", {"id": handle.id})
        attempts.append(time.monotonic())
        if len(attempts) == 1:  # as a SIGSTOP between two statements would
            stopped.set()
            resumed.wait(30)
        tx.all("lock_run", {"id": handle.id})

    try:
        handle = await client.start(flows.three_steps, 1)
        held = asyncio.create_task(client.store.db.transaction(holds_the_run_then_stops))
        await asyncio.to_thread(stopped.wait, 10)

        began = time.monotonic()
        with psycopg.connect(db_url, autocommit=True) as other:  # another worker, wanting the row
            other.execute("SET lock_timeout = '20s'")
            other.execute("UPDATE cairn_runs SET updated_at = updated_at WHERE id = %s", (handle.id,))
        assert time.monotonic() - began < 10, "the stopped transaction's lock was held"

        resumed.set()  # the stopped process goes on: its transaction is gone, it runs it again
        await held
        assert len(attempts) == 2
    finally:
        resumed.set()
        await client.close()
