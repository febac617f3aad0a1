"""The store's thread pool keeps ThreadPoolExecutor's contract, with threads that do not hold the
process at exit (see tests/process/test_stuck_exit.py for why)."""

from __future__ import annotations

import concurrent.futures
import threading

import pytest

from cairn.store.daemon_pool import DaemonThreadPool


def test_work_runs_in_order_on_daemon_threads_and_errors_reach_the_caller() -> None:
    pool = DaemonThreadPool(1, thread_name_prefix="t")
    seen: list[int] = []
    futures = [pool.submit(seen.append, i) for i in range(50)]
    failing = pool.submit(int, "not a number")
    assert pool.submit(lambda: threading.current_thread().daemon).result(timeout=5) is True
    assert [f.result(timeout=5) for f in futures] == [None] * 50 and seen == list(range(50))
    with pytest.raises(ValueError):
        failing.result(timeout=5)
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(int, "1")


def test_threads_grow_to_the_limit_only_when_all_are_busy() -> None:
    pool = DaemonThreadPool(3, thread_name_prefix="t")
    gate = threading.Event()
    names: set[str] = set()

    def held() -> None:
        names.add(threading.current_thread().name)
        gate.wait(5)

    busy = [pool.submit(held) for _ in range(5)]  # 3 threads at most; 2 wait for one
    gate.set()
    concurrent.futures.wait(busy, timeout=5)
    assert names == {"t_0", "t_1", "t_2"}
    for _ in range(20):  # one at a time: an idle thread takes it, none is added
        pool.submit(int, "1").result(timeout=5)
    assert len(pool._threads) == 3
    pool.shutdown(wait=True)
    assert not any(t.is_alive() for t in pool._threads)


def test_shutdown_finishes_what_was_given_or_cancels_it() -> None:
    pool = DaemonThreadPool(1, thread_name_prefix="t")
    gate = threading.Event()
    first = pool.submit(gate.wait, 5)
    queued = [pool.submit(int, str(i)) for i in range(3)]
    gate.set()
    pool.shutdown(wait=True)
    assert first.result() is True and [f.result() for f in queued] == [0, 1, 2]

    pool = DaemonThreadPool(1, thread_name_prefix="t")
    gate.clear()
    taken = threading.Event()

    def hold() -> bool:
        taken.set()
        return gate.wait(5)

    first = pool.submit(hold)
    assert taken.wait(5)  # the thread has it: only what waits behind it can be cancelled
    queued = [pool.submit(int, str(i)) for i in range(3)]
    pool.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    gate.set()
    assert first.result(timeout=5) is True
    pool._threads[0].join(5)
    assert not pool._threads[0].is_alive()
