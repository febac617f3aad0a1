"""PostgreSQL backend: psycopg 3 with a connection pool, SKIP LOCKED claims, LISTEN/NOTIFY wake-ups.

Transactions run on a thread pool over synchronous pooled connections: the store logic is written
once for both backends, psycopg prepares repeated statements itself, and a thread hop costs far
less than the commit it carries. Notifications are hints; workers keep a safety poll as well.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Self, TypeVar

import psycopg
import pydantic_core
from psycopg.types.array import ListBinaryDumper
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from cairn.clock import Clock
from cairn.errors import DatabaseUnavailable, PoolerModeUnsupported
from cairn.store.base import WORK, Database, Params, Tx
from cairn.store.daemon_pool import DaemonThreadPool
from cairn.store.open import redact_url, secrets_of
from cairn.store.protocol import Listener
from cairn.store.sql import (
    NOTIFIES,
    ONE_RUN,
    ROW_WRITES,
    RUN_CHANNEL,
    UPSERTS,
    apply_function,
    apply_parameters,
    channel,
    migrations,
    queries,
)

T = TypeVar("T")
C = TypeVar("C")
log = logging.getLogger("cairn.store.postgres")
_MIGRATION_LOCK = 7_311_482_019


ANY_ORIGIN = "*"
"""The origin of a notification the server itself sends; every process, the committer's included, handles it."""


def _sent(origin: str, note: str) -> str:
    """A notification as sent: "<origin> <note>", the key of the listeners it is for after the first
    space. A start's qualified wake-up ("work <about>": see `start_note`, whose about has no space)
    goes as "<origin><about> work": a process of an earlier version (a rolling deploy's workers)
    takes the word before the first space for the origin, and still hears the plain "work" it knows."""
    key, _, about = note.partition(" ")
    return f"{origin}{about} {key}" if key == WORK and about.startswith("[") else f"{origin} {note}"


def _heard(payload: str) -> tuple[str, str]:
    """(origin, note) of a notification as `_sent` sent it (an origin is hex, or ANY_ORIGIN)."""
    first, _, key = payload.partition(" ")
    origin, bracket, about = first.partition("[")
    return origin, f"{key} [{about}" if bracket else key


LISTEN_WAIT = 2.0
"""How long the first subscriber of a channel waits for LISTEN to be in place (see `subscribe_key`)."""
UNLISTEN_AFTER = 1.0
"""Seconds a channel stays LISTENed on with no subscriber here, for the next one (see `_let_go`).
Short: in a loop of starts after a `client.run` (the naive loop of `cairn bench` warms up so), the
runs' channel stayed listened on, and each run's end came back to the listener (its own echo, about
7% of the process's CPU: 1.41-1.52 ms a workflow never letting go, 1.29-1.38 letting go at once)."""
_UNAVAILABLE = ("08", "53", "57", "58", "XX")
"""SQLSTATE classes of a connection lost, resources exhausted, the server shutting down or failing:
what they interrupted may have been applied, and running it again apart would not help."""
_TRANSIENT_AT_OPEN = re.compile(
    r"the database system is (starting up|in recovery mode|shutting down)|too many clients"
    r"|too many connections for (database|role)|remaining connection slots are reserved"
)
"""Why a server may refuse a connection for a moment only (a restart under way, all slots taken:
the server's, a database's or a role's CONNECTION LIMIT; an ordinary role is told of the server's
slots kept for superusers before it would hear "too many clients")."""
EXPECTATION_FAILED = "CA001"
"""The SQLSTATE `cairn_expect()` raises (migration 0004)."""
MIGRATION_LOCK_WAIT = 2.0
"""Seconds a migration's statement waits for a table's lock before the migration starts again (see
`_migrate`): meanwhile every statement on that table waits behind it."""
_CONFLICTS = frozenset({"40P01", "40001"})
"""deadlock_detected, serialization_failure: a transaction refused as a lock conflict's loser."""
READ_CONNECTIONS = 4
"""Connections of a process for one-statement reads on its event loop (see `PostgresDatabase.read`)."""
PLANNED_EACH_TIME = frozenset(
    {"next_wake_runs", "next_wake_actions", "fire_due_timers_of_runs", "steps_of_runs", "runs_by_ids", "busy_due"}
)
"""Statements never prepared, so planned anew at each run. Each walks an index in order and stops at
its first row, or looks rows up by a list of keys, which only pays when the planner knows the table
is big. A prepared statement's plan
is kept until the statistics are next gathered, so one cached while the table was small (a worker
started before a burst of 20,000 starts) read and sorted every due run at every claim: 11 ms, up
from 0.1 ms. Planning each time costs well under that. The journal reads of a claim (its runs'
timers and steps, by `run_id = ANY(...)`), prepared while the steps table was small, kept reading
all of it by a sequential scan once 100,000 runs had finished since: 30 and 98 ms a claim, against
0.3 ms each planned anew. The runs that result waits read by id (`runs_by_ids`), and those of a
claim's busy runs it reads (`busy_due`), were read by a sequential scan likewise: 10 ms a read of a
few runs among 12,000, against 0.5 ms (the other reads of a claim keep index plans however they were
made)."""


_POOLED = re.compile(
    r"statement pooling mode"
    r'|prepared statement "_pg3_\w+" (does not exist|already exists)'
    r'|bind message supplies \d+ parameters?, but prepared statement "_pg3_\w+" requires'
)
"""What PostgreSQL says, through a pooler in transaction or statement mode (PgBouncer 1.18:
measured, each of these), to the statements psycopg prepares itself (`_pg3_N`, after 5 runs of a
statement): the session they were prepared in is another client's by then. In statement mode,
PgBouncer refuses every transaction block. SQLSTATE 08P01 (a protocol violation, otherwise a
connection lost), 26000 and 42P05."""
_POOLED_STATES = frozenset({"08P01", "26000", "42P05"})


