"""The blocking client for scripts: one bridge to a private event-loop thread, no copied logic."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from cairn.client.client import Client
from cairn.client.handle import RunEvent, RunHandle, StepInfo
from cairn.queues import Queue
from cairn.records import RunRow
from cairn.store.protocol import QueueRow
from cairn.types import RunStatus

T = TypeVar("T")


class LoopThread:
    """An event loop on a daemon thread; `run(coro)` blocks until the coroutine finishes there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="cairn-sync-client", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


class SyncRunHandle:
    def __init__(self, inner: RunHandle, bridge: LoopThread) -> None:
        self.inner = inner
        self.id = inner.id
        self._bridge = bridge

    def __repr__(self) -> str:
        return f"<SyncRunHandle {self.id}>"

    @property
    def created(self) -> bool | None:
        """As `RunHandle.created`: False when `start` found the run its id names (nothing started)."""
        return self.inner.created

    @property
    def input_differs(self) -> bool:
        """As `RunHandle.input_differs`: the run `start` found was started with other input."""
        return self.inner.input_differs

    def status(self) -> RunStatus:
        return self._bridge.run(self.inner.status())

    def result(self, timeout: float | None = None) -> Any:
        return self._bridge.run(self.inner.result(timeout))

    def steps(self) -> list[StepInfo]:
        return self._bridge.run(self.inner.steps())

    def properties(self, history: bool = False) -> Any:
        return self._bridge.run(self.inner.properties(history))

    def memory(self) -> dict[str, Any]:
        return self._bridge.run(self.inner.memory())

    def signal(self, name: str, payload: Any = None) -> None:
        self._bridge.run(self.inner.signal(name, payload))

    def diagnose(self) -> str | None:
        return self._bridge.run(self.inner.diagnose())

    def describe(self) -> RunRow:
        return self._bridge.run(self.inner.describe())

    def events(self) -> list[RunEvent]:
        return self._bridge.run(self.inner.events())

    def pause(self) -> RunStatus:
        return self._bridge.run(self.inner.pause())

    def resume(self) -> RunStatus:
        return self._bridge.run(self.inner.resume())

    def cancel(self) -> RunStatus:
        return self._bridge.run(self.inner.cancel())

    kill = cancel

    def retry(self) -> RunStatus:
        return self._bridge.run(self.inner.retry())

    def fork(self, from_step: int, id: str | None = None) -> SyncRunHandle:
        return SyncRunHandle(self._bridge.run(self.inner.fork(from_step, id)), self._bridge)


class SyncClient:
    """`cairn.connect_sync(url)`: the same operations as `Client`, blocking."""

    def __init__(self, url: str | None = None, *, client: Client | None = None) -> None:
        self._bridge = LoopThread()
        self.inner = client or Client(url)
        self.url = self.inner.url
        self.store = self.inner.store

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._bridge.run(self.inner.close())
        self._bridge.close()

    def start(
        self,
        workflow: Any,
        /,
        *args: Any,
        id: str | None = None,
        queue: str | Queue | None = None,
        key: str | None = None,
        priority: int | None = None,
        dedup_key: str | None = None,
        **kwargs: Any,
    ) -> SyncRunHandle:
        started = self.inner.start(
            workflow, *args, id=id, queue=queue, key=key, priority=priority, dedup_key=dedup_key, **kwargs
        )
        return SyncRunHandle(self._bridge.run(started), self._bridge)

    def run(
        self,
        workflow: Any,
        /,
        *args: Any,
        id: str | None = None,
        queue: str | Queue | None = None,
        timeout: float | None = None,
        key: str | None = None,
        priority: int | None = None,
        dedup_key: str | None = None,
        **kwargs: Any,
    ) -> Any:
        done = self.inner.run(
            workflow,
            *args,
            id=id,
            queue=queue,
            timeout=timeout,
            key=key,
            priority=priority,
            dedup_key=dedup_key,
            **kwargs,
        )
        return self._bridge.run(done)

    def list_queues(self) -> list[QueueRow]:
        return self._bridge.run(self.inner.list_queues())

    def get(self, run_id: str) -> SyncRunHandle:
        return SyncRunHandle(self.inner.get(run_id), self._bridge)

    def list_runs(self, status: str | RunStatus | None = None, workflow: Any = None, limit: int = 50) -> list[RunRow]:
        return self._bridge.run(self.inner.list_runs(status, workflow, limit))


def connect_sync(url: str | None = None) -> SyncClient:
    """A blocking client for scripts (its own store and loop thread; close it when done)."""
    return SyncClient(url)
