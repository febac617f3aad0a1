"""The deterministic asyncio event loop that workflow code runs on.

Workflows are ordinary asyncio code, so `asyncio.gather`, `create_task`, `wait`, `wait_for` and
`sleep` must keep working; but their outcome must depend only on the journal. We therefore own
the loop (the technique of Temporal's Python SDK): a ready queue drained in FIFO order, a clock
that is the run's logical time, `call_at`/`call_later` turned into durable timer steps, and every
I/O method (sockets, pipes, subprocesses, executors, signals) raising WorkflowSandboxError.

Rejected alternatives: running workflow coroutines on the worker's real loop (timers would be
real, and scheduling order would depend on unrelated I/O), and driving coroutines by hand with
`send()` (it breaks asyncio.gather and friends, which need a loop and Tasks).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import hashlib
import logging
import math
import sys
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from cairn.engine import sandbox
from cairn.errors import WorkflowSandboxError

if TYPE_CHECKING:
    from cairn.engine.runtime import Runtime

log = logging.getLogger("cairn.workflow")

_IO_HINT = "workflow code must be deterministic: do I/O in an action and await it from the workflow"


_ENDLESS_TIMER = (
    "a workflow's timer cannot wait for ever (asyncio.sleep(math.inf), or an infinite timeout of "
    "asyncio.wait_for or asyncio.timeout): a durable timer is stored with the time it is due; leave "
    "the timeout out (None), or wait for a signal, to wait without end"
)
_NAN_TIMER = (
    "a workflow's timer cannot wait nan seconds (asyncio.sleep, or the timeout of asyncio.wait_for or "
    "asyncio.timeout): give a number of seconds"
)


class DurableTimerHandle(asyncio.TimerHandle):
    """A timer whose firing is a journal step; cancelling it cancels the step."""

    def __init__(
        self,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: DeterministicLoop,
        context: contextvars.Context | None,
        seq: int,
    ) -> None:
        super().__init__(when, callback, args, loop, context=context)
        self.seq = seq

    def cancel(self) -> None:
        if not self.cancelled():
            self._loop_ref.runtime.cancel_timer(self.seq)
        super().cancel()

    @property
    def _loop_ref(self) -> DeterministicLoop:
        loop = getattr(self, "_loop", None)
        assert isinstance(loop, DeterministicLoop)
        return loop


class _NumberedHash:
    """Hashed by `DeterministicLoop.next_hash` (see there), for the futures and tasks of workflow code."""

    __slots__ = ()
    _cairn_hash: int  # a slot of each subclass

    def __hash__(self) -> int:
        try:
            return self._cairn_hash
        except AttributeError:
            self._cairn_hash = workflow_hash(self, self.get_loop())  # type: ignore[misc, attr-defined]
            return self._cairn_hash


class WorkflowFuture(_NumberedHash, asyncio.Future[Any]):
    __slots__ = ("_cairn_hash",)


class WorkflowTask(_NumberedHash, asyncio.Task[Any]):
    __slots__ = ("_cairn_hash",)


class WorkflowGatheringFuture(_NumberedHash, asyncio.tasks._GatheringFuture):  # type: ignore[name-defined, misc]
    """What `asyncio.gather` returns, numbered too: it builds its future itself, not through the
    loop's `create_future`, and hashed by address it came out of `asyncio.wait`'s `done` set in
    another place on each replay (put in as asyncio's own, see `DeterministicLoop.__init__`)."""


def workflow_hash(obj: object, loop: object = None) -> int:
    """The hash of `obj` (a task, a future, an action or child call) on workflow `loop` (the running
    one by default): the loop's next (see `next_hash`); its address anywhere else."""
    if loop is None:
        loop = asyncio.events._get_running_loop()
    return loop.next_hash() if isinstance(loop, DeterministicLoop) else object.__hash__(obj)


_as_completed = asyncio.tasks.as_completed
_GatheringFuture = asyncio.tasks._GatheringFuture  # type: ignore[attr-defined]


def _as_completed_in_order(fs: Any, *, timeout: float | None = None) -> Any:
    """`asyncio.as_completed`, which starts what it is given in the order of `set(fs)`: for the
    workflow's own coroutines (hashed by address) an order that differs from one replay to the
    next, numbering their steps differently. On a workflow's loop they are made tasks first, in
    the order given (tasks, like action calls, hash by the run's numbering); elsewhere unchanged.
    Code that bound `from asyncio import as_completed` before Cairn was imported keeps the original."""
    loop = asyncio.events._get_running_loop()
    if isinstance(loop, DeterministicLoop) and not (asyncio.isfuture(fs) or asyncio.iscoroutine(fs)):
        fs = [asyncio.ensure_future(f) for f in dict.fromkeys(fs)]
    return _as_completed(fs, timeout=timeout)


class DeterministicLoop(asyncio.AbstractEventLoop):
    def __init__(self, runtime: Runtime) -> None:
        if asyncio.as_completed is _as_completed:
            asyncio.as_completed = asyncio.tasks.as_completed = _as_completed_in_order
        if asyncio.tasks._GatheringFuture is _GatheringFuture:  # type: ignore[attr-defined]
            asyncio.tasks._GatheringFuture = WorkflowGatheringFuture  # type: ignore[attr-defined]
        self.runtime = runtime
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._time = 0.0
        self._closed = False
        self._running = False
        self._exception: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        """Its unfinished tasks, held: a task only a cycle kept (its step cancelled as the run ended)
        was destroyed by the garbage collector, whenever it ran, and its `finally` ran then, in
        whichever run's activation was on: its action was recorded in that other run's journal.
        Held, a task is unwound by `WorkflowInstance.close` only, as workflow code of its own run."""
        self._hash_base = int.from_bytes(hashlib.blake2b(runtime.run_id.encode(), digest_size=7).digest(), "big")
        self._hashes = 0

    def next_hash(self) -> int:
        """The hash of the next task, future or call that workflow code hashes. Hashed by address
        (the default), a set of them iterates in an order that differs from one replay to the next:
        the `done` set `asyncio.wait` returns, the tasks a TaskGroup cancels, the calls
        `asyncio.as_completed` starts. Numbered in the order the run first hashes them, they iterate
        alike on every worker. (The run id seeds the numbers, so that the tasks of the many runs a
        worker holds do not all collide in asyncio's process-wide set of tasks.)"""
        self._hashes += 1
        return hash((self._hash_base, self._hashes))

    # --- driving -----------------------------------------------------------------------------

    def set_time(self, now: float) -> None:
        self._time = now

    def run_until_quiescent(self) -> None:
        """Run callbacks until nothing is ready; the real running loop is restored afterwards."""
        with self.as_running():
            self._run_ready()

    @contextlib.contextmanager
    def as_running(self) -> Iterator[None]:
        """Workflow code's surroundings: this loop the running one (so a durable call finds the run),
        its async generators finalized here (`_finalize_asyncgen`), and the sandbox on. The real
        running loop and its hooks are put back afterwards."""
        outer = asyncio.events._get_running_loop()
        hooks = sys.get_asyncgen_hooks()
        asyncio.events._set_running_loop(self)
        sys.set_asyncgen_hooks(firstiter=None, finalizer=self._finalize_asyncgen)
        try:
            with sandbox.guarded():
                yield
        finally:
            sys.set_asyncgen_hooks(*hooks)
            asyncio.events._set_running_loop(outer)

    def _finalize_asyncgen(self, agen: AsyncGenerator[Any, Any]) -> None:
        """An async generator of the workflow's, left before its end (a `break` out of `async for`),
        is closed as a task of the workflow, so that its `finally` is workflow code: journaled,
        sandboxed, alike on every replay. Bound at its first iteration, this hook was the worker's
        real loop's, which closed it there: an action in its `finally` ran for real, unrecorded,
        again at each replay. A run dropped from memory runs nothing of it (`runtime.closed`)."""
        if not self._closed and not self.runtime.closed:
            self.call_soon(self.create_task, agen.aclose())

    def _run_ready(self) -> None:
        self._running = True
        try:
            while self._ready:
                handle = self._ready.popleft()
                if not handle._cancelled:
                    # Raised by workflow code (`sys.exit()`), these two are let out of a task's step
                    # after being made its outcome (the run fails on it). Let out here, they would
                    # end the worker process, and every worker that took the run next.
                    with contextlib.suppress(SystemExit, KeyboardInterrupt):
                        handle._run()
        finally:
            self._running = False

    def fire(self, handle: asyncio.TimerHandle) -> None:
        if not handle.cancelled():
            self._ready.append(handle)

    # --- the scheduling API asyncio needs ----------------------------------------------------

    def call_soon(  # type: ignore[override]
        self, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context=context)
        self._ready.append(handle)
        return handle

    call_soon_threadsafe = call_soon  # type: ignore[assignment]

    def call_later(  # type: ignore[override]
        self, delay: float, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        if delay != delay or delay == math.inf:
            raise ValueError(_NAN_TIMER if delay != delay else _ENDLESS_TIMER)
        return self.call_at(self._time + max(0.0, delay), callback, *args, context=context)

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., object], *args: Any, context: contextvars.Context | None = None
    ) -> asyncio.TimerHandle:
        if when != when:  # a durable timer due at NaN: stored as no time at all, it fired at once
            raise ValueError(_NAN_TIMER)
        if when == math.inf:  # a due time the database cannot store: PostgreSQL refused the commit
            raise ValueError(_ENDLESS_TIMER)
        return self.runtime.start_timer(when, lambda seq: DurableTimerHandle(when, callback, args, self, context, seq))

    def time(self) -> float:
        return self._time

    def create_future(self) -> asyncio.Future[Any]:
        return WorkflowFuture(loop=self)

    def create_task(self, coro: Any, *, name: str | None = None, context: Any = None) -> asyncio.Task[Any]:
        task = WorkflowTask(coro, loop=self, name=name, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def pending_tasks(self) -> list[asyncio.Task[Any]]:
        """This loop's unfinished tasks. (`asyncio.all_tasks(loop)` walks every task of the process,
        which with a thousand runs in memory made closing one of them cost milliseconds.)"""
        return [task for task in self._tasks if not task.done()]

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()
        self._tasks.clear()

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        """What asyncio's default handler logs (an exception in a callback, a task's exception never
        retrieved), logged for the run, once: not again on each replay of it."""
        if self._closed or self.runtime.closed or self.runtime.replaying:
            return
        exc = context.get("exception")
        log.warning(
            "run %s: %s",
            self.runtime.run_id,
            context.get("message") or "exception in workflow code",
            exc_info=(type(exc), exc, exc.__traceback__) if isinstance(exc, BaseException) else None,
        )

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self.call_exception_handler(context)

    def get_exception_handler(self) -> None:
        return None

    def set_exception_handler(self, handler: Any) -> None:
        raise WorkflowSandboxError("workflows cannot replace the event loop's exception handler")

    def get_task_factory(self) -> None:
        return None

    def set_task_factory(self, factory: Any) -> None:
        raise WorkflowSandboxError("workflows cannot replace the event loop's task factory")

    def set_debug(self, enabled: bool) -> None:
        pass

    async def shutdown_asyncgens(self) -> None:
        pass

    async def shutdown_default_executor(self, timeout: float | None = None) -> None:
        pass

    # --- everything that would touch the world ------------------------------------------------

    def _io(self, what: str) -> NoReturn:
        raise WorkflowSandboxError(f"{what} is not available inside a workflow; {_IO_HINT}")

    def run_forever(self) -> None:
        self._io("run_forever")

    def run_until_complete(self, future: Any) -> Any:
        self._io("run_until_complete")

    def stop(self) -> None:
        self._io("stop")

    def run_in_executor(self, executor: Any, func: Any, *args: Any) -> Any:  # type: ignore[override]
        self._io("run_in_executor (threads)")

    def set_default_executor(self, executor: Any) -> None:
        self._io("set_default_executor")

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        self._io("getaddrinfo (DNS)")

    async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
        self._io("getnameinfo (DNS)")

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        self._io("create_connection (sockets)")

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        self._io("create_server (sockets)")

    async def create_datagram_endpoint(self, *args: Any, **kwargs: Any) -> Any:
        self._io("create_datagram_endpoint (sockets)")

    async def create_unix_connection(self, *args: Any, **kwargs: Any) -> Any:
        self._io("create_unix_connection (sockets)")

    async def create_unix_server(self, *args: Any, **kwargs: Any) -> Any:
        self._io("create_unix_server (sockets)")

    async def sock_recv(self, *args: Any, **kwargs: Any) -> Any:
        self._io("sock_recv (sockets)")

    async def sock_sendall(self, *args: Any, **kwargs: Any) -> Any:
        self._io("sock_sendall (sockets)")

    async def sock_connect(self, *args: Any, **kwargs: Any) -> Any:
        self._io("sock_connect (sockets)")

    async def sock_accept(self, *args: Any, **kwargs: Any) -> Any:
        self._io("sock_accept (sockets)")

    async def sendfile(self, *args: Any, **kwargs: Any) -> Any:
        self._io("sendfile (files)")

    async def start_tls(self, *args: Any, **kwargs: Any) -> Any:
        self._io("start_tls (sockets)")

    async def connect_read_pipe(self, *args: Any, **kwargs: Any) -> Any:
        self._io("connect_read_pipe (pipes)")

    async def connect_write_pipe(self, *args: Any, **kwargs: Any) -> Any:
        self._io("connect_write_pipe (pipes)")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        self._io("subprocess_exec (subprocesses)")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        self._io("subprocess_shell (subprocesses)")

    def add_reader(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self._io("add_reader (file descriptors)")

    def add_writer(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self._io("add_writer (file descriptors)")

    def add_signal_handler(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self._io("add_signal_handler (OS signals)")

    def remove_reader(self, fd: Any) -> bool:
        self._io("remove_reader (file descriptors)")

    def remove_writer(self, fd: Any) -> bool:
        self._io("remove_writer (file descriptors)")

    def remove_signal_handler(self, sig: int) -> bool:
        self._io("remove_signal_handler (OS signals)")

    async def sock_recv_into(self, *args: Any, **kwargs: Any) -> Any:
        self._io("sock_recv_into (sockets)")

    async def sock_recvfrom(self, *args: Any, **kwargs: Any) -> Any:
        self._io("sock_recvfrom (sockets)")

    async def sock_recvfrom_into(self, *args: Any, **kwargs: Any) -> Any:
        self._io("sock_recvfrom_into (sockets)")

    async def sock_sendto(self, *args: Any, **kwargs: Any) -> Any:
        self._io("sock_sendto (sockets)")

    async def sock_sendfile(self, *args: Any, **kwargs: Any) -> Any:
        self._io("sock_sendfile (sockets)")

    async def connect_accepted_socket(self, *args: Any, **kwargs: Any) -> Any:
        self._io("connect_accepted_socket (sockets)")