def pooler_mode(exc: BaseException, shown_url: str) -> PoolerModeUnsupported | None:
    """The error to raise when `exc` says the server is reached through a pooler that shares its
    sessions between clients, else None. Retrying does not help (08P01 is otherwise a lost
    connection, retried while the server is away): each retry meets another client's session."""
    if not isinstance(exc, psycopg.Error) or exc.sqlstate not in _POOLED_STATES:
        return None
    said = _said(exc)
    if _POOLED.search(said) is None:
        return None
    return PoolerModeUnsupported(
        f"PostgreSQL at {shown_url} is reached through a connection pooler in transaction (or statement) "
        "mode (PgBouncer, Supavisor, ...): Cairn needs a session of its own for prepared statements and "
        "LISTEN/NOTIFY. Connect to the database directly or to the pooler's session-mode port. "
        f"(The server said: {said})"
    )


def _said(exc: BaseException, secrets: Sequence[str] = ()) -> str:
    """What the driver said, in one line and fit to show: libpq's messages can quote the URL, or
    the password alone (`secrets`, see `secrets_of`)."""
    text = str(exc)
    for secret in secrets:
        text = text.replace(secret, "***")
    return redact_url(" ".join(text.split()))


def _json_text(value: Any) -> str:
    """JSON text of the rows a statement takes as one parameter. pydantic-core's encoder (Rust)
    writes a group commit's rows in about a fifth of the time `json.dumps` takes (measured: 58
    against 296 microseconds for 50 step rows), which was a tenth of a busy worker's time."""
    try:
        return pydantic_core.to_json(value).decode()
    except pydantic_core.PydanticSerializationError:  # a lone surrogate, which UTF-8 cannot carry
        return pydantic_core.to_json(_encodable(value)).decode()


