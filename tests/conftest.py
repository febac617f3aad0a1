"""Fixtures shared by every test: both backends, real databases, never a mock of our storage.

`db_url` is parametrized over SQLite (a temporary file) and PostgreSQL (a fresh database per test,
cloned from a template migrated once per session). PostgreSQL comes from CAIRN_TEST_POSTGRES_URL
(default postgresql://postgres@127.0.0.1:5432/test); where none answers but the server binaries are
installed, a throwaway cluster is started; otherwise the run fails with instructions, never skips.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import cairn
import cairn.store.postgres  # first imported here: see below

# Imported here, at the top of the stack: pytest rewrites the asserts of every module of a plugin's
# distribution (cairn's pytest11 plugin), so each cairn module is parsed by `ast` on import, and
# CPython 3.11.7 fails that parse of postgres.py with "AST constructor recursion depth mismatch"
# when the first import comes deep inside a fixture (a single test run alone hit it).

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"

# A background job of a non-interactive shell (`bash .ci/run &`) starts with SIGINT ignored, and
# every process it starts inherits that: `cairn dev` stopped with Ctrl-C's signal by a test then
# never stops (its reloader and worker ignore it), and the test waits out its timeout. The suite's
# processes take SIGINT as they would from a terminal, however the suite was started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _server_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.OperationalError:
        return False


def _pg_bin() -> Path | None:
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / "initdb").exists():
            return base
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def start_cluster(
    restart_mode: str = "fast", settings: dict[str, str] | None = None
) -> tuple[str, Callable[[], None], Callable[[], None]]:
    """A private PostgreSQL cluster: (url, restart, stop). Needs the server binaries. `restart_mode`
    is pg_ctl's shutdown mode for `restart` ("immediate": a crash, with recovery at start-up);
    `settings` are server settings (e.g. libraries to preload) the cluster starts with."""
    url, stop = _start_throwaway_cluster(restart_mode, settings)
    return url, _CLUSTERS[url], stop


_CLUSTERS: dict[str, Callable[[], None]] = {}


def _start_throwaway_cluster(
    restart_mode: str = "fast", settings: dict[str, str] | None = None
) -> tuple[str, Callable[[], None]]:
    bindir = _pg_bin()
    if bindir is None:
        pytest.exit(
            "PostgreSQL is needed for the test suite and none answers at "
            f"{os.environ.get('CAIRN_TEST_POSTGRES_URL', DEFAULT_PG)}, and no server binaries "
            "(initdb) are installed. Start one (e.g. `pg_ctlcluster 15 main start`), point "
            "CAIRN_TEST_POSTGRES_URL at one, or `apt-get install postgresql`.",
            returncode=3,
        )
    datadir = tempfile.mkdtemp(prefix="cairn-pg-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root; use the postgres system user
        shutil.chown(datadir, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", datadir, "-U", "postgres", "--auth=trust"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {datadir} -c listen_addresses=127.0.0.1"
    options += "".join(f" -c {name}={value}" for name, value in (settings or {}).items())
    log = f"{datadir}/server.log"  # the server must not inherit our pipes, or waiting on them never ends

    def pg_ctl(*args: str) -> None:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", datadir, "-l", log, *args],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    pg_ctl("-w", "-o", options, "start")

    def restart() -> None:
        pg_ctl("-w", "-m", restart_mode, "-o", options, "restart")

    _CLUSTERS[f"postgresql://postgres@127.0.0.1:{port}/postgres"] = restart

    def stop() -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(datadir, ignore_errors=True)

    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A URL of a PostgreSQL database we may create other databases from."""
    url = os.environ.get("CAIRN_TEST_POSTGRES_URL", DEFAULT_PG)
    if _server_answers(url):
        yield url
        return
    url, stop = _start_throwaway_cluster()
    try:
        yield url
    finally:
        stop()


def _admin(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql.encode())


def _with_db(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> Iterator[str]:
    """A database migrated once; each test clones it with CREATE DATABASE ... TEMPLATE."""
    name = f"cairn_tpl_{os.getpid()}"
    _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}"', f'CREATE DATABASE "{name}"')

    async def migrate() -> None:
        client = cairn.Client(_with_db(pg_server, name))
        await client.store.open()
        await client.close()

    asyncio.run(migrate())
    yield name
    _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class _Clones:
    """Fresh databases cloned from the template on a thread of their own: the next test's is made,
    and the last one's dropped, while other tests run (most often the same test on SQLite). Made and
    dropped in each test's own setup and teardown, they took 0.14 s of each of the suite's 739
    PostgreSQL tests on a quiet machine, 0.3 s on a busy one. The 36 of test_contract.py, which run
    one after another with nothing to overlap, spent 5.0 s in setup and teardown, 2.8 s so."""

    def __init__(self, server: str, template: str) -> None:
        self._server, self._template = server, template
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cairn-test-databases")
        self._next: concurrent.futures.Future[str] | None = self._thread.submit(self._create)
        self._dropped: list[concurrent.futures.Future[None]] = []

    def _create(self) -> str:
        name = f"cairn_t_{uuid.uuid4().hex[:12]}"
        for _ in range(100):
            try:
                _admin(self._server, f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
                return name
            except psycopg.errors.ObjectInUse:  # a test reads the template itself (test_schema)
                time.sleep(0.05)
        raise RuntimeError(f"the template database {self._template} stayed in use for 5 s")

    def take(self) -> str:
        made, self._next = self._next, None
        return made.result() if made is not None else self._create()

    def give_back(self, name: str) -> None:
        self._drop(name)
        self._next = self._thread.submit(self._create)

    def _drop(self, name: str) -> None:
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        self._dropped.append(self._thread.submit(_admin, self._server, drop))

    def close(self) -> None:
        made, self._next = self._next, None
        if made is not None:  # the clone made for a test that never came
            self._drop(made.result())
        self._thread.shutdown(wait=True)
        for dropped in self._dropped:
            dropped.result()  # a database left behind says so


@pytest.fixture(scope="session")
def pg_clones(pg_server: str, pg_template: str) -> Iterator[_Clones]:
    clones = _Clones(pg_server, pg_template)
    try:
        yield clones
    finally:
        clones.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty, migrated database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/cairn.db"
        return
    server: str = request.getfixturevalue("pg_server")
    clones: _Clones = request.getfixturevalue("pg_clones")
    name = clones.take()
    try:
        yield _with_db(server, name)
    finally:
        clones.give_back(name)


@pytest.fixture
async def client(db_url: str) -> AsyncIterator[cairn.Client]:
    c = cairn.Client(db_url)
    await c.store.open()
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def worker(client: cairn.Client) -> AsyncIterator[cairn.Worker]:
    async with cairn.Worker(client, poll_interval=0.1, lease=5.0) as w:
        yield w


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `check` until it returns a truthy value or the deadline passes (never a bare sleep)."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.2)


@pytest.fixture(autouse=True)
def _fresh_side_effects() -> Iterator[None]:
    from tests import flows

    flows.CALLS.clear()
    yield
    for gate in flows.GATES.values():  # no action of a finished test stays parked on a thread
        gate.set()
    flows.GATES.clear()
