"""The blocking client for scripts: one bridge to a private event-loop thread, no copied logic."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import weakref
from collections.abc import Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from cairn import forks
from cairn.client.client import Client, RunsPage
from cairn.client.handle import RunEvent, RunHandle, RunSizes, StepInfo
from cairn.policies import retention as retention_of
from cairn.queues import Queue
from cairn.records import RunRow, StepRow
from cairn.store.open import resolve_url
from cairn.store.protocol import ActionInfo, QueueRow, ScheduleRow, WorkerInfo, WorkflowInfo
from cairn.types import RunStatus

if TYPE_CHECKING:
    from cairn.schedules import Schedule

T = TypeVar("T")


class LoopThread:
    """An event loop on a daemon thread; `run(coro)` blocks until the coroutine finishes there.

    Any number of threads may call `run` at once (their coroutines share the loop). After `close`,
    the next `run` starts a new loop thread, as a closed async `Client` opens again when used.
    A `run` begun while another thread closes waits for the close to end: submitted to the old
    loop meanwhile, it reopened the client there (or waited on a stopped loop for ever), and one
    begun on a new loop met that client's pool bound to the old one (every caller hung)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        """Held to submit a call and for a whole close: no call lands on a loop that is closing."""
        self.loop: asyncio.AbstractEventLoop | None = None
        """Started by the first call, not before: a client made at import and forked before any
        use (gunicorn --preload, a multiprocessing pool) has no loop of its parent's to refuse
        for, and its child starts its own."""
        self._thread: threading.Thread | None = None
        self._started_in = forks.generation()
        self._calls: dict[concurrent.futures.Future[Any], Coroutine[Any, Any, Any]] = {}
        """The calls submitted and not yet done, each with its coroutine (to find its task by)."""
        _bridges.add(self)

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="cairn-sync-client", daemon=True)
            thread.start()
            self.loop, self._thread, self._started_in = loop, thread, forks.generation()
        return self.loop

    def _forked(self) -> bool:
        """Whether this is a child of a fork made while the loop thread ran: the thread is not here
        (and the client was used there: its connections are the parent's)."""
        return self.loop is not None and self._started_in != forks.generation()

    @property
    def running(self) -> bool:
        """Whether the loop thread is up (False until the first `run`, and once closed until the next)."""
        return self.loop is not None

    def run(self, coro: Coroutine[Any, Any, T], waits_for: str | None = None) -> T:
        """Run `coro` on the loop thread and return its result. `waits_for`: what the call waits
        for, when it waits for a run to end (which a worker on the caller's own loop could never
        bring while this call blocks that loop: that is refused rather than a wait for ever)."""
        try:
            if self._forked():  # before the lock, which another thread of the parent may have held
                raise forks.refuse("this blocking client")
            if threading.current_thread() is self._thread:
                raise RuntimeError(
                    "a blocking client was called from its own event loop thread (from code it runs): "
                    "that call would wait for itself for ever"
                )
            if waits_for is not None:
                _refuse_blocking_a_worker(waits_for)
            with self._lock:
                future = asyncio.run_coroutine_threadsafe(coro, self._loop())
                self._calls[future] = coro
        except BaseException:
            coro.close()  # never to run: no "never awaited" warning
            raise
        future.add_done_callback(self._done)
        try:
            return _interruptible(future)
        except BaseException:
            future.cancel()  # interrupted (Ctrl-C in a script): the wait on the loop stops too
            raise

    def _done(self, future: concurrent.futures.Future[Any]) -> None:
        self._calls.pop(future, None)

    def close(self, last: Coroutine[Any, Any, Any] | None = None) -> None:
        """Cancel the calls in flight (their callers get CancelledError), run `last` (the client's
        own close) once none is left, and stop the loop as `asyncio.run` ends one: its tasks still
        pending are cancelled and finish first, instead of being destroyed pending. Idempotent."""
        if self._forked():  # the parent's loop and connections: left to the parent, untouched
            self.loop = self._thread = None
            if last is not None:
                last.close()
            return
        with self._lock:
            loop, thread = self.loop, self._thread
            self.loop = self._thread = None
            if loop is None or thread is None:
                if last is not None:
                    last.close()
                return
            try:
                if thread.is_alive() and not loop.is_closed():
                    calls = set(self._calls.copy().values())  # its entries leave from the loop thread
                    _interruptible(asyncio.run_coroutine_threadsafe(_wind_down(calls, last), loop))
                elif last is not None:
                    last.close()
            finally:
                if not loop.is_closed():
                    loop.call_soon_threadsafe(loop.stop)
                thread.join(timeout=5)
                if not thread.is_alive() and not loop.is_closed():
                    loop.close()


