"""The database threads of a store: a thread pool whose threads do not hold the process at exit.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits. A call stuck
in the database (SQLite waiting for a write lock another process holds, up to its busy timeout;
a PostgreSQL statement behind another session's lock) then kept a process alive after Ctrl-C had
printed its message and the program had ended, for as long as the call lasted. A transaction cut
off by the exit is rolled back by the database, as one cut off by a crash: nothing it wrote is
seen, so there is nothing to wait for.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

T = TypeVar("T")
P = ParamSpec("P")
_Item = tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(concurrent.futures.Executor):
    """Up to `max_workers` daemon threads, started as work comes, taking work in the order given."""

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self._max_workers = max_workers
        self._prefix = thread_name_prefix
        self._work: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        """Released by a thread each time it is done with a piece of work and waits for the next."""
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._max_workers:
                thread = threading.Thread(
                    target=_serve,
                    args=(self._work, self._idle),
                    name=f"{self._prefix}_{len(self._threads)}",
                    daemon=True,
                )
                thread.start()
                self._threads.append(thread)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As `ThreadPoolExecutor.shutdown`: work given before it is done (or cancelled, with
        `cancel_futures`), then the threads end."""
        with self._lock:
            if not self._shut:
                self._shut = True
                if cancel_futures:
                    _cancel_queued(self._work)
                for _ in self._threads:
                    self._work.put(None)  # after the work given before: each thread takes one and ends
            threads = list(self._threads)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()


def _serve(work: queue.SimpleQueue[_Item | None], idle: threading.Semaphore) -> None:
    """A thread's loop (it holds no reference to its pool, which may be dropped unshut)."""
    while True:
        item = work.get()
        if item is None:
            return
        future, fn, args, kwargs = item
        del item
        if future.set_running_or_notify_cancel():
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # as ThreadPoolExecutor: the caller gets what was raised
                future.set_exception(exc)
                del exc
            else:
                future.set_result(result)
                del result
        del future, fn, args, kwargs
        idle.release()


def _cancel_queued(work: queue.SimpleQueue[_Item | None]) -> None:
    kept: list[None] = []
    while True:
        try:
            item = work.get_nowait()
        except queue.Empty:
            break
        if item is None:
            kept.append(None)
        else:
            item[0].cancel()
    for sentinel in kept:
        work.put(sentinel)
