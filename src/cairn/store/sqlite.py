"""SQLite backend: stdlib sqlite3, WAL, one connection on one owned thread per process.

Writers take `BEGIN IMMEDIATE`, so several processes on one machine serialise their transactions
through SQLite's own lock (with a busy timeout) and a claim can never be taken twice. Lists are
bound as one JSON text parameter and expanded in SQL with json_each.

A write transaction runs on the event loop itself when the write lock is free (another process
holding it sends the transaction to the thread, which waits for it, and the writes that come
meanwhile wait for that one, then run on the loop again): its statements take microseconds, while
the hop to the thread and back, under a busy loop, cost most of a start and of each activation
commit (the naive loop of `cairn bench`: about 300 workflows/s with every write on the thread,
620-880 with this). Not with `synchronous=full` or `extra`, whose commits wait for the disk.

SQLite has no NOTIFY. While a claim loop or a result wait listens, a watcher thread reads `PRAGMA
data_version` on the writer's connection (it changes when another connection commits, and this
process commits only through that one; reading it costs microseconds) every few milliseconds and
wakes the loop when another process committed, so a run started from another process is picked up
without waiting for the safety poll.

A fork (gunicorn --preload, a multiprocessing pool) waits for the transaction in flight on every
open database, reads included (`_hold_for_fork`): SQLite keeps its file locks' state in the
process, and a child made in the middle of a transaction kept it, so that its own connections
saw the parent's write lock held for ever. The child then closes the connections it inherited
(nothing of the parent's is touched: the locks and files are the parent's) so that its own take
their locks as any other process's do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures.thread  # noqa: F401  (see `_before_fork`)
import contextlib
import functools
import itertools
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from cairn.errors import DatabaseLocked, DatabaseReplaced, StoreError
from cairn.store.base import ELSEWHERE, WORK, Database, Params, Tx, call_soon_here
from cairn.store.daemon_pool import DaemonThreadPool
from cairn.store.protocol import Listener
from cairn.store.sql import migrations, queries

T = TypeVar("T")
BUSY_TIMEOUT_ENV = "CAIRN_SQLITE_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT = 30.0
"""Seconds a transaction waits for the write lock another process holds before DatabaseLocked."""
WATCH_INTERVAL = 0.005
"""Seconds between two reads of `PRAGMA data_version` by the watcher (bounds cross-process pickup)."""
WATCH_LINGER = 1.0
"""Seconds the watcher goes on looking with nobody here listening, for the next subscriber."""
WATCH_QUIET_AFTER = 2.0
WATCH_QUIET = 0.05
"""After WATCH_QUIET_AFTER seconds without a commit of another process, the watcher reads every
WATCH_QUIET seconds; a new watcher starts there. On the 2-core virtual machine a look costs 100-200
microseconds of CPU (the thread woken, the pragma read): an idle worker looking every 25 ms spent
0.8-1.0% of a core, most of it looking; every 50 ms, 0.4-0.5%. (It looked every 25 ms for its
first 30 s of quiet, which is what an idle worker's CPU is measured over.) The first commit after
a quiet spell is seen up to 50 ms later, the next ones at once."""


class _SqliteTx(Tx):
    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__()
        self._conn = conn
        self._q = queries("sqlite")

    @staticmethod
    def _params(params: Params) -> Params:
        """Lists bound as JSON text (see the module docstring); most statements have none, and are
        bound as given: a copy of every statement's parameters was about 6% of the naive loop's
        profile (1.8 against 0.8 microseconds for a step's 12 parameters)."""
        for value in params.values():
            if isinstance(value, _LISTS):
                return {k: json.dumps(v) if isinstance(v, _LISTS) else v for k, v in params.items()}
        return params

    def execute(self, name: str, params: Params) -> int:
        cur = self._conn.execute(self._q[name], self._params(params))
        if cur.description is not None:  # a write with RETURNING: its rows are the rows it changed
            return len(cur.fetchall())
        return cur.rowcount

    def all(self, name: str, params: Params) -> list[tuple[Any, ...]]:
        return self._conn.execute(self._q[name], self._params(params)).fetchall()

    def many(self, name: str, params: Sequence[Params]) -> None:
        if params:
            self._conn.executemany(self._q[name], [self._params(p) for p in params])


_LISTS = (list, tuple)


def sqlite_path(url: str) -> str:
    """`sqlite:///./cairn.db` → `./cairn.db`; `sqlite:////abs/path.db` → `/abs/path.db`."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ValueError(f"not a sqlite URL: {url!r}")
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"sqlite URLs name a file, like sqlite:///./cairn.db; got {url!r}")
    if not path:
        raise ValueError(f"sqlite URL {url!r} names no file; use sqlite:///./cairn.db")
    if "#" in url:  # the rest is a URL's fragment: `run#1.db` opened `run`
        raise ValueError(f"sqlite URL {url!r}: a '#' in it ends the file's name there; name a file without '#'")
    return path


SQLITE_OPTIONS = ("synchronous", "busy_timeout")
"""What a SQLite URL's query may say (`?synchronous=full&busy_timeout=10`)."""


def _options(url: str) -> dict[str, list[str]]:
    """A SQLite URL's options; ValueError for anything else after its `?` (a `?` in a file's name
    made the rest of it a query, ignored: `what?.db` opened `what`)."""
    query = urlsplit(url).query
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - set(SQLITE_OPTIONS))
    if unknown or (query and not options):
        said = ", ".join(unknown) if unknown else repr(query)
        raise ValueError(
            f"sqlite URL {url!r}: unknown option {said} after '?' (it takes {', '.join(SQLITE_OPTIONS)}); "
            "a file's name cannot hold a '?'"
        )
    return options


class SqliteDatabase(Database):
    dialect = "sqlite"
    commits_in_flight = 4
    """A write on the event loop is done when it returns, so batches rarely overlap; measured with
    the naive loop of `cairn bench`: 591-597 workflows/s, against 509 with 1 in flight."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        path = sqlite_path(url)
        # Absolute from the start: a relative one (the default ./cairn.db) named another file, or
        # none, once the process changed directory (an action's os.chdir): a connection opened
        # later went there, and the file's identity check (`_same_file`) said it was deleted.
        self.path = path if path == ":memory:" else os.path.abspath(path)
        options = _options(url)
        self._synchronous = options.get("synchronous", ["NORMAL"])[0].upper()
        if self._synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be off, normal, full or extra, got {self._synchronous!r}")
        self.busy_timeout = _busy_timeout(options.get("busy_timeout", [None])[0])
        """Seconds a transaction waits for the write lock of another process (see DatabaseLocked)."""
        self._executor: DaemonThreadPool | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: DaemonThreadPool | None = None
        self._rconn: sqlite3.Connection | None = None
        """Reads go on a connection and thread of their own: in WAL mode they take no lock, so
        they answer while a write waits for a lock another process holds (a stopped writer)."""
        self._local = threading.local()
        self._on_thread = 0
        """Transactions handed to the writer's thread and not yet done there: while there are any,
        a write that could go on the loop waits for them to be done (`_thread_idle`), then runs
        on the loop."""
        self._handing = threading.Lock()
        """Guards `_on_thread` and `_idle` (a blocking client's loop in another thread writes too)."""
        self._idle: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        """Writes waiting for the writer's thread to have nothing in hand, with their loops."""
        self._writing = threading.Lock()
        """Held by the transaction using the writer's connection: one on the event loop, or one on
        the writer's thread (a blocking client's loop in another thread shares the connection), or
        by the watcher for one look; while it connects and closes; and across a fork."""
        self._reading = threading.Lock()
        """Held by a read on the reader's connection, while it connects and closes, and across a
        fork (a read is a transaction too, holding SQLite's locks and mutexes)."""
        self._handles: list[sqlite3.Connection] = []
        """The connections open, the writer's and the reader's: those a forked child closes."""
        self._held: tuple[asyncio.AbstractEventLoop, float] | None = None
        """The event loop that writes have held without a turn for anything else, and since when."""
        self._watcher: threading.Thread | None = None
        self.watch_linger = WATCH_LINGER
        self._unwatched_since: float | None = None
        self._stop_watching = threading.Event()
        self._file: tuple[int, int] | None = None
        """The database file's (device, inode) as opened: one deleted or replaced under us is
        noticed (`_same_file`) rather than written to, unseen by every other process, for ever."""
        self._file_checked = 0.0
        self._replaced = False
        self._closing = False
        self._interrupt = threading.Event()
        """Set by `close` (with `_closing`) and before a fork: a transaction waiting for another
        process's write lock gives up at once, so that the close (and the exit after Ctrl-C) does
        not wait behind it for the busy timeout, or lets the fork by and waits again after it."""
        _databases.add(self)

    async def _open(self) -> None:
        self._closing = False
        self._interrupt.clear()
        loop = asyncio.get_running_loop()
        executor = DaemonThreadPool(1, thread_name_prefix="cairn-sqlite")
        reader = DaemonThreadPool(1, thread_name_prefix="cairn-sqlite-read")
        try:
            self._conn = await loop.run_in_executor(executor, self._connect, True)
            if self.path != ":memory:":  # a second connection to :memory: would be another database
                self._rconn = await loop.run_in_executor(reader, self._connect, False)
        except BaseException:
            if self._conn is not None:
                await loop.run_in_executor(executor, self._close_handle, self._conn, True)
                self._conn = None
            executor.shutdown(wait=False)
            reader.shutdown(wait=False)
            raise
        self._executor, self._reader = executor, reader
        self._file = _identity(self.path)
        self._file_checked = time.monotonic()

    def _connect(self, write: bool) -> sqlite3.Connection:
        """A connection of this process: the writer's (which migrates) or the reader's."""
        with self._writing if write else self._reading:  # no fork in the middle (a migration writes)
            return self._connect_held(write)

    def _connect_held(self, write: bool) -> sqlite3.Connection:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout)
        except sqlite3.OperationalError as exc:
            raise self._unwritable(exc) from None
        self._handles.append(conn)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")  # value checked against an allow-list
            conn.execute("PRAGMA foreign_keys=ON")
            conn.create_function("cairn_now", 0, lambda: self.clock.now())
            # The clock as the current transaction began (set by `_run` on this connection's one
            # thread): constant while it lasts.
            conn.create_function("cairn_tx_now", 0, lambda: self._local.tx_now, deterministic=True)
            if write:
                self._migrate(conn)
                conn.execute("PRAGMA busy_timeout = 0")  # waits for the lock are `_begin_immediate`'s
        except sqlite3.OperationalError as exc:
            self._forget(conn)
            if not _is_locked(exc):
                raise self._unwritable(exc) from None
            raise self._locked(started) from None
        except BaseException:
            self._forget(conn)
            raise
        return conn

    def _forget(self, conn: sqlite3.Connection) -> None:
        with contextlib.suppress(ValueError):
            self._handles.remove(conn)
        conn.close()

    def _close_handle(self, conn: sqlite3.Connection, write: bool) -> None:
        """Close a connection, on its thread (the last one to close checkpoints: it writes)."""
        with self._writing if write else self._reading:
            self._forget(conn)

    def _hold_for_fork(self) -> None:
        """Before a fork: wait for the transactions in flight, and hold off the next ones until
        after it (`_after_fork`). A transaction waiting for another process's write lock lets
        the fork by (`_GiveWay`), and waits again after it."""
        self._interrupt.set()
        self._writing.acquire()
        self._reading.acquire()

    def _after_fork(self, child: bool) -> None:
        if not self._closing:
            self._interrupt.clear()
        if child:
            # The parent's connections, which no transaction uses (held off above): closed here
            # (SQLite closes them without writing: the parent has the file open) so that SQLite
            # forgets the file's lock state it keeps per process, which was the parent's: kept,
            # this process's own connections took none of the file's locks, and the parent,
            # closing last, deleted the write-ahead log they went on writing to.
            for conn in self._handles:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._handles = []
            self._conn = self._rconn = None
            self._watcher = None
        self._reading.release()
        self._writing.release()

    def _unwritable(self, exc: sqlite3.OperationalError) -> Exception:
        """SQLite's "attempt to write a readonly database" or "unable to open database file", which
        name neither the file nor what to do, as a StoreError that does; anything else as it is."""
        code = getattr(exc, "sqlite_errorcode", None)
        if code is None or code & 0xFF not in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
            return exc
        where = Path(self.path).resolve().parent
        return StoreError(
            f"cannot write the SQLite database at {self.path} ({exc}): the file and its directory ({where}) must "
            "be writable by this user, who also creates the -wal and -shm files beside it"
        )

    def _same_file(self) -> None:
        """StoreError once the file this process opened is deleted or replaced (`rm cairn.db` while
        a worker runs): its connections would go on with the deleted one, where nothing another
        process writes arrives, and everything this one writes is lost. Looked at once a second."""
        now = time.monotonic()
        if self._file is None or (now - self._file_checked < 1.0 and not self._replaced):
            return
        self._file_checked = now
        if self._replaced or _identity(self.path) != self._file:
            self._replaced = True  # for good: a file put back there later is not the one opened
            raise DatabaseReplaced(
                f"the SQLite database at {self.path} was deleted or replaced while this process had it open; "
                "restart the process to open the file there now"
            )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        latest = max(version for version, _, _ in migrations("sqlite"))
        try:
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM cairn_schema_version").fetchone()[0]
        except sqlite3.OperationalError:  # a new database (no such table): migrated below
            current = 0
        if current >= latest:
            return  # up to date, no write lock taken: opening works while another process writes
        if not self.migrates:
            raise self.behind(self.path, current, latest)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS cairn_schema_version "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            current = conn.execute("SELECT COALESCE(MAX(version), 0) FROM cairn_schema_version").fetchone()[0]
            for version, name, script in migrations("sqlite"):
                if version <= current:
                    continue
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO cairn_schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def subscribe_key(self, key: str, callback: Listener) -> Callable[[], None]:
        unsubscribe = super().subscribe_key(key, callback)
        if key == WORK and self.path != ":memory:":
            with self._lock:  # a watcher ending (see `_watch`) decides under it too
                if self._watcher is None:
                    self._stop_watching.clear()
                    self._watcher = threading.Thread(target=self._watch, name="cairn-sqlite-watch", daemon=True)
                    self._watcher.start()
        return unsubscribe

    def _watch(self) -> None:
        """Wake claim loops when another process committed (see the module docstring). The
        version is read on the writer's own connection, whose `data_version` changes only for
        commits of other connections: this process writes only through that one, so every change
        seen is another process's. (Read on a connection of its own, it changed for this
        process's commits too, and a look that saw both woke nothing: a worker finishing a run
        as another process started the next one missed the start until its safety poll.) The
        look takes the writer's lock without waiting; while a transaction holds it, the next
        interval looks again.

        The watcher ends once nobody here has listened for `watch_linger` seconds (a process that
        ran a worker, or waited for a result, looked 20 times a second for as long as it lived);
        the next subscriber starts another. A new watcher's first look wakes its listeners: what
        another process committed before it took its first version would go unheard."""
        # Start as after a quiet spell: nothing has been heard yet that says more is coming, and
        # 5 ms looks for the first 2 s were a third of a new idle worker's CPU in its first seconds.
        changed = time.monotonic() - WATCH_QUIET_AFTER
        interval = 0.0
        version: int | None = None
        try:
            while True:
                # A plain sleep, not Event.wait(timeout), which makes a lock per wait: 85 against
                # 135 microseconds of CPU a look here. A stop is seen within one interval (close
                # waits for this thread up to a second).
                time.sleep(interval)
                if self._stop_watching.is_set():
                    break
                if self._conn is None:
                    break
                if self._unwatched():
                    return
                looked = self._look(version)
                if looked is None:
                    interval = WATCH_INTERVAL  # this process is writing: look again shortly
                    continue
                if version is not None and looked != version:
                    changed = time.monotonic()
                version = looked
                # Quiet for a while: look less often (an idle worker's CPU), at once again on news.
                quiet = time.monotonic() - changed
                interval = WATCH_INTERVAL if quiet < WATCH_QUIET_AFTER else WATCH_QUIET
        except sqlite3.Error:
            pass  # closed meanwhile (closing, tests): the safety poll remains

    def _look(self, version: int | None) -> int | None:
        """One look of the watcher: the writer connection's `data_version`, with claim loops woken
        when it moved from `version` (another process committed); None while this process is
        writing (the look is not waited for)."""
        if not self._writing.acquire(blocking=False):
            return None
        try:
            if self._conn is None:
                return None
            now: int = self._conn.execute("PRAGMA data_version").fetchone()[0]
        finally:
            self._writing.release()
        if version is None:
            self._dispatch([WORK])  # the watcher's first look: what came before it is not known
        elif now != version:
            self._dispatch({WORK: ELSEWHERE})
        return now

    def _unwatched(self) -> bool:
        """Whether the watcher calling this is to end, nobody here having listened for
        `watch_linger` seconds; it is then no longer `_watcher` (see `subscribe_key`)."""
        with self._lock:
            if WORK in self._keyed:
                self._unwatched_since = None
                return False
            now = time.monotonic()
            if self._unwatched_since is None:
                self._unwatched_since = now
            if now - self._unwatched_since < self.watch_linger:
                return False
            self._unwatched_since = None
            if self._watcher is threading.current_thread():
                self._watcher = None
            return True

    def refused(self, exc: Exception) -> bool:
        # Every failed transaction was rolled back; a lock held by another process past the busy
        # timeout is the one failure that running the parts apart would only repeat.
        if isinstance(exc, DatabaseLocked) or (isinstance(exc, sqlite3.OperationalError) and _is_locked(exc)):
            return False
        return super().refused(exc)

    def ambiguous(self, exc: Exception) -> bool:
        return False  # a transaction that failed was rolled back, COMMIT included

    def _locked(self, started: float) -> DatabaseLocked:
        """The lock another connection held past our busy timeout, as the error users get."""
        holder = write_lock_holder(self.path)
        ours = holder == os.getpid()
        return DatabaseLocked(self.path, time.monotonic() - started, None if ours else holder, ours)

    async def close(self) -> None:
        if self.inherited():
            return  # the parent's connections and threads: left to the parent (see `_after_fork`)
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            self._stop_watching.set()
            await asyncio.get_running_loop().run_in_executor(None, watcher.join, 1.0)
        if self._executor is None:
            return
        self._closing = True
        self._interrupt.set()
        loop = asyncio.get_running_loop()
        executor, self._executor = self._executor, None
        reader, self._reader = self._reader, None
        conn, self._conn = self._conn, None
        rconn, self._rconn = self._rconn, None
        if conn is not None:
            await loop.run_in_executor(executor, self._close_handle, conn, True)
        if reader is not None and rconn is not None:
            await loop.run_in_executor(reader, self._close_handle, rconn, False)
        executor.shutdown(wait=True)
        if reader is not None:
            reader.shutdown(wait=True)
        self._closed()

    async def transaction(self, fn: Callable[[Tx], T], write: bool = True, rerunnable: bool = False) -> T:
        await self.open()
        loop = asyncio.get_running_loop()
        loop_may_write = write and self._synchronous in ("OFF", "NORMAL")
        if loop_may_write:
            await self._thread_idle(loop)
        if self._executor is None:
            raise ConnectionError(f"SQLite database {self.path} is closed")
        reads_apart = not write and self._reader is not None and self._rconn is not None
        executor = self._reader if reads_apart and self._reader is not None else self._executor
        done: tuple[T, dict[str, Any]] | None = None
        if loop_may_write:
            with contextlib.suppress(_LockTaken):  # another process writes: the thread waits for it
                done = self._run(fn, write, wait=False)
        on_loop = done is not None
        if done is None:
            on_writer = not reads_apart  # a write, or a read of `:memory:` (it has no reader)
            with self._handing:
                self._on_thread += on_writer
            try:
                handed = executor.submit(self._run, fn, write)
            except BaseException:
                self._handed_back(on_writer)  # never reached the thread
                raise
            # Given back when the thread is done with it, or when it was cancelled before the
            # thread took it (the awaiting coroutine cancelled): never when the coroutine resumes.
            handed.add_done_callback(lambda _: self._handed_back(on_writer))
            result, notes = await asyncio.wrap_future(handed, loop=loop)
        else:
            result, notes = done
        if notes:
            self._dispatch(notes)
        if on_loop:
            await self._share(loop)
        return result

    async def _thread_idle(self, loop: asyncio.AbstractEventLoop) -> None:
        """Until the writer's thread has no transaction in hand. A write that would run on the loop
        waits for the thread's instead of queueing behind them: queued, it would keep the thread
        busy for the next one, and under a steady load the loop never got the writes back (one
        write sent to the thread by another process's lock took the naive loop of `cairn bench`
        from 780 to 340 workflows/s for the rest of the run, 8,652 transactions on the thread
        against 2,320 on the loop)."""
        while True:
            with self._handing:
                if not self._on_thread:
                    return
                idle = loop.create_future()
                self._idle.append((loop, idle))
            await idle

    def _handed_back(self, on_writer: bool) -> None:
        """One transaction off the writer's thread: when it had the last, the waiting writes go."""
        if not on_writer:
            return
        with self._handing:
            self._on_thread -= 1
            if self._on_thread:
                return
            idle, self._idle = self._idle, []
        for loop, waiter in idle:
            with contextlib.suppress(RuntimeError):  # that loop was closed meanwhile
                call_soon_here(loop, functools.partial(_wake, waiter))

    async def _share(self, loop: asyncio.AbstractEventLoop) -> None:
        """After a write on the loop: give the loop to the rest once writes have held it for
        LOOP_SHARE seconds. A write on the loop does not yield as a hop to the thread did; a loop
        of starts would otherwise hold it from a worker's heartbeats and a server's requests."""
        now, held = loop.time(), self._held
        if held is None or held[0] is not loop:
            self._held = (loop, now)
            loop.call_soon(self._turned)  # runs once the loop has had a turn for everything else
        elif now - held[1] > LOOP_SHARE:
            await asyncio.sleep(0)

    def _turned(self) -> None:
        self._held = None

    def _run(self, fn: Callable[[Tx], T], write: bool, wait: bool = True) -> tuple[T, dict[str, Any]]:
        """One transaction, on the thread of its connection (the writer's, or the reader's for
        reads), or on the event loop (see the module docstring). `fn` is the store's own code (no
        await, no user callback runs inside it), so a writer holds the lock only while its
        statements run; a lock held by another process past the busy timeout is DatabaseLocked,
        and without `wait`, held for more than BRIEF_HOLD, _LockTaken (nothing was done)."""
        started = time.monotonic()
        if not write and self._rconn is not None:
            with self._reading:
                return self._transact(fn, write, wait, started)  # on the reader's connection
        while True:
            if not self._writing.acquire(timeout=-1 if wait else BRIEF_HOLD):
                raise _LockTaken()  # the writer's connection is busy on another thread
            try:
                return self._transact(fn, write, wait, started)
            except _GiveWay:
                pass  # a fork is waiting for the lock: it goes first, this waits again after it
            finally:
                self._writing.release()

    def _transact(self, fn: Callable[[Tx], T], write: bool, wait: bool, started: float) -> tuple[T, dict[str, Any]]:
        conn = self._conn if write or self._rconn is None else self._rconn
        if conn is None:  # closed meanwhile (the lock was let go for a fork)
            raise ConnectionError(f"SQLite database {self.path} is closed")
        self._same_file()
        if write:
            self._begin_immediate(conn, wait, started)
        else:
            conn.execute("BEGIN")
        self._local.tx_now = self.clock.now()
        tx = _SqliteTx(conn)
        try:
            result = fn(tx)
            tx.write_events()
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.OperationalError):
                if _is_locked(exc):
                    raise self._locked(started) from None
                raise self._unwritable(exc) from None
            raise
        return result, tx.notes

    def _begin_immediate(self, conn: sqlite3.Connection, wait: bool, started: float) -> None:
        """Take the write lock, waiting up to the busy timeout (from `started`) while another
        process holds it (SQLite's own busy handler is off on the writer's connection, so that the
        event loop can try without waiting). In WAL mode nothing after it waits for a lock."""
        for delay in itertools.chain(_BUSY_DELAYS, itertools.repeat(_BUSY_DELAYS[-1])):
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc):
                    raise
            if not wait:
                raise _LockTaken()
            left = self.busy_timeout - (time.monotonic() - started)
            if left <= 0:
                raise self._locked(started)
            if self._interrupt.wait(min(delay, left)):
                if self._closing:
                    raise ConnectionError(f"SQLite database {self.path} was closed while waiting for its write lock")
                raise _GiveWay()
        raise AssertionError("unreachable: the delays never end")


