"""The blocking client (`cairn.connect_sync`) as scripts, thread pools and notebooks use it, on both
backends with a real worker: every operation a script needs, many threads at once on one client,
calls from inside a running event loop (Jupyter) that either work or fail at once with a message
(never a wait for ever), close and reuse, result timeouts and Ctrl-C."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn import RunStatus
from tests.helpers import ctrl_c_once_ready, script_env

ROOT = Path(__file__).resolve().parents[2]


@cairn.action
async def double(n: int) -> int:
    return 2 * n


@cairn.workflow
async def doubling(n: int) -> int:
    return await double(n)


@cairn.workflow
class Approval(cairn.Workflow):
    async def run(self, order: str) -> str:
        self.state = "waiting"
        decision = await cairn.wait_for_signal("decide")
        self.state = "decided"
        cairn.memory.add(key="by", value=decision["by"])
        return f"{order} {decision['verdict']} by {decision['by']}"


def _loop_threads() -> int:
    return sum(t.name == "cairn-sync-client" for t in threading.enumerate())


@pytest.fixture
def served(db_url: str) -> Iterator[str]:
    """A worker on its own thread's event loop, as another process would serve a script's runs."""
    stop = threading.Event()
    up = threading.Event()

    async def serve() -> None:
        client = cairn.Client(db_url)
        try:
            async with cairn.Worker(client, poll_interval=0.05):
                up.set()
                await asyncio.to_thread(stop.wait)
        finally:
            await client.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="audit-worker")
    thread.start()
    assert up.wait(30)
    yield db_url
    stop.set()
    thread.join(30)


def test_a_script_starts_controls_signals_and_reads_runs(served: str) -> None:
    with cairn.connect_sync(served) as sync:
        assert sync.run(doubling, 21, timeout=10) == 42
        handle = sync.start(Approval, "o-1", id="approval-o-1")
        assert handle.created and handle.status() in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)
        assert handle.pause() == RunStatus.PAUSED
        handle.signal("decide", {"verdict": "approved", "by": "ada"})  # kept while paused
        with pytest.raises(TimeoutError):
            handle.result(timeout=0.3)  # paused: it takes no step
        handle.resume()
        assert handle.result(timeout=10) == "o-1 approved by ada"
        assert handle.properties() == {"state": "decided"}
        assert handle.memory() == {"by": "ada"}
        assert [s.kind for s in handle.steps()] == ["signal", "memory"]
        assert any(e.kind for e in handle.events())
        doomed = sync.start(Approval, "o-2")
        assert doomed.cancel() == RunStatus.CANCELLED
        with pytest.raises(cairn.WorkflowCancelled):
            doomed.result(timeout=10)
        assert {r.id for r in sync.list_runs(status="completed", workflow=Approval)} == {"approval-o-1"}
        assert [r.id for r in sync.list_runs(status="cancelled")] == [doomed.id]
        again = sync.get("approval-o-1")
        assert isinstance(again, cairn.SyncRunHandle) and again.result(timeout=1) == "o-1 approved by ada"


def test_many_threads_share_one_blocking_client_and_its_one_loop_thread(served: str) -> None:
    before = _loop_threads()
    with cairn.connect_sync(served) as sync:

        def work(n: int) -> list[int]:
            handles = [sync.start(doubling, n * 10 + i) for i in range(3)]
            return [h.result(timeout=20) for h in handles] + [sync.run(doubling, n, timeout=20)]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(work, range(8)))
        assert results == [[2 * (n * 10 + i) for i in range(3)] + [2 * n] for n in range(8)]
        assert _loop_threads() == before + 1
        assert len(sync.list_runs(limit=100)) == 32
    assert _loop_threads() == before


def test_close_twice_and_reuse_after_close_as_the_async_client_allows(served: str) -> None:
    """A second close (or a `with` block's end after close()) raised "Event loop is closed", and so
    did any use after close; the async client allows both (its store opens again when used)."""
    before = _loop_threads()
    sync = cairn.connect_sync(served)
    assert sync.run(doubling, 1, timeout=10) == 2
    sync.close()
    sync.close()
    assert _loop_threads() == before
    assert sync.run(doubling, 2, timeout=10) == 4  # open again
    handle = sync.start(doubling, 3)
    with sync:
        assert handle.result(timeout=10) == 6
    assert _loop_threads() == before
    sync.close()


def test_connect_sync_in_a_loop_shares_one_client_per_url(db_url: str) -> None:
    """`where_id(email, client=cairn.connect_sync()).pause()` in a loop, as the Zenaton guide shows:
    each call made a client whose thread and connections lived as long as the process (on
    PostgreSQL the server ran out of connections after about 20)."""
    before = _loop_threads()
    clients = {id(cairn.connect_sync(db_url)) for _ in range(20)}
    for _ in range(20):
        assert cairn.connect_sync(db_url).list_runs() == []
    assert len(clients) == 1 and _loop_threads() == before + 1
    cairn.connect_sync(db_url).close()
    assert _loop_threads() == before
    own, other = cairn.SyncClient(db_url), cairn.SyncClient(db_url)  # one's own, when wanted
    assert own is not other
    own.close()
    other.close()


def test_a_bad_run_timeout_is_refused_before_the_run_is_started(db_url: str) -> None:
    """`run(..., timeout=-1)` said the timeout was wrong after it had started the run."""
    with cairn.connect_sync(db_url) as sync:
        for timeout in (-1, float("nan")):
            with pytest.raises(ValueError, match=r"timeout must be a number of seconds, 0 or more"):
                sync.run(doubling, 1, timeout=timeout)
        assert sync.list_runs() == []


def test_handles_of_one_run_are_equal_as_async_handles_are(db_url: str) -> None:
    with cairn.connect_sync(db_url) as sync:
        first, again = sync.start(doubling, 1, id="d-1"), sync.get("d-1")
        assert first == again and len({first, again}) == 1 and first != sync.get("d-2")


def test_closing_a_blocking_client_leaves_the_async_client_it_was_given_open(served: str) -> None:
    """`SyncClient(client=shared).close()` closed the shared client under everyone else using it
    on its own loop (on PostgreSQL, failing with an error from a pool bound to that loop)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def on_its_loop(coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    shared = cairn.Client(served)
    try:
        assert on_its_loop(shared.run(doubling, 1, timeout=10)) == 2  # opened on its own loop
        blocking = cairn.SyncClient(client=shared)
        assert blocking.run(doubling, 2, timeout=10) == 4
        blocking.close()
        assert shared.store.db._opening is not None, "the shared client was closed"
        assert on_its_loop(shared.run(doubling, 3, timeout=10)) == 6
    finally:
        on_its_loop(shared.close())
        on_its_loop(_cancel_the_rest())  # the client's result waiter, as asyncio.run would
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _cancel_the_rest() -> None:
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


def test_a_client_used_in_one_asyncio_run_closes_in_another(db_url: str) -> None:
    """A script's `asyncio.run(main())` then `asyncio.run(client.close())`: on PostgreSQL the close
    failed with "Event loop is closed" (its pools were bound to the first loop)."""
    client = cairn.Client(db_url)
    assert asyncio.run(client.list_runs()) == []
    assert asyncio.run(client.list_runs()) == []
    asyncio.run(client.close())


def test_a_result_timeout_fails_promptly_and_the_client_keeps_working(db_url: str) -> None:
    with cairn.connect_sync(db_url) as sync:
        handle = sync.start(doubling, 5)  # no worker yet: it stays pending
        began = time.monotonic()
        with pytest.raises(TimeoutError, match=f"run {handle.id} did not finish within 0.2s"):
            handle.result(timeout=0.2)
        with pytest.raises(TimeoutError):
            sync.run(doubling, 6, timeout=0.2)
        assert time.monotonic() - began < 5

        async def serve() -> int:
            client = cairn.Client(db_url)
            try:
                async with cairn.Worker(client, poll_interval=0.05):
                    return await asyncio.to_thread(handle.result, 10)
            finally:
                await client.close()

        assert asyncio.run(serve()) == 10
        assert sorted(r.status for r in sync.list_runs()) == [RunStatus.COMPLETED, RunStatus.COMPLETED]


# --- inside a running event loop (Jupyter, an async app, an async test) ------------------------------


async def test_a_blocking_wait_on_the_loop_its_worker_runs_on_is_refused_not_a_deadlock(
    client: cairn.Client, worker: cairn.Worker, db_url: str
) -> None:
    """`handle.result()` / `sync.run()` from the event loop a worker runs on (a notebook that
    embeds its worker) blocked that loop, and so the worker that had to run the workflow: for ever."""
    sync = cairn.connect_sync(db_url)
    try:
        handle = sync.start(doubling, 7)  # what does not wait for a run works (briefly blocking)
        began = time.monotonic()
        with pytest.raises(RuntimeError, match=r"a Cairn worker runs.*await handle\.result"):
            handle.result()
        with pytest.raises(RuntimeError, match="cannot block here"):
            sync.run(doubling, 8, timeout=30)
        assert time.monotonic() - began < 5
        assert [r.id for r in await client.list_runs()] == [handle.id]  # the refused run() started nothing
        assert await asyncio.to_thread(handle.result, 10) == 14  # from another thread: fine
        assert await client.get(handle.id).result(timeout=10) == 14
    finally:
        await asyncio.to_thread(sync.close)


def test_a_blocking_client_in_a_notebooks_loop_works_when_the_worker_runs_elsewhere(served: str) -> None:
    async def cell() -> int:
        with cairn.connect_sync(served) as sync:
            return int(sync.run(doubling, 9, timeout=10))  # blocks this loop; the worker is not on it

    assert asyncio.run(cell()) == 18


def test_threads_calling_while_another_closes_never_hang(db_url: str) -> None:
    """Threads share a blocking client while one closes it, again and again (a web app's workers
    and its shutdown). On PostgreSQL, close and every caller hung for ever within a few rounds: a
    call begun during the close started a second loop, whose calls met the client's pool bound to
    the first. On SQLite, callers got AssertionError and InvalidStateError. A call in flight at
    a close may end with CancelledError; any other outcome, or no outcome, is a failure."""
    sync = cairn.connect_sync(db_url)
    sync.now()
    stop = threading.Event()
    outcomes: collections.Counter[str] = collections.Counter()

    def call() -> None:
        while not stop.is_set():
            try:
                sync.now()
                outcomes["ok"] += 1
            except concurrent.futures.CancelledError:
                outcomes["cancelled"] += 1
            except BaseException as exc:
                outcomes[f"{type(exc).__name__}: {exc}"] += 1

    callers = [threading.Thread(target=call, daemon=True) for _ in range(3)]
    for t in callers:
        t.start()
    rng = random.Random(7)
    try:
        for _ in range(150):
            time.sleep(rng.random() * 0.01)  # a random interleaving of the closes with the calls, not a sync
            closing = threading.Thread(target=sync.close, daemon=True)
            closing.start()
            closing.join(timeout=30)
            assert not closing.is_alive(), f"close() hung; calls so far: {dict(outcomes)}"
    finally:
        stop.set()
    for t in callers:
        t.join(timeout=30)
        assert not t.is_alive(), f"a caller hung; calls so far: {dict(outcomes)}"
    assert set(outcomes) <= {"ok", "cancelled"}, dict(outcomes)
    assert isinstance(sync.now(), float)  # opened again by its use
    sync.close()


# --- a script in its own process ------------------------------------------------------------------------

SCRIPT = """
import sys
import cairn
from tests.behaviour.test_audit_sync_client import Approval

sync = cairn.connect_sync(sys.argv[1])
handle = sync.start(Approval, "o-9")
print("waiting", flush=True)
handle.result()
"""


ON_ANOTHER_THREAD = """
import signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # the kernel hands Ctrl-C to another thread
"""


@pytest.mark.process
@pytest.mark.parametrize("lands", ["on the waiting thread", "on another thread"])
def test_ctrl_c_interrupts_a_scripts_blocking_wait(db_url: str, lands: str) -> None:
    """A script waits for a result nobody will bring; Ctrl-C ends it at once (and its unclosed
    client keeps no thread alive that would stop the interpreter from exiting).

    A signal that lands on another thread of the process (or on the waiting one just before its
    wait blocks, which a busy machine makes likely: the CI run that failed) does not wake a lock
    wait: the script hung for ever before the main thread waited in slices."""
    code = (
        SCRIPT.replace('print("waiting"', ON_ANOTHER_THREAD + 'print("waiting"')
        if lands != "on the waiting thread"
        else SCRIPT
    )
    script = subprocess.Popen(
        [sys.executable, "-c", code, db_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=script_env(),
        cwd=ROOT,
    )
    err = ctrl_c_once_ready(script, "waiting", timeout=10)
    assert script.returncode != 0 and "KeyboardInterrupt" in err, err
