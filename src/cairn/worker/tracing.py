"""Each run's workflow and stored trace context, read once per run by a worker that traces
(`cairn.telemetry`): they never change, so a bounded cache spares a read per activation."""

from __future__ import annotations

import collections
import logging

from cairn.store.protocol import Store

log = logging.getLogger("cairn.worker")


class RunTraces:
    def __init__(self, store: Store, size: int = 10_000) -> None:
        self._store = store
        self._size = size
        self._known: collections.OrderedDict[str, tuple[str | None, str | None]] = collections.OrderedDict()

    def remember(self, run_id: str, workflow: str, trace: str | None) -> None:
        self._known[run_id] = (workflow, trace)
        self._known.move_to_end(run_id)
        while len(self._known) > self._size:
            self._known.popitem(last=False)

    async def of(self, run_id: str) -> tuple[str | None, str | None]:
        """(workflow, trace context) of a run; (None, None) for a run that is not there."""
        known = self._known.get(run_id)
        if known is not None:
            return known
        try:
            found = await self._store.run_trace(run_id)
        except Exception as exc:  # tracing must never stop work: this activation goes untraced
            log.debug("reading the trace context of run %s failed: %s", run_id, exc)
            return None, None
        if found is None:
            return None, None
        self.remember(run_id, *found)
        return found