async def _wind_down(calls: set[Coroutine[Any, Any, Any]], last: Coroutine[Any, Any, Any] | None) -> None:
    """On the loop: the calls' tasks cancelled and finished (each was created before this one ran,
    its submission queued first), then `last`, then whatever else is pending."""
    tasks = [task for task in asyncio.all_tasks() if task.get_coro() in calls]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    try:
        if last is not None:
            await last
    finally:
        await _cancel_tasks()


SIGNAL_CHECK = 0.2
"""Seconds at most between two looks for a signal (Ctrl-C) while the main thread waits for a call."""


def _interruptible(future: concurrent.futures.Future[T]) -> T:
    """The future's result, waited for in slices on the main thread so that Ctrl-C always ends the
    wait. A signal wakes a lock wait only when it lands on the waiting thread, after the wait began:
    one that lands on another thread (the loop's, the store's) or just before the wait blocks (a
    busy machine descheduling the thread there) only marks itself pending, and an unbounded wait
    would never look again: the script hung on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        return future.result()  # Python runs signal handlers on the main thread only
    while True:
        try:
            return future.result(timeout=SIGNAL_CHECK)
        except TimeoutError:
            if future.done():
                return future.result()  # the call's own outcome (its own TimeoutError too)
            # nothing came: the next slice begins with a look at pending signals


def _refuse_blocking_a_worker(what: str) -> None:
    """RuntimeError when this thread runs an event loop on which a Cairn worker runs: blocking it to
    wait for a run would stop the very worker that must run it (Jupyter, an async app, a test)."""
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:
        return  # a plain thread: blocking is what a script wants
    if any(task.get_name().startswith(WORKER_TASK) for task in asyncio.all_tasks(here)):
        raise RuntimeError(
            f"{what} cannot block here: this thread runs an event loop (Jupyter, an async app or test) on which "
            "a Cairn worker runs, and blocking that loop to wait would stop the worker that must run it, for "
            "ever. In async code use the async client and await: `await handle.result()`, "
            "`await client.run(...)` (cairn.connect()); or call the blocking client from another thread "
            "(`await asyncio.to_thread(...)`)"
        )


WORKER_TASK = "cairn-worker-"
"""How the main task of a `cairn.Worker` is named (`Worker.start`)."""


async def _cancel_tasks() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


class SyncRunHandle:
    def __init__(self, inner: RunHandle, bridge: LoopThread) -> None:
        self.inner = inner
        self.id = inner.id
        self._bridge = bridge

    def __repr__(self) -> str:
        return f"<SyncRunHandle {self.id}>"

    def __eq__(self, other: object) -> bool:  # as RunHandle's: the same run of the same database
        return isinstance(other, SyncRunHandle) and other.inner == self.inner

    def __hash__(self) -> int:
        return hash(self.inner)

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
        return self._bridge.run(self.inner.result(timeout), waits_for=f"the result of run {self.id}")

    def steps(self, after: int = 0, limit: int | None = None, *, last: int | None = None) -> list[StepInfo]:
        """As `RunHandle.steps`: all of them, a page (`after`, `limit`), or the `last` ones."""
        return self._bridge.run(self.inner.steps(after, limit, last=last))

    def properties(self, history: bool = False, *, last: int | None = None) -> Any:
        return self._bridge.run(self.inner.properties(history, last=last))

    def sizes(self) -> RunSizes:
        return self._bridge.run(self.inner.sizes())

    def logs(self) -> list[tuple[int, str, str]]:
        """As `RunHandle.logs`: (seq, step name, line) of every line the run's actions logged."""
        return self._bridge.run(self.inner.logs())

    def memory(self) -> dict[str, Any]:
        return self._bridge.run(self.inner.memory())

    def signal(self, name: str, payload: Any = None) -> None:
        self._bridge.run(self.inner.signal(name, payload))

    def diagnose(self) -> str | None:
        return self._bridge.run(self.inner.diagnose())

    def children(self, limit: int = 100) -> list[RunRow]:
        """As `RunHandle.children`: the runs this run started, oldest first, at most `limit`."""
        return self._bridge.run(self.inner.children(limit))

    def describe(self) -> RunRow:
        return self._bridge.run(self.inner.describe())

    def events(
        self, after: int = 0, limit: int | None = None, *, last: int | None = None, steps: range | None = None
    ) -> list[RunEvent]:
        """As `RunHandle.events`: all of them, a page (`after`, `limit`), the `last` ones, or those of `steps`."""
        return self._bridge.run(self.inner.events(after, limit, last=last, steps=steps))

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
    """`cairn.connect_sync(url)`: the same operations as `Client`, blocking. Each method is one
    bridge to the async one (tests/behaviour/test_client.py checks that none is missing)."""

    def __init__(
        self, url: str | None = None, *, client: Client | None = None, retention: timedelta | float | None = None
    ) -> None:
        if client is not None and retention is not None:
            raise ValueError("pass retention to the Client given as client=, not to SyncClient")
        self.inner = client or Client(url, retention=retention)  # a bad retention fails before the thread starts
        self._owns_inner = client is None
        """Whether closing this closes the async client too: not one given to it, which others use."""
        self._bridge = LoopThread()
        self.url = self.inner.url
        self.store = self.inner.store

    @property
    def retention(self) -> timedelta | None:
        """As `Client.retention`: how long workers keep finished runs; None: keep everything."""
        return self.inner.retention

    def __str__(self) -> str:
        return str(self.inner)  # the URL without its password, as the async client prints it

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the loop thread; a second close does nothing. As with
        the async client, using it again afterwards opens it again (close it again then)."""
        if self._bridge.running:
            self._bridge.close(self.inner.close() if self._owns_inner else None)

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
        return self._bridge.run(done, waits_for=f"run() of {getattr(workflow, '__name__', workflow)!r}")

    def list_queues(self) -> list[QueueRow]:
        return self._bridge.run(self.inner.list_queues())

    def get(self, run_id: str) -> SyncRunHandle:
        return SyncRunHandle(self.inner.get(run_id), self._bridge)

    def list_runs(self, status: str | RunStatus | None = None, workflow: Any = None, limit: int = 50) -> list[RunRow]:
        return self._bridge.run(self.inner.list_runs(status, workflow, limit))

    def unserved(self, run_ids: list[str] | None = None) -> dict[str, str]:
        """As `Client.unserved`: why each of these runs cannot progress, for those that cannot."""
        return self._bridge.run(self.inner.unserved(run_ids))

    def prune(self, older_than: timedelta | float, status: str | RunStatus | None = None) -> int:
        """As `Client.prune`: delete runs finished more than `older_than` ago; how many."""
        return self._bridge.run(self.inner.prune(older_than, status))

    # --- schedules (cairn.Schedule) --------------------------------------------------------------

    def create_schedule(self, schedule: Schedule | str, workflow: Any = None, /, **options: Any) -> None:
        """As `Client.create_schedule`: create (or update) a schedule in the database, given as a
        `cairn.Schedule(..., register=False)` or as its arguments."""
        self._bridge.run(self.inner.create_schedule(schedule, workflow, **options))

    def list_schedules(self) -> list[ScheduleRow]:
        """As `Client.list_schedules`: every schedule, its next tick and its last run."""
        return self._bridge.run(self.inner.list_schedules())

    def pause_schedule(self, schedule_id: str) -> None:
        """As `Client.pause_schedule`: no ticks fire until `resume_schedule`."""
        self._bridge.run(self.inner.pause_schedule(schedule_id))

    def resume_schedule(self, schedule_id: str) -> None:
        """As `Client.resume_schedule`: fire again, from the next tick after now."""
        self._bridge.run(self.inner.resume_schedule(schedule_id))

    def trigger_schedule(self, schedule_id: str) -> SyncRunHandle:
        """As `Client.trigger_schedule`: start a run of the schedule now, besides its ticks."""
        return SyncRunHandle(self._bridge.run(self.inner.trigger_schedule(schedule_id)), self._bridge)

    def delete_schedule(self, schedule_id: str) -> None:
        """As `Client.delete_schedule`: remove it (one declared in code comes back with its workers)."""
        self._bridge.run(self.inner.delete_schedule(schedule_id))

    def list_workflows(self) -> list[WorkflowInfo]:
        return self._bridge.run(self.inner.list_workflows())

    def list_actions(self) -> list[ActionInfo]:
        """As `Client.list_actions`: the actions workers registered."""
        return self._bridge.run(self.inner.list_actions())

    def runs_page(
        self,
        *,
        status: str | RunStatus | None = None,
        workflow: str | None = None,
        id_prefix: str | None = None,
        since: float | None = None,
        until: float | None = None,
        sort: str = "-created_at",
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunsPage:
        """As `Client.runs_page`: a page of runs by keyset; pass `next_cursor` back for the next."""
        page = self.inner.runs_page(
            status=status,
            workflow=workflow,
            id_prefix=id_prefix,
            since=since,
            until=until,
            sort=sort,
            limit=limit,
            cursor=cursor,
        )
        return self._bridge.run(page)

    def current_steps(self, run_ids: list[str]) -> dict[str, StepRow]:
        """As `Client.current_steps`: run id → the run's latest step."""
        return self._bridge.run(self.inner.current_steps(run_ids))

    def count_runs(
        self,
        workflow: str | None = None,
        *,
        id_prefix: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[str, int]:
        """As `Client.count_runs`: how many runs there are in each status."""
        return self._bridge.run(self.inner.count_runs(workflow, id_prefix=id_prefix, since=since, until=until))

    def run_counts(self, by: str) -> dict[str, dict[str, int]]:
        """As `Client.run_counts`: run counts per status for each workflow or each queue."""
        return self._bridge.run(self.inner.run_counts(by))

    def list_workers(self, seen_within: float = 60.0) -> list[WorkerInfo]:
        """As `Client.list_workers`: workers heard from within `seen_within` seconds."""
        return self._bridge.run(self.inner.list_workers(seen_within))

    def now(self) -> float:
        """As `Client.now`: the database's clock (epoch seconds)."""
        return self._bridge.run(self.inner.now())


def connect_sync(url: str | None = None, retention: timedelta | float | None = None) -> SyncClient:
    """The blocking client for scripts, shared per URL as `cairn.connect`'s is (a store and a loop
    thread of its own; close it when done, or use it as `with cairn.connect_sync(url) as client:`).
    `retention` as in `cairn.connect`: how long workers keep finished runs. Made anew at each call
    and never closed (`where_id(email, client=cairn.connect_sync())` in a loop), each kept a thread
    and its connections for the life of the process; `cairn.SyncClient(url)` makes one of your own.

    Any number of threads may share it. `handle.result(timeout=...)` raises `TimeoutError` when the
    run has not finished in time; Ctrl-C interrupts a wait. Closing twice is harmless, and a closed
    client opens again when used (as the async client does). Inside a running event loop (Jupyter,
    async code) it works but blocks that loop while it waits; waiting for a run (`result`, `run`)
    on the loop a Cairn worker runs on, which could then never run it, is a `RuntimeError`: await
    the async client there instead."""
    key = (resolve_url(url), retention_of(retention))  # a bad retention fails here, before any thread
    with _shared_lock:
        client = _shared.get(key)
        if client is None:
            client = _shared[key] = SyncClient(key[0], retention=retention)
        return client


_shared: dict[tuple[str, timedelta | None], SyncClient] = {}
"""The blocking clients `connect_sync` made, by URL and retention (as the environment says it when
none is given)."""
_shared_lock = threading.Lock()


_bridges: weakref.WeakSet[LoopThread] = weakref.WeakSet()


def _forget_in_a_forked_child() -> None:
    global _shared_lock
    _shared.clear()  # the parent's: a child of a fork gets its own (see cairn.forks)
    _shared_lock = threading.Lock()
    for bridge in _bridges:  # another thread of the parent may have held one at the fork
        bridge._lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_a_forked_child)
