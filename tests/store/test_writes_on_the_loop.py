"""Writes that run on the event loop (SQLite's, when its writer is free) keep what the hop to a
thread gave for free: the loop still turns for everything else during a loop of starts, and a
blocking client's loop on another thread never shares the writer's connection mid-transaction."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn.client.sync import SyncClient
from cairn.store.sqlite import SqliteDatabase
from tests import flows
from tests.helpers import sqlite_db

pytestmark = pytest.mark.timeout(120)


async def test_a_loop_of_starts_leaves_the_event_loop_to_the_rest(client: cairn.Client) -> None:
    await client.store.open()
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    for i in range(2000):
        await client.start(flows.function_style, i)
    stop.set()
    await ticking
    assert len(gaps) > 20, f"the loop turned {len(gaps)} times in 2,000 starts"
    # A hop to a thread yielded at every write; writes on the loop yield every 5 ms (LOOP_SHARE):
    # a gap is at most that and one start, here with room for a slow machine.
    assert max(gaps) < 0.25, f"the loop was held for {max(gaps) * 1000:.0f} ms without a turn"


async def test_a_blocking_client_on_another_thread_writes_beside_the_loop(client: cairn.Client) -> None:
    await client.store.open()
    blocking = SyncClient(client=client)  # the same store, another loop and thread
    errors: list[BaseException] = []

    def starts() -> None:
        try:
            for i in range(300):
                blocking.start(flows.function_style, i, id=f"thread-{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=starts)
    thread.start()
    try:
        for i in range(300):
            await client.start(flows.function_style, i, id=f"loop-{i}")
    finally:
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        blocking._bridge.close()
    assert errors == []
    assert await client.store.count_runs(cairn.RunStatus.PENDING) == 600


async def test_an_in_memory_database_reads_and_writes_on_one_connection_one_at_a_time() -> None:
    """`:memory:` has no reader connection: its reads go to the writer's, on its thread, and the
    loop's writes wait their turn rather than share the connection mid-transaction."""
    client = cairn.Client("sqlite:///:memory:")
    try:
        await client.store.open()

        async def start_and_read(i: int) -> str | None:
            handle = await client.start(flows.function_style, i, id=f"m-{i}")
            row = await client.store.get_run(handle.id)
            return None if row is None else row.id

        ids = await asyncio.gather(*(start_and_read(i) for i in range(500)))
        assert ids == [f"m-{i}" for i in range(500)]
    finally:
        await client.close()


# --- the thread is for waiting on another process, and only for as long as it must ----------------


def _threads_of_writes(db: SqliteDatabase) -> list[str]:
    """The thread each write transaction of `db` ran on from now on, in order of commit."""
    ran: list[str] = []
    run = db._run

    def spy(fn: Any, write: bool, wait: bool = True) -> Any:
        done = run(fn, write, wait)
        if write:
            ran.append(threading.current_thread().name)
        return done

    db._run = spy  # type: ignore[method-assign]
    return ran


@pytest.fixture
async def on_file(tmp_path: Path) -> AsyncIterator[cairn.Client]:
    client = cairn.Client(f"sqlite:///{tmp_path}/loop.db")
    await client.store.open()
    yield client
    await client.close()


