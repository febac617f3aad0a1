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
