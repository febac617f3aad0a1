"""A PostgreSQL out of connection slots for us is waited for at start-up, as the docs promise
(leases.md): a database's or a role's CONNECTION LIMIT full, as old workers hold it during a rolling
deploy. It was taken for a wrong URL, and the worker exited at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import cairn

pytestmark = pytest.mark.timeout(60)

ROLE = "cairn_test_limited"
DATABASE = "cairn_test_connection_slots"
SLOTS = 6


@pytest.fixture
def limited(pg_server: str) -> Iterator[str]:
    """A database of its own that an ordinary role (the limit binds no superuser) may open SLOTS
    connections to."""
    with psycopg.connect(pg_server, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone() is None:
            admin.execute(f"CREATE ROLE {ROLE} LOGIN")
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE} CONNECTION LIMIT {SLOTS}")
    parts = urlsplit(pg_server)
    host = parts.hostname or "127.0.0.1"
    yield urlunsplit((parts.scheme, f"{ROLE}@{host}:{parts.port or 5432}", f"/{DATABASE}", "", ""))
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {ROLE}")


async def test_a_client_waits_for_a_slot_when_every_one_is_taken(limited: str) -> None:
    setup = cairn.Client(limited)  # the schema, made while there is room
    await setup.store.open()
    await setup.close()
    held = [psycopg.connect(limited) for _ in range(SLOTS)]
    client = cairn.Client(limited)
    try:
        opening = asyncio.ensure_future(client.store.open())
        with pytest.raises(TimeoutError):  # still waiting, not failed on "too many connections"
            await asyncio.wait_for(asyncio.shield(opening), 1.5)
        for conn in held:
            conn.close()
        await asyncio.wait_for(opening, 30)
        assert await client.list_runs() == []
    finally:
        for conn in held:
            conn.close()
        await client.close()