BRIEF_HOLD = 0.005
"""Seconds a write on the event loop waits for the writer's connection before going to the thread.
When it comes, the thread has no write in hand (it waited for them, `_thread_idle`), so the holder
is the watcher's look or another loop's write, each microseconds: waiting for it is cheaper than the
hop to the thread and back. (Before `_thread_idle`, every write after one sent to the thread by a
look followed it there, and the naive loop of `cairn bench` on SQLite ran at 270-300 workflows/s
instead of 720-880.)"""


_BUSY_DELAYS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.025, 0.025, 0.05, 0.05, 0.1)
"""Waits between two tries for the write lock, the last one repeated: SQLite's own busy handler's."""


LOOP_SHARE = 0.005
"""Measured with the naive loop of `cairn bench`: 2 ms to 100 ms all gave 620-750 workflows/s on
SQLite, against about 300 when every write on the loop yielded and 450-600 when none did."""


def _identity(path: str) -> tuple[int, int] | None:
    """A file's (device, inode); None for none there (or an in-memory database)."""
    if path == ":memory:":
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _LockTaken(Exception):
    """Another connection held the write lock when a transaction that would not wait began."""


class _GiveWay(Exception):
    """A fork waits for the writer's connection, which a transaction held waiting for the lock of
    another process (up to the busy timeout): it lets the fork by, then waits again."""


