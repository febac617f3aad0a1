"""One workflow activation: the journal in, the engine's decision applied in one fenced transaction.

Runs with actions or children in flight stay in memory (a bounded, sticky cache) so the next
activation only delivers the new results instead of replaying; runs that sleep or wait for a
signal are evicted and rebuilt by replay when they wake, so they hold no worker memory.
"""

from __future__ import annotations

import collections
import logging
import random

from cairn.engine.instance import WorkflowInstance
from cairn.errors import LeaseLost
from cairn.registry import Registry
from cairn.serialization import dumps, error_to_json
from cairn.store.protocol import ActivationResult, RunClaim
from cairn.store.sql_store import SqlStore
from cairn.types import RunStatus

log = logging.getLogger("cairn.worker")


class InstanceCache:
    """LRU of in-memory runs. An entry is valid only for the next claim of its run: the claim's lease
    token must be exactly one more than the token we committed under, i.e. nobody else claimed or
    controlled the run in between (a count of activations would not see a rewind)."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: collections.OrderedDict[str, tuple[WorkflowInstance, int]] = collections.OrderedDict()

    def expected_tokens(self) -> dict[str, int]:
        return {run_id: token + 1 for run_id, (_, token) in self._items.items()}

    def take(self, run_id: str, token: int) -> WorkflowInstance | None:
        """The cached instance if it is still current for a claim under `token`; stale ones are closed."""
        item = self._items.pop(run_id, None)
        if item is None:
            return None
        inst, committed = item
        if token == committed + 1:
            return inst
        inst.close()
        return None

    def put(self, inst: WorkflowInstance, token: int) -> None:
        self._items[inst.run_id] = (inst, token)
        while len(self._items) > self._capacity:
            _, (old, _) = self._items.popitem(last=False)
            old.close()

    def clear(self) -> None:
        while self._items:
            _, (inst, _) = self._items.popitem()
            inst.close()

    def __len__(self) -> int:
        return len(self._items)


class Runner:
    def __init__(self, store: SqlStore, registry: Registry, cache_size: int = 1000) -> None:
        self._store = store
        self._registry = registry
        self.cache = InstanceCache(cache_size)

    async def activate(self, claim: RunClaim) -> None:
        run = claim.run
        defn = self._registry.workflow(run.workflow)
        cached = self.cache.take(run.id, claim.token)
        if defn is None:  # not claimable by this worker in the first place; hand it back
            await self._store.release_run(claim)
            return
        inst: WorkflowInstance | None = None
        try:
            if cached is not None and claim.journal_skipped:
                inst = cached
            else:
                if cached is not None:
                    cached.close()
                inst = WorkflowInstance.restore(defn, run, claim.journal, random.getrandbits(64))
            result = inst.activate(claim.batch, claim.now, claim.signals)
        except Exception as exc:  # a bug in the engine or a journal it cannot read: visible, not a loop
            log.exception("activation of run %s failed", run.id)
            if inst is not None:
                inst.close()
            result = ActivationResult(
                status=RunStatus.FAILED, error=dumps(error_to_json(exc)), counts_as_activation=False
            )
            inst = None
        try:
            await self._store.commit_activation(claim, result)
        except LeaseLost:
            log.warning("run %s: lease lost before commit; another worker continues it", run.id)
            if inst is not None:
                inst.close()
            return
        except BaseException:
            if inst is not None:
                inst.close()
            raise
        if inst is None:
            return
        if result.status == RunStatus.RUNNING:
            self.cache.put(inst, claim.token)
        else:
            inst.close()
