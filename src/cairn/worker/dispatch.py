"""Runs started next to a worker: the in-process seam between a client and the workers of its process.

A worker that runs in the process of a client registers here as a `LocalDispatcher` of the client's
store. A start offers its new run to them first; one that takes it inserts the run leased to
itself (the one statement `start()` waits for) and then activates it from memory, with no claim:
the start never waits behind the worker's other commits. When none takes it, the client inserts
the run for any worker to claim. The client asks; the store never calls up.
"""

from __future__ import annotations

import threading
import weakref
from typing import Protocol

from cairn.records import NewRun, RunRow


class LocalDispatcher(Protocol):
    async def start_run(self, run: NewRun) -> tuple[RunRow, bool] | None:
        """Create and start `run` here: (the run, True), or (the existing run, False) when its id
        names one already; None when this dispatcher does not take it (not its workflow or queue,
        no room, a backlog to serve first), and nothing was written."""
        ...


_local: weakref.WeakKeyDictionary[object, list[LocalDispatcher]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def register(store: object, dispatcher: LocalDispatcher) -> None:
    with _lock:
        _local.setdefault(store, []).append(dispatcher)


def unregister(store: object, dispatcher: LocalDispatcher) -> None:
    with _lock:
        dispatchers = _local.get(store, [])
        if dispatcher in dispatchers:
            dispatchers.remove(dispatcher)


def local(store: object) -> list[LocalDispatcher]:
    """The dispatchers of workers in this process that share `store`, in registration order."""
    with _lock:
        return list(_local.get(store, ()))
