"""Helpers shared by the tests: waiting on a run's status or a worker's registration, changing a row
behind Cairn's back, terminating PostgreSQL's LISTEN connections, running the CLI from async code,
and rows made for driving the store directly."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import psycopg
from click.testing import CliRunner, Result

import cairn
from cairn.cli.main import cli
from cairn.records import NewRun, NewStep
from cairn.store.sqlite import SqliteDatabase
from cairn.types import RunStatus, StepKind


async def status_is(handle: cairn.RunHandle, status: RunStatus) -> bool:
    """For `eventually`: whether the run has reached `status` (False while it does not exist yet:
    a child exists once its parent's activation has committed)."""
    try:
        return await handle.status() == status
    except cairn.RunNotFound:
        return False


async def registered(client: cairn.Client, suffix: str) -> bool:
    """For `eventually`: whether a worker has registered a workflow whose name ends with `suffix`."""
    return any(w.name.endswith(suffix) for w in await client.list_workflows())


async def holds(value: bool) -> bool:
    """For `eventually`, of a condition checked in memory."""
    return value


LISTENERS = (
    "FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
)
"""The sessions of the URL's database that LISTEN (its Cairn processes' listeners)."""


def terminate_listeners(url: str) -> int:
    """Terminate every LISTEN connection of the URL's database, as the server would; how many."""
    with psycopg.connect(url, autocommit=True) as conn:
        return len(conn.execute(f"SELECT pg_terminate_backend(pid) {LISTENERS}").fetchall())  # type: ignore[arg-type]


def raw_sql(db_url: str, sql: str, *params: object) -> None:
    """Change rows behind Cairn's back, as an operator or a faulty tool might (`?` placeholders)."""
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql, params)
        return
    with psycopg.connect(db_url, autocommit=True) as pg:
        pg.execute(sql.replace("?", "%s").encode(), params)


def sql_row(db_url: str, sql: str, *params: object) -> tuple[object, ...] | None:
    """One row read behind Cairn's back (`?` placeholders): what is stored, not what the API shows."""
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            row: tuple[object, ...] | None = conn.execute(sql, params).fetchone()
            return row
    with psycopg.connect(db_url, autocommit=True) as pg:
        return pg.execute(sql.replace("?", "%s").encode(), params).fetchone()


def sqlite_db(client: cairn.Client) -> SqliteDatabase:
    """The SQLite database under a client's store (for tests that look at its threads and watcher)."""
    db = client.store.db  # type: ignore[attr-defined]
    assert isinstance(db, SqliteDatabase)
    return db


async def cli_in_thread(args: list[str]) -> Result:
    """The CLI as a user runs it (its own event loop: off the test's loop, on a thread)."""
    return await asyncio.to_thread(CliRunner().invoke, cli, args)


def new_run(run_id: str, workflow: str = "tests.flows.Sequence3", input: str = '{"x":1}') -> NewRun:
    """A run to insert through the store directly."""
    return NewRun(run_id, workflow, input, "default")


def action_step(seq: int, name: str = "tests.flows.add_one", args: str = '{"x":1}') -> NewStep:
    """An action step, as an activation schedules it."""
    return NewStep(seq, StepKind.ACTION, name, args)


class FixedClock:
    """A test's database clock that moves only when told (the store reads it for `cairn_now()`)."""

    real = False

    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


def waiting_on_a_lock(url: str) -> bool:
    """Whether some transaction on the database at `url` waits for a lock now (a forced interleaving's cue)."""
    with psycopg.connect(url, autocommit=True) as conn:
        query = "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        return conn.execute(query.encode()).fetchone() is not None


async def waits_for_a_lock(url: str) -> bool:
    """`waiting_on_a_lock`, from async code."""
    return await asyncio.to_thread(waiting_on_a_lock, url)


ROOT = Path(__file__).resolve().parents[1]


def script_env() -> dict[str, str]:
    """The environment of a script a test runs in its own process: it imports `tests` too."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def ctrl_c_once_ready(proc: subprocess.Popen[str], ready: str, timeout: float) -> str:
    """Once `proc` prints the line `ready`, Ctrl-C it and wait up to `timeout` seconds for it to end;
    its stderr. It is killed if it has not ended (the test then fails on the timeout)."""
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == ready
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return err
