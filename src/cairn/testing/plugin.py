"""The pytest plugin (registered by the `pytest11` entry point): a `cairn_env` fixture and the
`--cairn-db` option that runs the same tests on PostgreSQL.

`pytest --cairn-db postgresql://user@host/db` gives each test a fresh database on that server
(created from that URL's connection, dropped afterwards); a `sqlite:///` URL is used as given.
Without the option each test gets a temporary SQLite file. The fixture is async: it needs
pytest-asyncio (strict mode with `@pytest.mark.asyncio`, or `asyncio_mode = "auto"`), as any async
test does. The environment's worker runs on the fixture's event loop, so a test must run on that
same loop: one given another loop scope than its fixtures fails at its first start with a
`RuntimeError` that says so (set `asyncio_default_fixture_loop_scope` to the tests' loop scope).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from cairn.testing.environment import Environment

try:  # strict-mode pytest-asyncio needs its own marker on async fixtures
    import pytest_asyncio

    _async_fixture: Any = pytest_asyncio.fixture
except ImportError:  # pragma: no cover - without pytest-asyncio async fixtures need another runner
    _async_fixture = pytest.fixture


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cairn-db",
        default=None,
        metavar="URL",
        help="database for the cairn_env fixture: postgresql://... (a fresh database per test on that "
        "server) or sqlite:///path.db; default: a temporary SQLite file per test",
    )


async def _cairn_env(request: pytest.FixtureRequest) -> AsyncIterator[Environment]:
    """A Cairn test environment (`cairn.testing.environment()`) on the `--cairn-db` backend."""
    from cairn.testing.databases import fresh_postgres_database
    from cairn.testing.environment import environment

    url: str | None = request.config.getoption("--cairn-db")
    with contextlib.ExitStack() as stack:
        if url is not None and url.split(":", 1)[0].startswith("postgres"):
            url = stack.enter_context(fresh_postgres_database(url))
        async with environment(url) as env:
            yield env


cairn_env = _async_fixture(_cairn_env, name="cairn_env")
