"""The SQL adapter under `SqlStore`: a `Database` (connecting, migrating, running a transaction,
notifications) and a `Tx` (one open transaction, its queries named), one pair per backend.

`SqlStore` is written once over them; the adapters differ only in connecting, transactions,
parameter conversion and notifications. Lock order everywhere is "run row first, then its steps",
so an activation commit and an action completion never deadlock; runs' rows are locked in id order
by every commit that locks more than its own (see `journal_tx.lock_in_order`).
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import functools
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from cairn import forks
from cairn.clock import SYSTEM, Clock
from cairn.errors import SchemaBehind, StoreError
from cairn.records import RunRow, StepRow
from cairn.store.protocol import Listener
from cairn.store.sql import RUN_COLUMNS, STEP_COLUMNS
from cairn.types import RunStatus, StepKind, StepStatus

log = logging.getLogger("cairn.store")

T = TypeVar("T")
Params = Mapping[str, Any]
WORK = "work"
ELSEWHERE = "elsewhere"
"""The detail of a WORK notification that says another process (or another store of this one)
committed, where its commits send none (SQLite's watcher): unlike a commit's own WORK here, or the
watcher's first look (which knows nothing of what came before it, and wakes claim loops only), it
may have ended runs this process waits for. A run another process ended before the first look, which
follows the first wait's start by about a millisecond, is seen by the 1 s safety read."""
LEFT_BY = "left by"
"""The detail of a WORK notification a full claim sends, as `(LEFT_BY, worker)`: its walks locked
due runs its limit then left, free again once it commits. Another worker's claim meanwhile passed
over them (SKIP LOCKED) and, counting only future wake-ups, would wait for its safety poll; the
claiming worker, full, wants no wake-up of its own."""
SCHEDULES = "schedules"
"""Notified when a schedule is declared, paused or resumed: workers look at their next tick again."""
QUEUES = "queues"
"""A queue's stored limits changed (a deploy declared them): workers read again which queues have limits."""
CANCELLED = "cancelled"
"""A run was cancelled: workers running attempts of it stop them now, not at their next heartbeat."""


@dataclass(frozen=True, slots=True)
class Started:
    """The detail of a start's WORK notification (`start_note`): the workflow and queue of the run
    it made, which no worker holds. A worker that serves neither may ignore it: its claim would take
    nothing. Every start woke every worker process, each for a full claim: about 1 ms of database
    and 1 ms of worker CPU (a worker on another queue claimed 179 times for 200 starts)."""

    workflow: str
    queue: str


NOTE_LIMIT = 7000
"""The longest qualified wake-up `start_note` makes: with the origin a backend adds, within
PostgreSQL's 8000 bytes a notification may carry (names are at most 255 characters: 3,100 at most)."""


def start_note(workflow: str, queue: str) -> str:
    """The notification of a run started unheld: WORK followed by its `Started` detail as JSON, in
    ASCII and with no space (a space escaped), so that a backend may carry it as one word (see
    `postgres._sent`); plain WORK, which wakes every claim loop, when it would be too long."""
    about = json.dumps([workflow, queue], separators=(",", ":")).replace(" ", "\\u0020")
    return WORK if len(about) > NOTE_LIMIT else f"{WORK} {about}"


def read_note(note: str) -> tuple[str, Any]:
    """The key a notification's listeners subscribed to and the detail it carries itself (a start's
    `Started`, else None): `start_note` read back, in this process or another."""
    if not note.startswith(WORK + " "):  # a key as it is ("run:<id>" is never "work ...")
        return note, None
    return WORK, _started(note[len(WORK) + 1 :])


@functools.lru_cache(maxsize=256)  # a few workflows and queues, started again and again
def _started(about: str) -> Started | None:
    """None (a plain wake-up: when in doubt, wake) for what no `start_note` makes."""
    try:
        told = json.loads(about)
    except ValueError:
        return None
    if isinstance(told, list) and len(told) == 2 and all(isinstance(name, str) for name in told):
        return Started(*told)
    return None


def call_soon_here(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    """Schedule `fn` on `loop`: directly when already on its thread (no self-pipe write), else
    thread-safely. Notifications are dispatched from the loop thread after most commits."""
    try:
        if loop._thread_id == threading.get_ident():  # type: ignore[attr-defined]
            loop.call_soon(fn)
        else:
            loop.call_soon_threadsafe(fn)
    except RuntimeError:
        if not loop.is_closed():
            raise
        # Closed since its listener was read (another thread's `asyncio.run` ended): nobody is
        # left there to tell. Raised, it failed the commit that notified, after it had landed.


class Tx(abc.ABC):
    """One open transaction; queries are referenced by name."""

    def __init__(self) -> None:
        self.notes: dict[str, Any] = {}
        """Notifications to send after commit: payload -> in-process detail (see `Listener`)."""
        self.events: list[dict[str, Any]] = []
        self.wait_once = False
        """Set for a control operation (`SqlStore._control`): it waits for its first row lock only
        and takes each further one NOWAIT (see `control._lock`), so it never waits holding a lock."""
        self.locked = False
        """A row lock was taken through `control._lock` in this transaction."""
        self.held_runs: set[str] = set()
        """Runs whose rows this transaction locked first, FOR UPDATE (`lock_runs`): locking one
        again would only cost a round trip."""

    def add_event(self, row: dict[str, Any]) -> None:
        """Append to a run's event list; the rows are written together, in order, just before COMMIT.
        A row's `detail` is a dict (or None), stored as JSON text."""
        self.events.append(row)

    def write_events(self) -> None:
        """Write the buffered events in order, one row each (called by the adapter right before
        COMMIT; PostgreSQL sends them instead with the transaction's last statement, `cairn_apply`)."""
        rows, self.events = self.events, []
        self.many("insert_event", [{**r, "detail": json.dumps(r["detail"]) if r["detail"] else None} for r in rows])

    @abc.abstractmethod
    def execute(self, name: str, params: Params) -> int:
        """Run a statement; returns the affected row count."""

    def write(self, name: str, params: Params) -> None:
        """Run a statement whose result is not needed: PostgreSQL pipelines these (no round trip each)."""
        self.execute(name, params)

    @abc.abstractmethod
    def all(self, name: str, params: Params) -> list[tuple[Any, ...]]: ...

    def all_of(self, statements: Sequence[tuple[str, Params]]) -> list[list[tuple[Any, ...]]]:
        """Several statements, in order, and each one's rows: PostgreSQL sends them in one round trip."""
        return [self.all(name, params) for name, params in statements]

    def one(self, name: str, params: Params) -> tuple[Any, ...] | None:
        rows = self.all(name, params)
        return rows[0] if rows else None

    def many(self, name: str, params: Sequence[Params]) -> None:
        for p in params:
            self.execute(name, p)

    def write_row(self, name: str, row: Params, expect: Exception | None = None, notify: str | None = None) -> None:
        """One row of a write named in `ROW_WRITES`. With `expect`, the write must change exactly
        one row, else `expect` is raised and the transaction rolls back. With `notify`, the write
        returns a `due` flag, and `notify` is sent after commit when it is 1.

        PostgreSQL holds such rows back and applies all of them at once, in one `cairn_apply`
        statement, before any other statement, checking and notifying on the server: a group
        commit sends one statement, not one per row, and never waits for its result.
        Between `begin_piece` calls, rows must come in `ROW_WRITES` order (else what is held back
        goes first); the pieces of one transaction must touch different runs, as the rows of
        different pieces are applied in either order."""
        if expect is not None:
            if self.execute(name, row) != 1:
                raise expect
        elif notify is not None:
            found = self.one(name, row)
            if found is not None and found[0]:
                self.notify(notify)
        else:
            self.write(name, row)

    def lock_runs(self, ids: Sequence[str], parents: Sequence[str], children: Sequence[str]) -> None:
        """Lock, FOR UPDATE and in id order, the rows of the runs `ids` and of the open children
        awaited at the steps `children` ("parent_id seq", each parent among `parents`), as the
        transaction's first statement (see `journal_tx.lock_in_order`). A run not there locks
        nothing. SQLite's writers are serialised by BEGIN IMMEDIATE: nothing to lock there."""
        self.held_runs.update(ids)

    def begin_piece(self) -> None:
        """The next writes belong to another piece of a group commit (see `write_row`)."""
        return  # rows are written at once here: nothing is held back

    def notify(self, payload: str, detail: Any = None) -> None:
        """Wake listeners after commit (in this process directly, elsewhere through the backend);
        listeners in this process also get `detail`."""
        if detail is not None or payload not in self.notes:
            self.notes[payload] = detail

    def now(self) -> float:
        row = self.one("now", {})
        assert row is not None
        return float(row[0])


class Database(abc.ABC):
    dialect: str
    url: str
    commits_in_flight = 4
    """Group commit: how many batches of commits may be in flight at once (see `TxBatcher`)."""

    def __init__(self) -> None:
        self.clock: Clock = SYSTEM
        """The clock `cairn_now()` reads: the real one, or a test environment's (`cairn.clock`)."""
        self.migrates = True
        """Whether opening applies pending migrations. Off for a reader that promises to write
        nothing (`cairn replay`, run with the code about to be deployed against the database in
        use): it refuses a database its code would migrate instead (`SchemaBehind`)."""
        self._keyed: dict[str, list[Listener]] = {}
        self._lock = threading.Lock()
        self._opening: concurrent.futures.Future[bool] | None = None
        """The one open under way or done; every caller waits for it (from whichever loop)."""
        self._opened_in = forks.generation()
        """The process (as `cairn.forks` counts them) that opened it: only that one may use it."""
        self.lock_conflicts = 0
        """Transactions the database refused as a lock conflict's loser (`conflicted`: a deadlock,
        which PostgreSQL breaks only after its deadlock_timeout), counted as they fail, whoever
        runs them again: a group commit's batch refused whole, a commit or control operation."""

    async def open(self) -> None:
        """Connect and migrate, once, however many callers ask at once: a client's first use is
        often a burst of concurrent calls, and none may see the database before it is migrated."""
        while True:
            if self.inherited():
                raise forks.refuse("this client")
            opening = self._opening
            if opening is not None and opening.done() and opening.exception() is None and opening.result():
                return
            with self._lock:
                opening = self._opening
                mine = opening is None
                if opening is None:
                    opening = self._opening = concurrent.futures.Future()
                    self._opened_in = forks.generation()
            if not mine:
                # Shielded: a waiter cancelled (a sync client closing) cancelled the shared future
                # through its wrapper, and the opener then failed to set it (InvalidStateError).
                if await asyncio.shield(asyncio.wrap_future(opening)):
                    return
                continue  # whoever was opening it was cancelled: not a failure, open it here
            try:
                await self._open()
            except BaseException as exc:
                with self._lock:
                    self._opening = None  # the next caller tries again
                if isinstance(exc, asyncio.CancelledError):
                    opening.set_result(False)  # not a failure: those waiting try again themselves
                else:
                    opening.set_exception(exc)
                raise
            opening.set_result(True)
            return

    def inherited(self) -> bool:
        """Whether it was opened (or opening) in the process this one was forked from: its
        connections and threads are that process's, which alone may use or close them."""
        return self._opening is not None and self._opened_in != forks.generation()

    def behind(self, where: str, current: int, latest: int) -> SchemaBehind:
        """The refusal to read a database older than this code, when not migrating it."""
        return SchemaBehind(
            f"the database at {where} is at schema version {current}; this version of Cairn reads version "
            f"{latest}, and does not migrate it here because this command writes nothing. Run it with the "
            "Cairn version that database is used with, or migrate the database first (start a worker, or "
            "any other `cairn` command, with this version)"
        )

    @abc.abstractmethod
    async def _open(self) -> None:
        """Connect and apply pending migrations; called once by `open`."""

    def _closed(self) -> None:
        """After `close`: a later use opens the database again."""
        with self._lock:
            self._opening = None

    def refused(self, exc: Exception) -> bool:
        """Whether `exc` says the transaction was refused, so surely not applied: by the database (a
        check, a constraint, a value it cannot store, a deadlock) or by the code that built it.
        Then its parts may run again apart, and only the part at fault fails. False when the
        outcome is unknown (the connection dropped at COMMIT) or the database is unavailable."""
        return not isinstance(exc, OSError | ConnectionError | TimeoutError)

    def conflicted(self, exc: Exception) -> bool:
        """Whether `exc` says the database refused the transaction as the loser of a lock conflict
        (a deadlock): nothing of it was applied, and it may simply run again."""
        return False

    def lock_unavailable(self, exc: Exception) -> bool:
        """Whether `exc` is a NOWAIT lock refused because another transaction holds the row: nothing
        of the transaction was applied, and it may run again once that one has ended."""
        return False

    def ambiguous(self, exc: Exception) -> bool:
        """Whether a write that failed with `exc` may have been applied all the same (the
        connection dropped after the statement that commits went out): then its outcome is read
        back before anything is sent again. False when it surely was not applied (refused, or a
        `StoreError`: never sent, the database unreachable or locked)."""
        return not self.refused(exc) and not isinstance(exc, StoreError)

    @property
    def notifies_across_processes(self) -> bool:
        """Whether commits in other processes reach subscribers here (else only a poll sees them)."""
        return False

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connections; in a forked child, one `inherited` returns at once, untouched."""

    @abc.abstractmethod
    async def transaction(self, fn: Callable[[Tx], T], write: bool = True, rerunnable: bool = False) -> T:
        """Run `fn` in one transaction and return its value. `rerunnable`: `fn` changes nothing
        but the `Tx` until its first statement, so a backend may start it one way (PostgreSQL: on
        the event loop, for a transaction made only of held rows) and, stopped at that statement,
        run it again from the start another way."""

    async def read(self, name: str, params: Params) -> list[tuple[Any, ...]]:
        """The rows of one read-only statement, in a transaction of its own (one statement reads one
        snapshot). PostgreSQL sends it on the event loop, with no thread hop and no BEGIN/COMMIT."""
        return await self.transaction(lambda tx: tx.all(name, params), write=False)

    async def read_one(self, name: str, params: Params) -> tuple[Any, ...] | None:
        rows = await self.read(name, params)
        return rows[0] if rows else None

    def subscribe_key(self, key: str, callback: Listener) -> Callable[[], None]:
        """Call `callback(detail)` (from any thread) on notifications equal to `key`: "work" for
        claim loops, "run:<id>" for a run's result waiters. Returns the unsubscribe function."""
        with self._lock:
            callbacks = self._keyed.get(key)
            if callbacks is None:
                self._keyed[key] = [callback]
                self._key_added(key)
            else:
                callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                callbacks = self._keyed.get(key)
                if callbacks is None or callback not in callbacks:
                    return  # unsubscribed already
                callbacks.remove(callback)
                if not callbacks:
                    del self._keyed[key]
                    self._key_removed(key)

        return unsubscribe

    def _key_added(self, key: str) -> None:  # noqa: B027 (a hook: most backends need nothing)
        """A first subscriber of `key` (called holding `_lock`)."""

    def _key_removed(self, key: str) -> None:  # noqa: B027
        """The last subscriber of `key` has gone (called holding `_lock`)."""

    def _dispatch(self, notes: Mapping[str, Any] | Sequence[str]) -> None:
        """Call the listeners of `notes`: payloads, or payload -> detail from a commit here. A
        payload that carries its own detail (`read_note`: a start's) is heard as its key."""
        details = notes if isinstance(notes, Mapping) else dict.fromkeys(notes)
        keyed = []
        with self._lock:
            for payload, given in details.items():
                key, told = read_note(payload)
                if key in self._keyed:
                    keyed.append((key, told if given is None else given, list(self._keyed[key])))
        for key, detail, callbacks in keyed:
            for cb in callbacks:
                try:
                    cb(detail)
                except Exception:  # one listener's failure is not the commit's, nor the other listeners'
                    log.exception("a listener of %r failed", key)


def run_row(r: Sequence[Any]) -> RunRow:
    """A row selected as `{run_columns}`: RunRow's fields, named once (see `cairn.store.sql`)."""
    fields = dict(zip(RUN_COLUMNS, r, strict=True))
    fields["status"] = RunStatus(fields["status"])
    return RunRow(**fields)


def step_row(r: Sequence[Any]) -> StepRow:
    """A row selected as `{step_columns}`: StepRow's fields, named once (see `cairn.store.sql`)."""
    fields = dict(zip(STEP_COLUMNS, r, strict=True))
    fields["kind"], fields["status"] = StepKind(fields["kind"]), StepStatus(fields["status"])
    return StepRow(**fields)
