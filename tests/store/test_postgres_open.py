"""Opening a PostgreSQL store while the server is still starting up: waited for, but not by a
thread that outlives the open when the caller gives up (Ctrl-C)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from cairn.store.postgres import PostgresDatabase
from tests.conftest import eventually
from tests.helpers import holds

STARTING_UP = b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0\0"


@contextlib.contextmanager
def starting_up_server() -> Iterator[int]:
    """A server that answers every connection as PostgreSQL does while it starts (57P03); its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while True:
                header = conn.recv(8, socket.MSG_WAITALL)
                if len(header) < 8:
                    return
                length, code = struct.unpack("!ii", header)
                conn.recv(length - 8, socket.MSG_WAITALL)
                if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest: not here
                    conn.sendall(b"N")
                    continue
                conn.sendall(b"E" + struct.pack("!i", len(STARTING_UP) + 4) + STARTING_UP)
                return

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def _pg_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("cairn-pg")}


@pytest.mark.timeout(60)
async def test_a_cancelled_open_stops_waiting_for_a_server_still_starting_up(caplog: pytest.LogCaptureFixture) -> None:
    """Ctrl-C while a worker waited for PostgreSQL to finish starting: the open was cancelled, but
    its thread kept retrying for `retry_for` (60 s), logging each try, and the process could not
    exit until then."""
    caplog.set_level(logging.WARNING, logger="cairn")
    before = _pg_threads()
    with starting_up_server() as port:
        db = PostgresDatabase(f"postgresql://postgres@127.0.0.1:{port}/test", retry_for=60)
        opening = asyncio.ensure_future(db.open())
        await eventually(lambda: holds("is not ready (" in caplog.text), what="the open waiting for the server")
        mine = _pg_threads() - before
        assert mine
        opening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await opening
        await eventually(lambda: holds(not any(t.is_alive() for t in mine)), timeout=5, what="its thread to end")


def _waiting_for_lock_on(url: str, table: str) -> bool:
    """Whether a connection of the database waits for a lock on `table`."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE NOT l.granted AND c.relname = %s AND l.database = (SELECT oid FROM pg_database "
            "WHERE datname = current_database())",
            (table,),
        ).fetchone()
    return bool(row and row[0])


async def test_a_migration_that_meets_an_old_workers_locks_is_applied_after_them(pg_server: str) -> None:
    """A rolling deploy: a new worker migrates the schema while old ones still commit (run row,
    then steps). Migration 0009 locks the steps table, 0010 then waits for the runs table, which
    an old worker's commit holds while it waits for the steps: deadlocked, PostgreSQL ended the
    migration, and the new worker exited with a traceback, again at each restart until it won."""
    import uuid

    import psycopg

    import cairn
    from cairn.store.sql import migrations
    from tests.conftest import _admin, _with_db

    name = f"cairn_mig_{uuid.uuid4().hex[:10]}"
    _admin(pg_server, f'CREATE DATABASE "{name}"')
    url = _with_db(pg_server, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:  # the schema as an old version left it
            conn.execute(
                "CREATE TABLE cairn_schema_version "
                "(version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)"
            )
            for version, script_name, script in migrations("postgres"):
                if version <= 8:
                    conn.execute(script.encode())
                    conn.execute("INSERT INTO cairn_schema_version VALUES (%s, %s, 0)", (version, script_name))
            conn.execute(
                "INSERT INTO cairn_runs (id, workflow, status, input, queue, created_at, updated_at) "
                "VALUES ('r1', 'w', 'pending', '{}', 'default', 0, 0)"
            )
        with psycopg.connect(url) as old_worker:
            old_worker.execute("UPDATE cairn_runs SET updated_at = 1 WHERE id = 'r1'")  # its run's row
            client = cairn.Client(url)
            opening = asyncio.create_task(client.store.open())  # the new worker starts: it migrates
            try:
                await eventually(lambda: holds(_waiting_for_lock_on(url, "cairn_runs")), what="the migration waiting")
                with contextlib.suppress(psycopg.errors.DeadlockDetected):  # either may be the one ended
                    await asyncio.to_thread(old_worker.execute, "LOCK TABLE cairn_steps IN ROW EXCLUSIVE MODE")
                await asyncio.to_thread(old_worker.rollback)
                await asyncio.wait_for(opening, 30)
            finally:
                await client.close()
        with psycopg.connect(url, autocommit=True) as conn:
            latest = conn.execute("SELECT max(version) FROM cairn_schema_version").fetchone()
        assert latest == (max(v for v, _, _ in migrations("postgres")),)
    finally:
        _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_connection_cut_while_migrating_is_made_again_and_the_migration_applied(
    pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failover or a killed session in the middle of the migration at a worker's start: the
    worker exited with psycopg's AdminShutdown (a client's first call raised it). The connection
    is made again and the migration, of which nothing was applied, run again."""
    import uuid

    import psycopg

    import cairn
    from cairn.store.sql import migrations
    from tests.conftest import _admin, _with_db

    name = f"cairn_cut_{uuid.uuid4().hex[:10]}"
    _admin(pg_server, f'CREATE DATABASE "{name}"')
    url = _with_db(pg_server, name)
    real = PostgresDatabase._apply_migrations
    cut = []

    def cut_twice(self: PostgresDatabase, conn: psycopg.Connection[object]) -> None:
        if len(cut) < 2:  # its own session ended by the server, mid-migration, as a failover does
            cut.append(conn.info.backend_pid)
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        real(self, conn)

    monkeypatch.setattr(PostgresDatabase, "_apply_migrations", cut_twice)
    try:
        client = cairn.Client(url)
        try:
            await asyncio.wait_for(client.store.open(), 30)
            assert await client.list_runs() == []
        finally:
            await client.close()
        assert len(cut) == 2 and cut[0] != cut[1]
        with psycopg.connect(url, autocommit=True) as conn:
            latest = conn.execute("SELECT max(version) FROM cairn_schema_version").fetchone()
        assert latest == (max(v for v, _, _ in migrations("postgres")),)
    finally:
        _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
