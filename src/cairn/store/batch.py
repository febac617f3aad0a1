"""Group commit: small write transactions that arrive together share one transaction.

Activation commits of many runs, and the inserts of many runs started at once, are each a few
statements; their cost is the transaction around them (a round trip, a COMMIT, a WAL flush). Work
that arrives while transactions are in flight queues up and goes together in the next one. Alone,
a piece of work goes at once, so latency is unchanged when things are quiet. A few transactions may
be in flight at once: while one waits on the database, the next batch is built and sent.

Each piece keeps its own outcome. When the shared transaction is refused (`Database.refused`: a
run's lease fence, a conflict, a value the database cannot store, a bug in one piece), it rolls back
whole and every piece runs again in a transaction of its own, so only the piece at fault fails and
one bad run never fails or slows its batch-mates. Any other error (the database is gone, or a COMMIT
whose outcome is unknown) is every piece's error: running them again blindly could apply one twice,
so each piece's caller settles it (`SqlStore`: read back whether it landed, send again if not).

A piece may say which rows it locks (`locks`); the batcher then runs its pieces in that order and
lets `lock_first` lock for all of them before the first (the workers' commits: runs' rows in id
order, see `journal_tx.lock_in_order`), so that two batches never lock the same rows in opposite
orders.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from cairn.store.base import Database, Tx

T = TypeVar("T")
Work = Callable[[Tx], Any]
Item = tuple[Work, Any, asyncio.Future[Any]]
"""A piece of work, what it locks (None: nothing said) and its outcome's future."""


class _Queue:
    """One event loop's queue: futures belong to the loop that made them."""

    def __init__(self) -> None:
        self.items: list[Item] = []
        self.flushers: set[asyncio.Task[None]] = set()
        """Flusher tasks until their loop over `items` ends: each leaves the set itself, in the same
        step as its last look at `items`. Left only by a done callback (a step later), four flushers
        ending together would hold every place while what queued in between waited for none; the
        callback remains for a flusher cancelled before it ever ran."""
        self.alone = 0
        """Transactions in flight that their callers run themselves (see `TxBatcher.run`)."""

    def in_flight(self) -> int:
        return len(self.flushers) + self.alone


class TxBatcher:
    def __init__(
        self,
        db: Database,
        max_batch: int = 64,
        max_in_flight: int = 4,
        direct: bool = False,
        lock_first: Callable[[Tx, list[Any]], None] | None = None,
    ) -> None:
        self._db = db
        self._lock_first = lock_first
        """Called with what the pieces of a transaction lock (sortable), before the first of them."""
        self._direct = direct
        """Whether a piece that finds nothing queued runs in its caller's task (starts: latency)."""
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        """Batches in flight at once; for the workers' commits, the database's `commits_in_flight`
        (what each backend's figure was measured with is said there)."""
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = weakref.WeakKeyDictionary()

    async def run(self, work: Callable[[Tx], T], locks: Any = None) -> T:
        """Run `work` in some write transaction and return its value, or raise what refused it.
        `work` changes nothing but the `Tx` until its first statement: it may be started twice
        (see `Database.transaction`). `locks`: what it locks, for `lock_first` (and the order of
        the pieces of a batch)."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        if self._direct and not queue.items and queue.in_flight() < self._max_in_flight:
            # Alone, and room: the caller runs its transaction itself, with no hop to a flusher
            # task (on a busy event loop each hop waits a whole round of everything else ready).
            queue.alone += 1
            try:
                return await self._db.transaction(self._together([(work, locks)]), rerunnable=True)
            finally:
                queue.alone -= 1
                if queue.items and not queue.flushers:  # what queued behind it needs a flusher
                    self._start_flusher(queue)
        done: asyncio.Future[T] = loop.create_future()
        queue.items.append((work, locks, done))
        if queue.in_flight() < self._max_in_flight:
            self._start_flusher(queue)
        return await done

    def _start_flusher(self, queue: _Queue) -> None:
        flusher = asyncio.create_task(self._flush(queue), name="cairn-group-commit")
        queue.flushers.add(flusher)
        flusher.add_done_callback(queue.flushers.discard)  # one cancelled before its first step

    async def _flush(self, queue: _Queue) -> None:
        try:
            while queue.items:
                batch = queue.items[: self._max_batch]
                del queue.items[: self._max_batch]
                try:
                    await self._apply(batch)
                except BaseException as exc:  # cancelled: nothing more is known of this batch
                    for _, _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    raise
        finally:
            this = asyncio.current_task()
            if this is not None:
                queue.flushers.discard(this)

    def _together(self, pieces: list[tuple[Work, Any]]) -> Work:
        """One transaction of `pieces`: what they lock locked first (`lock_first`), then each."""
        lock_first = self._lock_first
        if len(pieces) == 1:
            work, locks = pieces[0]
            if lock_first is None or locks is None:
                return work

            def alone(tx: Tx) -> Any:
                lock_first(tx, [locks])
                return work(tx)

            return alone

        def together(tx: Tx) -> list[Any]:
            if lock_first is not None:
                lock_first(tx, [locks for _, locks in pieces if locks is not None])
            return [_piece(tx, work) for work, _ in pieces]

        return together

    async def _apply(self, batch: list[Item]) -> None:
        if self._lock_first is not None:  # in the order of what they lock (see `lock_first`)
            batch = sorted(batch, key=lambda item: (item[1] is not None, item[1]))
        if len(batch) > 1:
            try:
                values = await self._db.transaction(self._together([(w, k) for w, k, _ in batch]), rerunnable=True)
            except Exception as exc:
                if not self._db.refused(exc):
                    for _, _, done in batch:
                        _settle(done, None, exc)
                    return
                # refused, so applied in nothing: each piece runs apart below
            else:
                for (_, _, done), value in zip(batch, values, strict=True):
                    _settle(done, value, None)
                return
        for work, locks, done in batch:
            try:
                value = await self._db.transaction(self._together([(work, locks)]), rerunnable=True)
            except Exception as exc:
                _settle(done, None, exc)
            else:
                _settle(done, value, None)


def _piece(tx: Tx, work: Work) -> Any:
    tx.begin_piece()
    return work(tx)


def _settle(done: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if done.done():  # its caller was cancelled
        return
    if error is None:
        done.set_result(value)
    else:
        done.set_exception(error)