_databases: weakref.WeakSet[SqliteDatabase] = weakref.WeakSet()
"""Every SQLite database of this process: each one's transactions hold off a fork (`_before_fork`)."""
_held: list[SqliteDatabase] = []
_fork_lock = threading.Lock()
"""Held from before a fork to after it: two threads forking at once each hold every database."""


def _before_fork() -> None:
    """Hold every database until the fork is made. While it waits for a transaction, the other
    threads run on, and CPython runs the after-fork hooks registered by then, not those it ran
    before: a module imported meanwhile that registers a pair (concurrent.futures.thread's, first
    imported by asyncio's first `run_in_executor`) released a lock in the parent it never took
    ("release unlocked lock"). That one is imported with this module, before this hook."""
    _fork_lock.acquire()
    _held[:] = list(_databases)
    for db in _held:
        db._hold_for_fork()


def _after_fork(child: bool) -> None:
    for db in _held:
        db._after_fork(child)
    _held.clear()
    _fork_lock.release()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=lambda: _after_fork(child=False),
    after_in_child=lambda: _after_fork(child=True),
)


def _busy_timeout(given: str | None) -> float:
    """The busy timeout from the URL (`?busy_timeout=5`), else CAIRN_SQLITE_BUSY_TIMEOUT, else 30 s."""
    raw = given if given is not None else os.environ.get(BUSY_TIMEOUT_ENV)
    if raw is None or raw == "":
        return DEFAULT_BUSY_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        where = "busy_timeout in the database URL" if given is not None else BUSY_TIMEOUT_ENV
        raise ValueError(
            f"{where} must be a number of seconds (0 or more), got {raw!r}: e.g. "
            f"sqlite:///./cairn.db?busy_timeout=5 or {BUSY_TIMEOUT_ENV}=5"
        )
    return seconds


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock we waited for."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


_WAL_WRITE_LOCK = 120
"""The byte of the `-shm` file a WAL writer locks (WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK)."""
_RESERVED_BYTE = 0x40000001
"""The byte of the database file a writer locks outside WAL mode (PENDING_BYTE + 1)."""


def write_lock_holder(path: str) -> int | None:
    """The pid of the process holding the database's write lock, from Linux's /proc/locks (SQLite
    takes POSIX locks, which name their owner), this one's included; None when it cannot be told
    (another system, or none held any more)."""
    wanted: dict[str, int] = {}
    for file, byte in ((f"{path}-shm", _WAL_WRITE_LOCK), (path, _RESERVED_BYTE)):
        try:
            st = os.stat(file)
        except OSError:
            continue
        wanted[f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"] = byte
    try:
        with open("/proc/locks") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 8 or fields[3] != "WRITE":
            continue  # a waiter, or a shared lock
        pid, file, start, end = fields[4], fields[5], fields[6], fields[7]
        byte = wanted.get(file, -1)
        if byte < 0 or not pid.isdigit():
            continue
        if int(start) <= byte and (end == "EOF" or byte <= int(end)):
            return int(pid)
    return None


def _statements(script: str) -> list[str]:
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()):
        out.append(buf.strip())
    return out
