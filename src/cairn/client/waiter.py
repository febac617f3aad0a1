"""Result waits: one shared waiter per client and event loop, whatever the number of runs awaited.

A run's `run:<id>` notification (sent by the commit that ends it; in this process it carries the
finished row, so nothing is read) is what resolves a wait. The database is read only in batches,
one statement for every run that needs it: once when a wait begins (unless the caller has just
created the run), when news of a run comes without its row (another process ended it, or a control
operation), and for the runs still awaited: on SQLite, whose commits in other processes send no
notification, as soon as the file watcher brings news that another process (or another client of
this one) committed, at most once per `_news_gap()` seconds while news keeps coming; and as a safety
net every POLL_NOTIFIED seconds. A thousand gathered `result()` calls on runs of this client's
worker cost about one read of each run in all, not one read per wait per poll; on runs ended
elsewhere on SQLite, at most about 10,000 rows a second while news comes, whatever their number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable

from cairn.errors import DatabaseUnusable, RunNotFound
from cairn.records import RunRow
from cairn.store.base import ELSEWHERE, WORK, call_soon_here
from cairn.store.open import redact_url
from cairn.store.protocol import Store

log = logging.getLogger("cairn.client")

POLL_NOTIFIED = 1.0
"""Seconds between safety reads."""
NEWS_GAP = 0.005
"""Where other processes' commits send no notification (SQLite), the least time between two reads
of the awaited runs that the watcher's news brings on (it looks every 5 ms while news comes). The
read came at the next 0.1 s safety read instead: a run ended by another process, or by a worker
on another client of this process, took about 100 ms to be seen against 2 ms for its own."""
NEWS_GAP_PER_RUN = 0.0001
"""Added to NEWS_GAP for each run awaited: each read is of all of them, so while news keeps coming
they are read at most about 10,000 times a second in all, whatever their number (a thousand
gathered waits: a read each 0.1 s). Reads that came with no news at all cost a thousand gathered
waits on runs of a worker in this process several reads of each run: those see no news here."""


class ResultWaiter:
    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._waiting: dict[str, list[asyncio.Future[RunRow]]] = {}
        self._unsubscribe: dict[str, Callable[[], None]] = {}
        self._stuck_ends: set[asyncio.Future[RunRow]] = set()
        """Waits that a run stuck on an error ends as well as its end (see `RunRow.stuck`)."""
        self._check: set[str] = set()
        """Runs to read at the next batch: new waits, and news that came without the row."""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._elsewhere = False
        """Another process may have committed since the last read of all awaited runs (SQLite's
        watcher said so)."""

    async def wait(self, run_id: str, timeout: float | None, created: bool = False, or_stuck: bool = False) -> RunRow:
        """The run's row once it has ended. `created`: the caller has just created it, so it has not
        ended yet and needs no first read. `or_stuck`: also once it is stuck on an error (see
        `RunRow.stuck`), which no wait outlasts. RunNotFound when there is no such run; TimeoutError."""
        done: asyncio.Future[RunRow] = self._loop.create_future()
        if or_stuck:
            self._stuck_ends.add(done)
        if run_id not in self._waiting:
            self._waiting[run_id] = []
            self._unsubscribe[run_id] = self._store.subscribe_key(f"run:{run_id}", self._listener(run_id))
        self._waiting[run_id].append(done)
        if not created:
            self._check.add(run_id)
            self._wake.set()
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._serve(), name="cairn-result-waiter")
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(done)
        finally:
            self._forget(run_id, done)

    def _listener(self, run_id: str) -> Callable[[object], None]:
        def heard(detail: object) -> None:
            call_soon_here(self._loop, lambda: self._news(run_id, detail))

        return heard

    def _news(self, run_id: str, detail: object) -> None:
        if isinstance(detail, RunRow) and detail.status.is_terminal:
            self._resolve(detail)  # ended by a commit in this process: its row came with the news
        elif run_id in self._waiting:
            self._check.add(run_id)  # from elsewhere, or not an end: read it with the next batch
            self._wake.set()

    def _resolve(self, row: RunRow) -> None:
        ended = row.status.is_terminal
        for done in self._waiting.get(row.id, []):
            if not done.done() and (ended or done in self._stuck_ends):
                done.set_result(row)

    def _forget(self, run_id: str, done: asyncio.Future[RunRow]) -> None:
        self._stuck_ends.discard(done)
        waits = self._waiting.get(run_id)
        if waits is None:
            return
        with contextlib.suppress(ValueError):
            waits.remove(done)
        if not waits:
            del self._waiting[run_id]
            self._check.discard(run_id)
            self._unsubscribe.pop(run_id)()

    def _heard_elsewhere(self, detail: object) -> None:
        # Not this process's own commits' WORK (a timer set, a place freed): a run ended here comes
        # with its row; read on those, a wait of a run that ended in 2 ms was read back.
        if detail == ELSEWHERE:
            call_soon_here(self._loop, self._elsewhere_news)

    def _elsewhere_news(self) -> None:
        if not self._elsewhere:
            self._elsewhere = True
            self._wake.set()  # the next read of all awaited runs is due now, or news_gap after the last

    def _due(self, last_round: float) -> float:
        """When the next read of all awaited runs is due: news_gap after the last one when the
        watcher brought news since, else the safety net's POLL_NOTIFIED."""
        return last_round + (min(self._news_gap(), POLL_NOTIFIED) if self._elsewhere else POLL_NOTIFIED)

    def _news_gap(self) -> float:
        """The least time between two reads brought on by news: longer the more runs each reads."""
        return NEWS_GAP + NEWS_GAP_PER_RUN * len(self._waiting)

    async def _serve(self) -> None:
        unnotified = not self._store.notifies_across_processes
        unsubscribe = self._store.subscribe_key(WORK, self._heard_elsewhere) if unnotified else None
        last_round = self._loop.time()
        try:
            while self._waiting:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, self._due(last_round) - self._loop.time())):
                        await self._wake.wait()
                self._wake.clear()
                check, self._check = self._check, set()
                safety = self._loop.time() >= self._due(last_round)
                if safety:
                    self._elsewhere = False
                try:
                    await self._read(check, safety)
                except DatabaseUnusable as exc:  # no wait will ever be answered: each is told so
                    for run_id in list(self._waiting):
                        self._fail(run_id, exc)
                except Exception as exc:  # the database is away: keep waiting, and read these again
                    log.warning("reading runs for result waits failed (%s: %s); will retry", type(exc).__name__, exc)
                    self._check |= check
                if safety:
                    last_round = self._loop.time()
        finally:
            if unsubscribe is not None:
                unsubscribe()

    async def _read(self, check: set[str], safety: bool) -> None:
        """One batch: every run in `check` (whatever its status, to tell a missing one), and on a
        safety round the ended ones among the other awaited runs (all of those a wait for a stuck
        run watches: a run stuck in another process, on SQLite, sends no news of it)."""
        if safety and self._stuck_ends:
            watched = {run_id for run_id, waits in self._waiting.items() if not self._stuck_ends.isdisjoint(waits)}
            check = check | watched
        ids = sorted(check & set(self._waiting))
        if ids:
            rows = {row.id: row for row in await self._store.runs_by_ids(ids, finished_only=False)}
            for run_id in ids:
                row = rows.get(run_id)
                if row is None:
                    where = redact_url(self._store.url)
                    self._fail(run_id, RunNotFound(f"no run with id {run_id!r} in {where}"))
                elif row.status.is_terminal or row.stuck:
                    self._resolve(row)
        rest = sorted(set(self._waiting) - set(ids))
        if safety and rest:
            for row in await self._store.runs_by_ids(rest, finished_only=True):
                self._resolve(row)

    def _fail(self, run_id: str, error: Exception) -> None:
        for done in self._waiting.get(run_id, []):
            if not done.done():
                done.set_exception(error)


class Waiters:
    """A client's waiters, one per event loop it is used from (futures belong to the loop that made them)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ResultWaiter] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def here(self) -> ResultWaiter:
        loop = asyncio.get_running_loop()
        found = self._by_loop.get(loop)
        if found is None:
            # A waiter holds its loop (its futures, task and event do), so the weak key never dies
            # by itself: sync code calling `asyncio.run(handle.result())` in a loop kept every loop
            # it made, about 7 KB each. A closed loop's waiter has nothing left to answer. Under a
            # lock: threads sharing a client (a threaded web server) each add their own loop's.
            with self._lock:
                for closed in [other for other in list(self._by_loop) if other.is_closed()]:
                    self._by_loop.pop(closed, None)
                found = self._by_loop.get(loop)
                if found is None:
                    found = self._by_loop[loop] = self._waiter(loop)
        return found

    def _waiter(self, loop: asyncio.AbstractEventLoop) -> ResultWaiter:
        """The waiter of a loop that has none yet (a test environment's waits watch for a stall)."""
        return ResultWaiter(self._store, loop)
