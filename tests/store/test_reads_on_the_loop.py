"""One-statement reads on PostgreSQL go out on the event loop, on connections of their own.

A read (a run's row, its steps, its events, a page of runs, the result waiters' batches) was a
transaction on a connection thread: a hop to the thread and back, BEGIN, the statement and COMMIT,
two round trips, on the connections the worker's claims and commits use. It is now one autocommit
statement on a read connection of the loop, and the commits' and claims' connections never see it.
"""

from __future__ import annotations

import asyncio

import psycopg
import pytest

import cairn
from cairn.store.postgres import READ_CONNECTIONS, PostgresDatabase
from tests import flows

pytestmark = [pytest.mark.timeout(60), pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


def _db(client: cairn.Client) -> PostgresDatabase:
    db = client.store.db  # type: ignore[attr-defined]
    assert isinstance(db, PostgresDatabase)
    return db


async def test_reads_leave_the_connections_of_claims_and_commits_alone(client: cairn.Client) -> None:
    async with cairn.Worker(client):
        handle = await client.start(flows.Sequence3, 1)
        await handle.result(timeout=20)
    db = _db(client)
    assert db._pool is not None
    before = db._pool.get_stats().get("requests_num", 0)
    # What a dashboard or gathered `status()` calls send: many reads at once.
    answers = await asyncio.gather(
        *(
            read
            for _ in range(50)
            for read in (handle.describe(), handle.steps(), handle.events(), client.list_runs(status="completed"))
        )
    )
    assert len(answers) == 200 and all(a.id == handle.id for a in answers[::4])  # type: ignore[union-attr]
    assert db._pool.get_stats().get("requests_num", 0) == before  # not one on a connection thread
    assert db._rpool is not None and db._rpool.get_stats()["pool_size"] <= READ_CONNECTIONS


async def test_reads_answer_after_the_server_ended_their_connections(client: cairn.Client, db_url: str) -> None:
    """As after a failover or an idle timeout of a proxy: every session of the database ended."""
    handle = await client.start(flows.Sequence3, 2)
    assert (await handle.describe()).status == cairn.RunStatus.PENDING
    with psycopg.connect(db_url, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert ended is not None and ended[0] >= 1
    assert (await handle.describe()).status == cairn.RunStatus.PENDING
    assert await handle.steps() == []
    assert [r.id for r in await client.list_runs()] == [handle.id]