def _encodable(value: Any) -> Any:
    """Rows with each string that holds a lone surrogate (an error message naming a file whose name
    is not UTF-8: `os.fsdecode` makes such strings) written with it as an escape, `\\udcff`. A
    payload has its own escapes already; these are the words of events, which PostgreSQL's text
    cannot hold, and which failed the whole commit of the run."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode()
        return value
    if isinstance(value, dict):
        return {_encodable(k): _encodable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable(v) for v in value]
    return value


def _detail_text(detail: Any) -> str | None:
    return None if detail is None else _json_text(detail)


def _configure(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
    """Send lists (the claims' run id lists, notification payloads) as binary arrays: psycopg's
    text format escapes each element in Python, at about 5x the client CPU (measured: 156 against
    30 microseconds for a list of 200 run ids)."""
    conn.adapters.register_dumper(list, ListBinaryDumper)


async def _configure_async(conn: psycopg.AsyncConnection[Any]) -> None:
    _configure(conn)


IDLE_IN_TRANSACTION = 5.0
"""Seconds a connection thread's transaction may sit idle between its statements before the
server ends it. Such a transaction holds row locks across round trips (a claim, a control
operation): a worker stopped in one (SIGSTOP, a VM paused, a debugger) held them for as long as it
stayed stopped, and every other worker waited on them, new ones could not even start, and the
stopped worker's runs were never taken over when their leases ran out. Between two statements of
Cairn's own transactions there is only Python code, milliseconds; ended, a transaction is rolled
back and the worker's next one connects again."""


def _configure_threaded(conn: psycopg.Connection[Any]) -> None:
    _configure(conn)
    conn.execute(f"SET idle_in_transaction_session_timeout = {int(IDLE_IN_TRANSACTION * 1000)}")


def _quiet(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle pooled connection has heard nothing since its last use. A server that
    restarted or ended the session has closed the socket (after a FATAL message), which makes it
    readable; a live idle session sends nothing. One poll(2) with no wait: a full check, a round
    trip, on every commit would double the cost of the one-statement commit."""
    if conn.closed or conn.broken:
        return False
    if not hasattr(select, "poll"):  # Windows
        return not select.select([conn.fileno()], [], [], 0)[0]
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return not poller.poll(0)


def _alive(conn: psycopg.Connection[Any]) -> bool:
    """Whether a connection taken from the pool may carry a transaction: one that heard from the
    server while idle (after a restart, its session is gone) is checked for real, so that a
    commit is never sent on a connection from before a restart (whose failure would be ambiguous)."""
    if _quiet(conn):
        return True
    try:
        ConnectionPool.check_connection(conn)
    except psycopg.Error:
        return False
    return True


async def _alive_async(conn: psycopg.AsyncConnection[Any]) -> bool:
    if _quiet(conn):
        return True
    try:
        await AsyncConnectionPool.check_connection(conn)
    except psycopg.Error:
        return False
    return True


RECONNECT_PATIENCE = 3.0
"""How long one reconnection of a pooled connection keeps trying, every 20-100 ms, before psycopg_pool
schedules the next (1 s later, then 2, 4...). A restart keeps the server away for well under this:
tried at psycopg_pool's pace, a restart of 0.2 s held every commit for the second its retry waited."""


def _pauses() -> Iterator[float]:
    """The pauses between one reconnection's tries: 20 ms doubling to 100 ms, for `RECONNECT_PATIENCE`."""
    deadline = time.monotonic() + RECONNECT_PATIENCE
    delay = 0.02
    while time.monotonic() + delay <= deadline:
        yield delay
        delay = min(delay * 2, 0.1)


def _patiently(connect: Callable[[], C], pause: Callable[[float], bool | None] = time.sleep) -> C:
    """`connect()`, tried again for up to `RECONNECT_PATIENCE`; `pause` returning True stops early."""
    for delay in _pauses():
        try:
            return connect()
        except psycopg.OperationalError:  # refused, or the server starting up or shutting down
            if pause(delay):
                raise
    return connect()


async def _patiently_async(connect: Callable[[], Awaitable[C]]) -> C:
    for delay in _pauses():
        try:
            return await connect()
        except psycopg.OperationalError:
            await asyncio.sleep(delay)
    return await connect()


class _PatientConnection(psycopg.Connection[Any]):
    """The pool's connections: connecting rides out a restart (see `RECONNECT_PATIENCE`). Runs on
    a pool worker thread, where waiting holds up nobody (a transaction waits for the pool)."""

    @classmethod
    def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        return _patiently(lambda: super(_PatientConnection, cls).connect(conninfo, **kwargs))


class _PatientAsyncConnection(psycopg.AsyncConnection[Any]):
    _writes: psycopg.AsyncCursor[Any] | None = None

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> Self:
        return await _patiently_async(lambda: super(_PatientAsyncConnection, cls).connect(conninfo, **kwargs))

    def write_cursor(self) -> psycopg.AsyncCursor[Any]:
        """One cursor for the connection's commits, kept: a cursor caches the dumper of each
        parameter type, which a cursor made for each statement (`execute`) looked up again, at
        8-13 microseconds of client CPU a statement. Commits return nothing to keep alive with it
        (reads, whose results may be large, take a cursor each)."""
        cur = self._writes
        if cur is None or cur.closed:
            cur = self._writes = self.cursor()
        return cur


class _Held:
    """The rows of one of `ROW_WRITES` held back in a transaction, with what each expects."""

    def __init__(self) -> None:
        self.rows: list[Params] = []
        self.errors: list[Exception] = []
        self.notify: str | None = None


_RANK = {name: rank for rank, name in enumerate(ROW_WRITES)}
_NOTHING_HELD: dict[str, Any] = dict.fromkeys(name for name, _ in apply_parameters())
"""The parameters of `cairn_apply` when a transaction holds nothing of a kind."""


class _PgTx(Tx):
    """A transaction on an autocommit connection, begun only when it needs to be.

    Rows given to `write_row` are held until another statement (or the end) is sent, then sent in
    one `cairn_apply` statement (migration 0008), which checks and wakes on the server. A
    transaction made only of such rows, its events and its notifications (an activation commit,
    most often) is that one statement, which PostgreSQL runs as a transaction of its own: one
    round trip, no BEGIN nor COMMIT, three system calls. Any other statement first begins the
    transaction, in pipeline mode: writes are queued and sent together, a count or a fetch syncs,
    and COMMIT goes out with what is still queued when the pipeline is left.
    """

    def __init__(self, conn: psycopg.Connection[Any] | None) -> None:
        """With no connection, the transaction can only hold rows: a statement raises _MustBegin."""
        super().__init__()
        self._conn = conn
        self._cur = conn.cursor() if conn is not None else None
        self._pipeline: psycopg.Pipeline | None = None
        self._leave: contextlib.AbstractContextManager[psycopg.Pipeline] | None = None
        self._q = queries("postgres")
        self._expected: dict[str, Exception] = {}
        self._held: dict[str, _Held] = {}
        self._rank = -1
        """The place in `ROW_WRITES` of this piece's last row: one earlier sends what is held first."""
        self.committing = False
        """Whether the statement that commits was handed to the connection (see `commit`)."""
        self.test_clock: Clock | None = None
        """A test's clock (`cairn.clock`), which `cairn_now()` reads in this transaction."""

    @property
    def cur(self) -> psycopg.Cursor[Any]:
        if self._cur is None:
            raise _MustBegin()
        return self._cur

    def _begin(self) -> psycopg.Pipeline:
        if self._pipeline is None:
            if self._conn is None:
                raise _MustBegin()
            self._leave = self._conn.pipeline()
            self._pipeline = self._leave.__enter__()
            self.cur.execute(b"BEGIN")
        return self._pipeline

    def now(self) -> float:
        if self.test_clock is None:
            return super().now()
        # The real clock moves on while a transaction runs; a test's moves when the test moves it.
        # Read it again, as `clock_timestamp()` would be, and so do the statements after this one.
        now = self.test_clock.now()
        self._begin()
        self.cur.execute("SELECT set_config('cairn.fake_now', %s, false)", (repr(now),))
        return now

    def end(self) -> None:
        """Leave the pipeline, if begun: what is queued is sent, and its outcome waited for."""
        leave, self._leave, self._pipeline = self._leave, None, None
        if leave is not None:
            leave.__exit__(None, None, None)

    def abandon(self) -> None:
        """After an error: drain the aborted pipeline, so that leaving it is quiet."""
        pipeline, leave, self._leave, self._pipeline = self._pipeline, self._leave, None, None
        if pipeline is not None and leave is not None:
            with contextlib.suppress(psycopg.Error):
                pipeline.sync()
            with contextlib.suppress(psycopg.Error):
                leave.__exit__(None, None, None)

    def write_row(self, name: str, row: Params, expect: Exception | None = None, notify: str | None = None) -> None:
        rank = _RANK[name]
        if rank < self._rank:
            self._send_held()
        self._rank = rank
        held = self._held.get(name) or self._held.setdefault(name, _Held())
        held.rows.append(row)
        if expect is not None:
            assert name not in UPSERTS, f"{name} rows write one row each: they take no check"
            held.errors.append(expect)
        if notify is not None:
            assert name == NOTIFIES, f"{name} rows cannot notify"
            held.notify = notify

    def begin_piece(self) -> None:
        self._rank = -1

    def lock_runs(self, ids: Sequence[str], parents: Sequence[str], children: Sequence[str]) -> None:
        self.write("lock_runs", {"ids": list(ids), "parents": list(parents), "children": list(children)})
        super().lock_runs(ids, parents, children)

    def _apply(
        self, events: Sequence[dict[str, Any]] = (), notes: Sequence[str] = (), origin: str = ""
    ) -> Params | None:
        """The parameters of one `cairn_apply` statement for what is held (and `events` and the
        notifications of `notes` from `origin`, at the end), or None when there is nothing to send."""
        self._rank = -1
        if not (self._held or events or notes):
            return None
        held, self._held = self._held, {}
        params: dict[str, Any] = dict(_NOTHING_HELD)
        for name, h in held.items():
            params[name] = _json_text(h.rows)
            if h.errors:
                assert len(h.errors) == len(h.rows), f"every {name} row expects, or none does"
                params[f"{name}_expect"] = self._expectation(h.errors)
            if h.notify is not None:  # sent by the server: it carries no origin (see `_listen`)
                params["finish_notify"] = f"{ANY_ORIGIN} {h.notify}"
        if events:
            text = _json_text(events)
            if "\\u0000" in text:
                # PostgreSQL reads every string of the array as text, a detail's too, and text cannot
                # hold a NUL (an action's error message may): such details go as JSON text, each
                # one a string of the array that holds the escape, not the NUL (see functions.sql).
                text = _json_text([{**e, "detail": _detail_text(e["detail"])} for e in events])
            params["events"] = text
        params.update(self._notifications(notes, origin))
        return params

    @staticmethod
    def _notifications(notes: Sequence[str], origin: str) -> Params:
        if not notes:
            return {"notifications": None, "notify_channels": None}
        return {
            "notifications": [_sent(origin, note) for note in notes],
            "notify_channels": [channel(note) for note in notes],
        }

    def _send_held(self) -> None:
        params = self._apply()
        if params is not None:
            self._begin()
            self.cur.execute(self._q["apply"], params)

    def _expectation(self, errors: Sequence[Exception]) -> str:
        """The key a failed check raises with, standing for `errors` (any of which may be the one)."""
        key = f"cairn expectation {len(self._expected)}"
        if len(errors) == 1:
            self._expected[key] = errors[0]
        else:
            self._expected[key] = type(errors[0])("; or ".join(dict.fromkeys(str(e) for e in errors)))
        return key

    def _statement(self, name: str, params: Params) -> psycopg.Pipeline:
        """Send a statement of the transaction (after what is held): the pipeline it went into."""
        self._send_held()
        pipeline = self._begin()
        self._send(self.cur, name, params)
        return pipeline

    def _send(self, cur: psycopg.Cursor[Any], name: str, params: Params) -> None:
        cur.execute(self._q[name], params, prepare=False if name in PLANNED_EACH_TIME else None)

    def execute(self, name: str, params: Params) -> int:
        self._statement(name, params).sync()
        return self.cur.rowcount

    def write(self, name: str, params: Params) -> None:
        self._statement(name, params)

    def all(self, name: str, params: Params) -> list[tuple[Any, ...]]:
        self._statement(name, params).sync()
        return self.cur.fetchall() if self.cur.description else []

    def many(self, name: str, params: Sequence[Params]) -> None:
        if params:
            self._send_held()
            self._begin()
            self.cur.executemany(self._q[name], params)

    def all_of(self, statements: Sequence[tuple[str, Params]]) -> list[list[tuple[Any, ...]]]:
        self._send_held()
        pipeline = self._begin()
        assert self._conn is not None
        cursors = []
        for name, params in statements:
            cur = self._conn.cursor()
            self._send(cur, name, params)
            cursors.append(cur)
        pipeline.sync()
        return [cur.fetchall() if cur.description else [] for cur in cursors]

    def final(self, origin: str, alone: bool) -> tuple[str, Params] | None:
        """The last statement and its parameters: what is still held, the events and the
        notifications (None when there is nothing to send). `alone`, when nothing else was sent: a
        transaction that is one new run (a start) goes as that row's own statement (`ONE_RUN`)."""
        events, self.events = self.events, []
        notes = sorted(self.notes)
        new = self._held.get("insert_run")
        if alone and new is not None and len(new.rows) == 1 and len(self._held) == 1 and not events and len(notes) < 2:
            self._held, self._rank = {}, -1
            expect = self._expectation(new.errors) if new.errors else None
            note = notes[0] if notes else None
            return ONE_RUN, {
                **new.rows[0],
                "insert_run_expect": expect,
                "notify_channel": channel(note) if note is not None else None,
                "notification": _sent(origin, note) if note is not None else None,
            }
        params = self._apply(events, notes, origin)
        return None if params is None else ("apply", params)

    def commit(self, origin: str) -> None:
        """Send the final statement: on its own when nothing else was sent (PostgreSQL commits it),
        else queued with COMMIT, which `end()` sends (`Connection.commit()` would sync, and
        leaving the pipeline would then sync again, an empty round trip of its own).
        `committing` is set as the statement that commits is handed to the connection: a failure
        before it cannot have applied anything, one after it may have."""
        final = self.final(origin, alone=self._pipeline is None)
        if self._pipeline is None:
            if final is not None:
                self.committing = True
                self.cur.execute(self._q[final[0]], final[1])
            return
        if final is not None:
            self.cur.execute(self._q[final[0]], final[1])
        self.committing = True
        self.cur.execute(b"COMMIT")

    def expected(self, exc: psycopg.Error) -> Exception | None:
        """The error a failed server-side check stands for (it may surface at any later statement)."""
        if exc.sqlstate == EXPECTATION_FAILED:
            return self._expected.get(exc.diag.message_primary or "")
        return None


class PostgresDatabase(Database):
    dialect = "postgres"
    commits_in_flight = 1
    """One batch of commits in flight, the next one gathering behind it: in a process busy on its
    one core, a commit's cost is mostly its own CPU (a statement built, sent and read), so commits
    sent together save more than commits sent at once gain. Measured on the 2-core machine: the
    naive loop of `cairn bench`, 346-494 workflows/s against 238-339 with 4 in flight; gathered
    throughput with 1, 2 and 4 worker processes 621 / 700 / 673 against 558 / 665 / 783."""

    def __init__(self, url: str, pool_size: int = 8, retry_for: float = 60.0) -> None:
        super().__init__()
        self.retry_for = retry_for
        """How long a transaction keeps retrying while the database is unreachable (a restart)."""
        self.url = url
        self.shown_url = redact_url(url)
        self._secrets = secrets_of(url)
        """The URL for logs and errors: without its password."""
        self._pool_size = pool_size
        self._pool: ConnectionPool[Any] | None = None
        self._apool: AsyncConnectionPool[_PatientAsyncConnection] | None = None
        """Serves transactions made only of held rows, from the loop that opened the store."""
        self._rpool: AsyncConnectionPool[_PatientAsyncConnection] | None = None
        """Serves one-statement reads (`read`) from that loop: apart from the commits' connections,
        so that a burst of reads (a dashboard, gathered `status()` calls) never holds up a commit."""
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._q = queries("postgres")
        self._executor: DaemonThreadPool | None = None
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()
        self._listening = threading.Event()
        """The listening connection is up (LISTEN on each channel follows interest: see `_listen`)."""
        self._channels: set[str] = set()
        """Channels someone here is subscribed to: the listener LISTENs on these, and only these."""
        self._keys_on: collections.Counter[str] = collections.Counter()
        """How many keys are subscribed to on each channel."""
        self._idle_since: dict[str, float] = {}
        """Channels in `_channels` with no key left, since when: let go after `unlisten_after`."""
        self.unlisten_after = UNLISTEN_AFTER
        self._listened: set[str] = set()
        """Channels LISTENed on by the listener's connection now."""
        self._late: set[str] = set()
        """Channels whose first subscriber stopped waiting for LISTEN: what it missed is dispatched."""
        self._heard = threading.Condition(self._lock)
        """Signalled as the listener LISTENs on a channel, or loses its connection."""
        self._nudges: tuple[socket.socket, socket.socket] | None = None
        """While open: written to wake the listener from its wait (a new channel to LISTEN on, or
        closing), and read by it."""
        self._faked = False
        """Whether a test clock was ever in use here (then every transaction sets cairn.fake_now)."""
        self._origin = uuid.uuid4().hex[:12]
        """Tags our notifications: we dispatch them in-process at commit, so their echo is skipped."""

    def _why_not(self, failed: BaseException) -> str:
        """Why a pool could not connect, in the server's words: the pool says only "pool
        initialization incomplete after 60 sec" (its connections' errors go to its log)."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=10):
                pass
        except psycopg.Error as exc:
            return f"{_said(exc, self._secrets)} ({_said(failed, self._secrets)})"
        return _said(failed, self._secrets)

    def _first_connection(self, abandoned: threading.Event) -> psycopg.Connection[Any]:
        """One connection made directly, before any pool: a database that refuses us for good (a
        wrong name, password or address, a server not listening) fails the open at once in one
        line, where a pool would retry in the background for its whole timeout, logging each try.
        Only a server still starting up or out of connection slots is waited for (`retry_for`)."""
        delay = 0.1
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                return psycopg.connect(self.url, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                cause = _said(exc, self._secrets)
                if _TRANSIENT_AT_OPEN.search(cause) is None or time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(
                        f"cannot connect to PostgreSQL at {self.shown_url} ({cause}). Check the URL (host, port, "
                        "database name, user and password) and that the server is up and accepts connections "
                        "from here."
                    ) from None
                log.warning("PostgreSQL at %s is not ready (%s); retrying in %.1fs", self.shown_url, cause, delay)
                if abandoned.wait(delay):  # the open was cancelled (Ctrl-C): this thread tried on for a minute
                    gave_up = f"gave up connecting to PostgreSQL at {self.shown_url}: cancelled"
                    raise DatabaseUnavailable(gave_up) from None
                delay = min(delay * 2, 2.0)

    async def _open(self) -> None:
        self._executor = DaemonThreadPool(self._pool_size, thread_name_prefix="cairn-pg")
        loop = asyncio.get_running_loop()
        abandoned = threading.Event()
        try:
            await loop.run_in_executor(self._executor, self._connect_and_migrate, abandoned)
        except BaseException:
            abandoned.set()
            await self.close()
            raise
        self._pool = ConnectionPool(
            self.url,
            min_size=1,
            max_size=self._pool_size,
            open=False,
            name="cairn",
            timeout=5.0,
            connection_class=_PatientConnection,
            kwargs={"autocommit": True},  # a transaction begins only when it must: see _PgTx
            configure=_configure_threaded,
        )
        # The first connection is through: a pool that cannot connect now is short of slots (other
        # processes hold them: old workers in a rolling deploy), waited for as the first one was.
        waited = max(10.0, self.retry_for)
        try:
            await loop.run_in_executor(
                self._executor, lambda: self._pool.open(wait=True, timeout=waited) if self._pool else None
            )
            # As many as group commits in flight: 4 of workers' commits, 2 of starts.
            self._apool = self._async_pool("cairn-async", min_size=1, max_size=6)
            await self._apool.open(wait=True, timeout=waited)
        except Exception as exc:
            cause = await loop.run_in_executor(self._executor, self._why_not, exc)
            await self.close()
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {self.shown_url}: {cause}") from None
        # Connected at the first read: a worker that only commits never opens one.
        self._rpool = self._async_pool("cairn-read", min_size=0, max_size=READ_CONNECTIONS)
        await self._rpool.open(wait=False)
        self._aloop = loop
        self._stop.clear()
        self._nudges = socket.socketpair()
        for end in self._nudges:
            end.setblocking(False)
        self._listener = threading.Thread(
            target=self._listen, args=(self._nudges[0],), name="cairn-pg-listen", daemon=True
        )
        self._listener.start()
        # Wait (briefly) until the listening connection is up: a first subscriber then waits only
        # for its channel's LISTEN (see `subscribe_key`).
        await loop.run_in_executor(self._executor, self._listening.wait, 5.0)

    def refused(self, exc: Exception) -> bool:
        if isinstance(exc, PoolTimeout | psycopg.InterfaceError | PoolerModeUnsupported):
            return False  # PoolerModeUnsupported: not the transaction's fault, so not its run's either
        if isinstance(exc, psycopg.Error):
            if exc.sqlstate is None:  # refused by psycopg before sending (a NUL in text), or no answer
                return not isinstance(exc, psycopg.OperationalError)
            return exc.sqlstate[:2] not in _UNAVAILABLE
        return super().refused(exc)

    def conflicted(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.Error) and exc.sqlstate in _CONFLICTS

    def lock_unavailable(self, exc: Exception) -> bool:
        return isinstance(exc, psycopg.Error) and exc.sqlstate == "55P03"

    @property
    def notifies_across_processes(self) -> bool:
        return self._listening.is_set()

    def _connect_and_migrate(self, abandoned: threading.Event) -> None:
        """The first connection, and the schema brought up to date on it. A connection cut in the
        middle (a failover, a session killed, a proxy restarted) is made again and the migration
        tried again, for up to `retry_for` seconds: the migration is one transaction, nothing of it
        was applied. A worker or client opening then failed with the driver's error."""
        delay = 0.1
        deadline = time.monotonic() + self.retry_for
        while True:
            first = self._first_connection(abandoned)
            try:
                with first:
                    self._migrate(first)
                return
            except psycopg.Error as exc:
                pooled = pooler_mode(exc, self.shown_url)
                if pooled is not None:
                    raise pooled from None
                cut = exc.sqlstate is None or exc.sqlstate[:2] in _UNAVAILABLE
                if not isinstance(exc, psycopg.OperationalError) or not cut:
                    raise
                cause = _said(exc, self._secrets)
                if time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(
                        f"PostgreSQL at {self.shown_url}: the connection was lost again and again while the "
                        f"schema was checked or migrated, for {self.retry_for:.0f}s ({cause}); nothing of the "
                        "migration was applied"
                    ) from None
                log.warning("the connection was lost while migrating the schema (%s); retrying in %.1fs", cause, delay)
                if abandoned.wait(delay):
                    raise DatabaseUnavailable(f"gave up opening PostgreSQL at {self.shown_url}: cancelled") from None
                delay = min(delay * 2, 2.0)

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        if not self.migrates:  # reads only: no table, no function created
            found = conn.execute("SELECT to_regclass('cairn_schema_version') IS NOT NULL").fetchone()
            row = (
                conn.execute("SELECT COALESCE(MAX(version), 0) FROM cairn_schema_version").fetchone()
                if found and found[0]
                else None
            )
            current, latest = int(row[0]) if row else 0, max(version for version, _, _ in migrations("postgres"))
            if current < latest:
                raise self.behind(self.shown_url, current, latest)
            return
        delay = 0.1
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                return self._apply_migrations(conn)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
                # Old workers still at work (a rolling deploy) lock the tables a migration alters, in
                # an order of their own: the migration lost a deadlock to one of them, or waited for
                # their locks too long (while it waits, every statement on those tables queues behind
                # it). Nothing of it was applied; try again after their transactions are through.
                if time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(
                        f"PostgreSQL at {self.shown_url}: the schema could not be migrated for "
                        f"{self.retry_for:.0f}s, its tables were kept locked by other connections "
                        f"({_said(exc, self._secrets)}); nothing of the migration was applied"
                    ) from None
                log.warning(
                    "migrating the schema met other workers' locks (%s); retrying in %.1fs", exc.sqlstate, delay
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _apply_migrations(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            # After the advisory lock: another process's migration, however long, is waited for.
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{MIGRATION_LOCK_WAIT * 1000:.0f}ms",))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS cairn_schema_version "
                "(version integer PRIMARY KEY, name text NOT NULL, applied_at double precision NOT NULL)"
            )
            row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM cairn_schema_version").fetchone()
            current = int(row[0]) if row else 0
            for version, name, script in migrations("postgres"):
                if version <= current:
                    continue
                conn.execute(script.encode())
                conn.execute(
                    "INSERT INTO cairn_schema_version (version, name, applied_at) VALUES (%s, %s, %s)",
                    (version, name, time.time()),
                )
            # Functions are not migrated: this version's own, generated from the queries it runs,
            # is (re)created at every open (see cairn.store.sql.apply_function).
            conn.execute(apply_function()[0].encode())

    def subscribe_key(self, key: str, callback: Listener) -> Callable[[], None]:
        """As `Database.subscribe_key`; the first subscriber of a channel waits (once, about a round
        trip) until the listener LISTENs on it, so that no notification sent after this returns is
        missed. Should that take longer than LISTEN_WAIT, what it missed is dispatched once LISTEN
        is in place, as news without a row.

        The first subscriber of a run's news also gets news without a row at once: its run may have
        ended before LISTEN was in place (a waiter skips its first read of a run it just started,
        counting on hearing its end). A claim loop claims as it starts, and needs none."""
        unsubscribe = super().subscribe_key(key, callback)
        name = channel(key)
        with self._lock:
            if name in self._listened:  # and, being in `_channels` (`_key_added`), stays so
                return unsubscribe
        self._nudge()
        with self._heard:
            in_place = threading.current_thread() is not self._listener and self._heard.wait_for(
                lambda: name in self._listened or not self._listening.is_set(), timeout=LISTEN_WAIT
            )
            if not in_place or name not in self._listened:
                self._late.add(name)
                return unsubscribe
        if name == RUN_CHANNEL:
            self._dispatch([key])
        return unsubscribe

    def _key_added(self, key: str) -> None:
        name = channel(key)
        self._keys_on[name] += 1
        self._channels.add(name)
        self._idle_since.pop(name, None)

    def _key_removed(self, key: str) -> None:
        """A channel whose last key is gone is UNLISTENed once it has stayed so `unlisten_after`
        seconds (see `_let_go`)."""
        name = channel(key)
        self._keys_on[name] -= 1
        if self._keys_on[name] <= 0:
            del self._keys_on[name]
            self._idle_since[name] = time.monotonic()

    def _let_go(self) -> set[str]:
        """Channels to UNLISTEN now (called holding `_lock`), taken out of `_listened` before their
        UNLISTEN is sent, so that a subscriber coming meanwhile waits for the LISTEN that follows.
        A process that once waited for a result, or ran a worker, would otherwise hear every run's
        end or every start in the cluster for good, each a wake of the listener's thread, which
        takes the GIL (a start cost 0.75-0.79 ms instead of 0.52-0.60 after a worker here had
        stopped). Not at once: a loop of `client.run` lets its channel go between runs, and each
        LISTEN again would cost a run a round trip and a read of its row."""
        now = time.monotonic()
        for name, since in list(self._idle_since.items()):
            if now - since >= self.unlisten_after:
                del self._idle_since[name]
                self._channels.discard(name)
        unwanted = self._listened - self._channels
        self._listened -= unwanted
        return unwanted

    def _nudge(self) -> None:
        nudges = self._nudges
        if nudges is not None:
            with contextlib.suppress(OSError):  # full (a nudge is pending already) or closed
                nudges[1].send(b"x")

    def _listen(self, nudged: socket.socket) -> None:
        """LISTEN on a dedicated connection, on the channels this process has subscribers for (or
        had, up to `unlisten_after` seconds ago): a process that only starts runs hears nothing, a
        worker no run's end, a result waiter no worker's wake-ups. Every notification heard wakes
        this thread, which then takes the GIL from the event loop: hearing the echo of its own
        start cost a start 0.27 of its 0.79 ms.
        Reconnects with backoff when the connection drops; what was sent meanwhile was missed, and
        is dispatched as news without a row (claim loops claim, result waiters read their runs)."""
        delay = 0.1
        with self._lock:
            missed = set(self._channels)  # a store opened again: its subscribers heard nothing while closed
        while not self._stop.is_set():
            try:
                with _patiently(lambda: psycopg.connect(self.url, autocommit=True), self._stop.wait) as conn:
                    self._listening.set()
                    delay = 0.1
                    while not self._stop.is_set():
                        with self._lock:
                            unwanted = self._let_go()
                            wanted = self._channels - self._listened
                        for name in sorted(unwanted):
                            conn.execute(f"UNLISTEN {name}")  # a constant: see `cairn.store.sql.channel`
                        for name in sorted(wanted):
                            conn.execute(f"LISTEN {name}")  # a constant: see `cairn.store.sql.channel`
                            with self._heard:
                                self._listened.add(name)
                                late = name in missed or name in self._late
                                self._late.discard(name)
                                keys = [key for key in self._keyed if late and channel(key) == name]
                                self._heard.notify_all()
                            self._dispatch(keys)
                        missed.clear()
                        # Each notification as it arrives (a wake-up waits for nothing); the
                        # timeout only bounds how long a lost nudge could go unseen.
                        ready, _, _ = select.select([conn.fileno(), nudged.fileno()], [], [], 1.0)
                        if nudged.fileno() in ready:
                            with contextlib.suppress(OSError):
                                nudged.recv(4096)
                        for note in conn.notifies(timeout=0):
                            origin, payload = _heard(note.payload)
                            if origin != self._origin:
                                self._dispatch([payload])
            except (psycopg.Error, OSError, ValueError) as exc:  # OSError, ValueError: closed meanwhile
                missed |= self._unlisten()
                if self._stop.is_set():
                    return
                log.warning(
                    "LISTEN connection to %s lost (%s); reconnecting in %.1fs",
                    self.shown_url,
                    _said(exc, self._secrets),
                    delay,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        self._unlisten()

    def _unlisten(self) -> set[str]:
        """The listening connection is gone: the channels it LISTENed on."""
        with self._heard:
            self._listening.clear()
            gone, self._listened = self._listened, set()
            self._heard.notify_all()
        return gone

    def _async_pool(self, name: str, min_size: int, max_size: int) -> AsyncConnectionPool[_PatientAsyncConnection]:
        return AsyncConnectionPool(
            self.url,
            min_size=min_size,
            max_size=max_size,
            open=False,
            name=name,
            timeout=5.0,
            connection_class=_PatientAsyncConnection,
            kwargs={"autocommit": True},
            configure=_configure_async,
        )

    async def close(self) -> None:
        if self.inherited():
            # The parent's sessions (their sockets shared with it), loop and threads: left to the
            # parent. Closed here, its loop is not here to run the close (it waited for ever), and
            # a session ended from here would be ended under the parent.
            return
        self._stop.set()
        self._nudge()
        if self._listener is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._listener.join, 2.0)
            self._listener = None
        if self._nudges is not None:
            nudges, self._nudges = self._nudges, None
            for end in nudges:
                end.close()
        aloop, self._aloop = self._aloop, None
        for name in ("_apool", "_rpool"):
            apool = getattr(self, name)
            if apool is not None:
                setattr(self, name, None)
                await _close_on_its_loop(apool, aloop)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.get_running_loop().run_in_executor(self._executor, pool.close)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None
        self._closed()

    async def transaction(self, fn: Callable[[Tx], T], write: bool = True, rerunnable: bool = False) -> T:
        try:
            return await self._transaction(fn, write, rerunnable)
        except psycopg.Error as exc:
            if self.conflicted(exc):
                self.lock_conflicts += 1
                log.debug("a transaction lost a lock conflict (%s)", exc)
            raise

    async def _transaction(self, fn: Callable[[Tx], T], write: bool, rerunnable: bool) -> T:
        await self.open()
        loop = asyncio.get_running_loop()
        if rerunnable and loop is self._aloop and self.clock.real:
            done = await self._in_loop(fn)
            if done is not None:
                return done[0]
        delay = 0.05
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                result, notes = await loop.run_in_executor(self._executor, self._run, fn, write)
                break
            except _BeforeCommit as failed:
                # Rolled back before COMMIT was sent: running it again cannot apply it twice.
                cause = _said(failed.error, self._secrets)
                if time.monotonic() + delay > deadline:
                    raise DatabaseUnavailable(
                        f"PostgreSQL at {self.shown_url} was unavailable for {self.retry_for:.0f}s ({cause}); "
                        "nothing of this transaction was applied"
                    ) from failed.error
                log.warning("database unavailable at %s (%s); retrying in %.2fs", self.shown_url, cause, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if notes:
            self._dispatch(notes)
        return result

    async def read(self, name: str, params: Params) -> list[tuple[Any, ...]]:
        """One autocommit statement on a read connection of the loop: about a third of the CPU and
        half the time of a read on a connection thread (BEGIN, the statement, COMMIT: two round
        trips, and a hop to the thread and back). Off that loop, with a test's clock, or when no
        connection is to be had (the thread's retries wait for the server), on a thread."""
        await self.open()
        rpool = self._rpool
        if rpool is not None and asyncio.get_running_loop() is self._aloop and self.clock.real:
            try:
                async with self._apooled(rpool) as conn:
                    cur = await conn.execute(
                        self._q[name], params, prepare=False if name in PLANNED_EACH_TIME else None
                    )
                    return await cur.fetchall() if cur.description else []
            except (psycopg.Error, PoolTimeout) as exc:  # a read is safe to send again
                pooled = pooler_mode(exc, self.shown_url)
                if pooled is not None:
                    raise pooled from None
                if not isinstance(exc, psycopg.OperationalError | PoolTimeout):
                    raise
                log.debug(
                    "a read on the event loop failed (%s); reading on a connection thread", _said(exc, self._secrets)
                )
        return await super().read(name, params)

    async def _in_loop(self, fn: Callable[[Tx], T]) -> tuple[T] | None:
        """Run `fn` here on the event loop: when it only holds rows (an activation commit), its
        one statement goes out on an async connection, with no hop to a connection thread and
        back. None when it must run on a thread after all: it sent another statement (nothing was
        sent then), or no connection was to be had (the thread's retries wait for one)."""
        tx = _PgTx(None)
        try:
            result = fn(tx)
        except _MustBegin:
            return None
        final = tx.final(self._origin, alone=True)
        if final is not None:
            name, params = final
            sent = False
            try:
                async with self._apooled(self._apool) as conn:
                    sent = True
                    await conn.write_cursor().execute(self._q[name], params)
            except (psycopg.Error, PoolTimeout) as exc:
                pooled = pooler_mode(exc, self.shown_url)
                if pooled is not None:
                    raise pooled from None
                if not sent:
                    return None
                expected = tx.expected(exc) if isinstance(exc, psycopg.Error) else None
                if expected is None:
                    raise  # a connection lost after sending is ambiguous: never run again
                raise expected from None
        if tx.notes:
            self._dispatch(tx.notes)
        return (result,)

    @contextlib.contextmanager
    def _pooled(self) -> Iterator[psycopg.Connection[Any]]:
        """A live connection from the pool (see `_alive`). Not the pool's own `check`: after a
        connection fails it, psycopg_pool waits a second before handing out the next, and after a
        restart the pool holds a dead connection for each it had. Each dead one given back is
        replaced at once (see `_PatientConnection`)."""
        assert self._pool is not None
        while not _alive(conn := self._pool.getconn()):
            self._pool.putconn(conn)
        try:
            with conn:
                yield conn
        finally:
            self._pool.putconn(conn)

    @contextlib.asynccontextmanager
    async def _apooled(
        self, pool: AsyncConnectionPool[_PatientAsyncConnection] | None
    ) -> AsyncIterator[_PatientAsyncConnection]:
        assert pool is not None
        while not await _alive_async(conn := await pool.getconn()):
            await pool.putconn(conn)
        try:
            async with conn:
                yield conn
        finally:
            await pool.putconn(conn)

    def _run(self, fn: Callable[[Tx], T], write: bool = True) -> tuple[T, dict[str, Any]]:
        """`fn` in a transaction on a pooled connection. A connection lost before the statement
        that commits went out, or at any point of a read (`write` False: it applies nothing,
        COMMIT included), raises `_BeforeCommit`, which `transaction` runs again."""
        assert self._pool is not None
        try:
            conn_cm = self._pooled()
            conn = conn_cm.__enter__()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise _BeforeCommit(exc) from exc
        tx = _PgTx(conn)
        try:
            try:
                if not self.clock.real or self._faked:  # a test's clock (cairn.clock): cairn_now() reads it
                    self._faked = True  # once set on a pooled connection, the setting must be reset
                    fake = "" if self.clock.real else repr(self.clock.now())
                    conn.execute("SELECT set_config('cairn.fake_now', %s, false)", (fake,))
                    tx.test_clock = None if self.clock.real else self.clock
                result = fn(tx)
                tx.commit(self._origin)
                tx.end()
            except psycopg.Error as exc:
                expected = tx.expected(exc) or pooler_mode(exc, self.shown_url)
                if expected is not None:
                    raise expected from None
                if not (tx.committing and write) and not self.refused(exc):
                    # Lost before the statement that commits went out, or in a read: nothing was
                    # applied, and running it again cannot apply it twice. After a write's, the
                    # outcome is unknown (the commit may have happened): the error propagates,
                    # never retried. A read is retried even at its COMMIT: the read that settles a
                    # cut-off commit (`SqlStore._settled`) runs while the server is going down.
                    raise _BeforeCommit(exc) from exc
                raise
        except BaseException:
            tx.abandon()
            if not conn.broken:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()
            raise
        finally:
            conn_cm.__exit__(None, None, None)
        return result, tx.notes


async def _close_on_its_loop(pool: AsyncConnectionPool[Any], loop: asyncio.AbstractEventLoop | None) -> None:
    """Close an async pool from whichever loop closes the client. A pool is bound to the loop that
    opened it: a client opened in one `asyncio.run` and closed in another failed ("Event loop is
    closed"), as did one a blocking client's loop thread had opened. There, the pool's loop closes
    it if it still runs; if it ended, its connections are closed as they are, without it."""
    here = asyncio.get_running_loop()
    if loop is None or loop is here:
        await pool.close()
    elif loop.is_running() and not loop.is_closed():
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(pool.close(), loop))
    else:
        for conn in list(getattr(pool, "_pool", ())):
            with contextlib.suppress(Exception):
                conn.pgconn.finish()


class _MustBegin(BaseException):  # not an error: store code's `except Exception` must let it by
    """A transaction tried on the event loop sent a statement: it must run on a connection thread."""


class _BeforeCommit(Exception):
    """A connection failure before COMMIT: the transaction did not happen."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error
