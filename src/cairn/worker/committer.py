"""Group commit: the activation commits of many runs share one transaction.

Commits that arrive while transactions are in flight queue up and go together in the next one (on
PostgreSQL that is one round trip and one COMMIT for all of them). Alone, a commit goes at once, so
latency is unchanged when the worker is quiet. A few transactions may be in flight at once: while
one waits on the database (its fsync, the network), the next batch is being built and sent, which
keeps both the worker and the database busy. Each commit is still fenced by its own run's lease
token; when one loses its fence, the store applies the batch's commits one by one, so only the
losers fail.
"""

from __future__ import annotations

import asyncio

from cairn.store.protocol import Commit
from cairn.store.sql_store import SqlStore


class GroupCommitter:
    def __init__(self, store: SqlStore, max_batch: int = 64, max_in_flight: int = 4) -> None:
        self._store = store
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        """Measured with `cairn bench --scenario throughput`: 1 -> 4 gave about +16% workflows/s on
        PostgreSQL (none lost on SQLite, whose single writer simply queues them), 8 no more."""
        self._queue: list[tuple[Commit, asyncio.Future[None]]] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def commit(self, commit: Commit) -> None:
        """Apply `commit` (in some transaction); LeaseLost if its run's fence failed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((commit, done))
        if len(self._flushers) < self._max_in_flight:
            flusher = asyncio.create_task(self._flush(), name="cairn-group-commit")
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        await done

    async def _flush(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                outcomes = await self._store.commit_activations([c for c, _ in batch])
            except BaseException as exc:  # the database failed: every commit of the batch did
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, done), error in zip(batch, outcomes, strict=True):
                if done.done():
                    continue
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)