async def test_writes_come_back_to_the_loop_once_another_process_lets_go(on_file: cairn.Client, tmp_path: Path) -> None:
    """Another process holds the write lock: the write that meets it waits on the thread, and the
    writes that come meanwhile wait for it, then run on the loop. (They queued behind it on the
    thread, and under a steady load the thread always had the next one in hand: one such lock
    halved a busy worker's throughput for the rest of its run.)"""
    db = sqlite_db(on_file)
    other = sqlite3.connect(f"{tmp_path}/loop.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ran = _threads_of_writes(db)
    try:
        first = asyncio.ensure_future(on_file.start(flows.function_style, 0, id="first"))
        for _ in range(1000):  # until the first start is on the thread, waiting for the lock
            if db._on_thread:
                break
            await asyncio.sleep(0)
        assert db._on_thread == 1
        meanwhile = [asyncio.ensure_future(on_file.start(flows.function_style, i, id=f"m-{i}")) for i in range(20)]
        for _ in range(10):
            await asyncio.sleep(0)  # every one of them has come to its wait
        assert db._on_thread == 1, f"{db._on_thread - 1} writes went to the thread behind the first"
        assert ran == []
    finally:
        other.execute("COMMIT")
        other.close()
    await asyncio.gather(first, *meanwhile)
    await asyncio.gather(*(on_file.start(flows.function_style, i, id=f"a-{i}") for i in range(20)))
    on_thread = [name for name in ran if name != "MainThread"]
    assert len(on_thread) == 1, f"{len(on_thread)} of {len(ran)} writes ran on the thread: {ran}"
    assert await on_file.store.count_runs(cairn.RunStatus.PENDING) == 41


async def _starts_beside(client: cairn.Client, beside: Callable[[], None], done: threading.Event) -> None:
    """2,000 starts from 40 concurrent loops, with `beside` running on a thread until they landed
    (then `done` is set); all of them land."""
    thread = threading.Thread(target=beside)
    thread.start()

    async def starter(k: int) -> None:
        for i in range(50):
            await client.start(flows.function_style, i, id=f"s-{k}-{i}")

    try:
        await asyncio.gather(*(starter(k) for k in range(40)))
    finally:
        done.set()
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
    assert await client.store.count_runs(cairn.RunStatus.PENDING) == 2000


async def test_randomized_locks_of_another_process_send_one_write_each_to_the_thread(
    on_file: cairn.Client, tmp_path: Path
) -> None:
    """2,000 starts from 40 concurrent loops while another process takes the write lock at random
    moments for random spells: every start lands, and each spell sends at most one write to the
    thread (before, every write after the first spell's went there)."""
    db = sqlite_db(on_file)
    ran = _threads_of_writes(db)
    done = threading.Event()
    spells = 0

    def other_process() -> None:
        nonlocal spells
        rng = random.Random(18)
        other = sqlite3.connect(f"{tmp_path}/loop.db", isolation_level=None, timeout=30)
        try:
            while not done.is_set():
                time.sleep(rng.uniform(0, 0.004))  # load shaping, not synchronisation
                other.execute("BEGIN IMMEDIATE")
                spells += 1
                time.sleep(rng.uniform(0.0002, 0.002))
                other.execute("COMMIT")
        finally:
            other.close()

    await _starts_beside(on_file, other_process, done)
    on_thread = sum(name != "MainThread" for name in ran)
    assert spells >= 5, f"the other process took the lock only {spells} times"
    assert on_thread <= spells, f"{on_thread} of {len(ran)} writes ran on the thread for {spells} spells"


async def test_a_look_of_the_watcher_does_not_send_a_write_to_the_thread(on_file: cairn.Client) -> None:
    """The watcher holds the writer's connection for a look (microseconds): a write on the loop
    that comes meanwhile waits for it rather than go to the thread. Forced: the look holds until
    the write is waiting for it."""
    db = sqlite_db(on_file)
    ran = _threads_of_writes(db)
    waiting = threading.Event()
    lock = db._writing

    class Watched:
        """The writer's lock, telling when someone waits for it."""

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if blocking:
                waiting.set()
            return lock.acquire(blocking, timeout)

        def release(self) -> None:
            lock.release()

        def __enter__(self) -> None:  # as the close takes it
            self.acquire()

        def __exit__(self, *exc: object) -> None:
            self.release()

    def look() -> None:
        with lock:
            waiting.wait(10)  # until the write waits (it went to the thread: 10 s, then failed)

    db._writing = Watched()  # type: ignore[assignment]
    looker = threading.Thread(target=look)
    looker.start()
    try:
        for _ in range(1000):
            if lock.locked():
                break
            await asyncio.sleep(0)
        await on_file.start(flows.function_style, 1)
    finally:
        waiting.set()
        await asyncio.get_running_loop().run_in_executor(None, looker.join)
    assert ran == ["MainThread"], f"the write ran on {ran} instead of the loop"


async def test_randomized_looks_leave_the_writes_on_the_loop(on_file: cairn.Client) -> None:
    """2,000 starts from 40 concurrent loops while a watcher's looks come at random moments: the
    writes that meet one wait for it and stay on the loop. Each look here holds the writer's
    connection for up to half a millisecond, as `_look` holds it (a real look takes microseconds,
    and a busy loop leaves it few chances: the window is widened so that writes meet looks)."""
    db = sqlite_db(on_file)
    ran = _threads_of_writes(db)
    lock = db._writing
    done = threading.Event()
    looks = 0

    def watcher() -> None:
        nonlocal looks
        rng = random.Random(19)
        while not done.is_set():
            time.sleep(rng.uniform(0, 0.001))  # load shaping, not synchronisation
            with lock:
                looks += 1
                time.sleep(rng.uniform(0, 0.0005))

    await _starts_beside(on_file, watcher, done)
    assert looks > 50, f"the watcher looked only {looks} times"
    on_thread = sum(name != "MainThread" for name in ran)
    assert on_thread <= len(ran) // 100, f"{on_thread} of {len(ran)} writes ran on the thread ({looks} looks)"


async def test_a_write_cancelled_on_its_way_to_the_thread_does_not_hold_back_the_next(tmp_path: Path) -> None:
    """The writes that wait for the thread's to be done are not left waiting by one that was
    cancelled before the thread took it (`:memory:`'s reads go to the writer's thread)."""
    client = cairn.Client("sqlite:///:memory:")
    try:
        await client.store.open()
        db = sqlite_db(client)
        assert db._executor is not None
        busy = threading.Event()
        blocker = db._executor.submit(busy.wait, 30)  # the thread busy with something else
        queued = asyncio.ensure_future(client.store.get_run("nobody"))
        for _ in range(1000):
            if db._on_thread:
                break
            await asyncio.sleep(0)
        assert db._on_thread == 1
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        busy.set()
        await asyncio.wrap_future(blocker)
        handle = await asyncio.wait_for(client.start(flows.function_style, 1, id="after"), 10)
        assert handle.id == "after"
        assert db._on_thread == 0
    finally:
        await client.close()


async def test_a_write_cancelled_while_it_waits_for_another_process_lets_the_next_go(
    on_file: cairn.Client, tmp_path: Path
) -> None:
    db = sqlite_db(on_file)
    other = sqlite3.connect(f"{tmp_path}/loop.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        first = asyncio.ensure_future(on_file.start(flows.function_style, 0, id="first"))
        for _ in range(1000):
            if db._on_thread:
                break
            await asyncio.sleep(0)
        assert db._on_thread == 1
        nxt = asyncio.ensure_future(on_file.start(flows.function_style, 1, id="next"))
        first.cancel()
    finally:
        other.execute("COMMIT")
        other.close()
    handle = await asyncio.wait_for(nxt, 10)
    assert handle.id == "next"


async def test_the_loop_of_starts_users_write_commits_on_the_loop(on_file: cairn.Client) -> None:
    """The naive shape of `cairn bench` (a worker in the process, a loop of starts, then the results
    gathered): its commits stay on the event loop. A watcher's look that sent one write to the
    thread sent every later one there too, and the loop ran at half speed unseen by any test."""
    from cairn.bench import flows as bench_flows

    db = sqlite_db(on_file)
    ran = _threads_of_writes(db)
    async with cairn.Worker(on_file):
        handles = [await on_file.start(bench_flows.three_steps, i) for i in range(500)]
        results = await asyncio.gather(*(h.result(timeout=60) for h in handles))
    assert results == [i + 3 for i in range(500)]
    on_thread = sum(name != "MainThread" for name in ran)
    assert on_thread <= len(ran) // 100, f"{on_thread} of {len(ran)} writes ran on the thread"
