"""PostgreSQL reached through a connection pooler that shares server sessions between clients
(PgBouncer's transaction and statement modes, the default port of Supabase, Neon, Heroku): Cairn
refuses it at once, saying why and what to do, instead of retrying for ever as if the network
were down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import cairn
from cairn.errors import DatabaseUnusable, PoolerModeUnsupported, StoreError
from cairn.store.postgres import PostgresDatabase, pooler_mode

PGBOUNCER = "/usr/sbin/pgbouncer"
URL = "postgresql://app:secret@db.example:6543/postgres"

# What PgBouncer 1.18 answered Cairn in transaction and statement modes (the hunter's logs).
POOLED = [
    psycopg.errors.ProtocolViolation("transaction blocks not allowed in statement pooling mode"),
    psycopg.errors.InvalidSqlStatementName('prepared statement "_pg3_0" does not exist'),
    psycopg.errors.DuplicatePreparedStatement('prepared statement "_pg3_12" already exists'),
    psycopg.errors.ProtocolViolation('bind message supplies 0 parameters, but prepared statement "_pg3_0" requires 6'),
]
NOT_POOLED = [
    psycopg.errors.ProtocolViolation("server closed the connection unexpectedly"),  # a connection lost
    psycopg.errors.InvalidSqlStatementName('prepared statement "mine" does not exist'),  # not psycopg's
    psycopg.errors.AdminShutdown("terminating connection due to administrator command"),
    psycopg.OperationalError("transaction blocks not allowed in statement pooling mode"),  # no SQLSTATE
    ConnectionError('prepared statement "_pg3_0" does not exist'),
]


@pytest.mark.parametrize("exc", POOLED, ids=lambda e: e.sqlstate)
def test_a_pooler_sharing_sessions_is_told_apart_by_what_the_server_says(exc: psycopg.Error) -> None:
    assert exc.sqlstate in ("08P01", "26000", "42P05")
    error = pooler_mode(exc, "postgresql://app:***@db.example:6543/postgres")
    assert isinstance(error, PoolerModeUnsupported)
    assert isinstance(error, StoreError) and isinstance(error, DatabaseUnusable)
    said = str(error)
    assert said.startswith("PostgreSQL at postgresql://app:***@db.example:6543/postgres is reached through")
    assert "connection pooler in transaction (or statement) mode" in said
    assert "Connect to the database directly or to the pooler's session-mode port" in said
    assert str(exc) in said  # the server's own words, for a search


@pytest.mark.parametrize("exc", NOT_POOLED, ids=lambda e: type(e).__name__)
def test_other_failures_are_left_as_they_are(exc: Exception) -> None:
    assert pooler_mode(exc, "postgresql://x") is None


def test_it_is_neither_retried_as_a_lost_connection_nor_settled_as_a_refused_transaction() -> None:
    db = PostgresDatabase(URL)
    error = pooler_mode(POOLED[1], db.shown_url)
    assert error is not None and "secret" not in str(error)
    # Not refused (a run's commit refused fails the run), not ambiguous (read back and sent again).
    assert not db.refused(error)
    assert not db.ambiguous(error)


# --- behind a real PgBouncer ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def pgbouncer(server: str, mode: str) -> Iterator[str]:
    """A PgBouncer in `mode` in front of `server`: the URL of its database through it. Server
    connections are handed out in turn (`server_round_robin`), so that a client's consecutive
    transactions meet different sessions, as under any load."""
    if not os.path.exists(PGBOUNCER):
        pytest.skip(f"{PGBOUNCER} is not installed (apt-get install pgbouncer)")
    parts = urlsplit(server)
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="cairn-pgbouncer-")
    user = parts.username or "postgres"
    Path(workdir, "users.txt").write_text(f'"{user}" ""\n')
    Path(workdir, "pgbouncer.ini").write_text(
        f"[databases]\n* = host={parts.hostname} port={parts.port or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {workdir}/users.txt\n"
        f"pool_mode = {mode}\ndefault_pool_size = 20\nmin_pool_size = 4\nserver_round_robin = 1\n"
        f"logfile = {workdir}/pgbouncer.log\n"
        "ignore_startup_parameters = extra_float_digits\n"
    )
    run_as: list[str] = []
    if os.geteuid() == 0:  # PgBouncer refuses to run as root, as initdb does
        shutil.chown(workdir, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    process = subprocess.Popen(
        [*run_as, PGBOUNCER, f"{workdir}/pgbouncer.ini"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = urlunsplit((parts.scheme, f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{port}", parts.path, "", ""))
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"pgbouncer did not start: {Path(workdir, 'pgbouncer.log').read_text()}")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@cairn.workflow
async def pooled_flow(n: int) -> int:
    return n


@pytest.mark.timeout(30)
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_statement_mode_is_refused_at_open_at_once(db_url: str) -> None:
    with pgbouncer(db_url, "statement") as url:
        client = cairn.Client(url)
        began = time.monotonic()
        try:
            with pytest.raises(PoolerModeUnsupported, match="pooler in transaction \\(or statement\\) mode"):
                await client.store.open()
        finally:
            await client.close()
        assert time.monotonic() - began < 10  # not retried for `retry_for` (60 s) as a lost connection


@pytest.mark.timeout(60)
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_worker_in_transaction_mode_stops_saying_why(db_url: str) -> None:
    direct = cairn.Client(db_url)
    try:
        for n in range(20):
            await direct.start(pooled_flow, n)
    finally:
        await direct.close()
    with pgbouncer(db_url, "transaction") as url:
        client = cairn.Client(url)
        try:
            await client.store.open()  # a migration is one transaction: it works through the pooler
            worker = cairn.Worker(client, poll_interval=0.05, lease=5.0)
            await worker.start()
            # psycopg prepares a statement at its 6th run on a connection: a few claims later the
            # worker stops, rather than warning "claiming work failed" for ever.
            with pytest.raises(PoolerModeUnsupported, match="session-mode port"):
                await asyncio.wait_for(worker.serve_until_stopped(), 40)
        finally:
            await client.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_client_call_in_transaction_mode_raises_it(db_url: str) -> None:
    with pgbouncer(db_url, "transaction") as url:
        client = cairn.Client(url)
        try:
            with pytest.raises(PoolerModeUnsupported, match="session-mode port"):
                for n in range(50):
                    handle = await client.start(pooled_flow, n)
                    await handle.status()
        finally:
            await client.close()
