"""One bad run never blocks the others: async workflow code that runs without awaiting (a busy loop,
a long computation) holds the worker's event loop, so past the worker's `deadlock_timeout` it is
interrupted and its run paused with WorkflowDeadlock naming the line, while the worker goes on
serving every other run; after the fix, `retry` (or `resume`) continues the run. The interrupt
lands only inside the activation it timed, whenever it fires. Both backends."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import cairn
from cairn import RunStatus, StepStatus
from tests import deadlock_flows as wf
from tests.conftest import eventually
from tests.helpers import status_is

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _bug_deployed() -> Iterator[None]:
    wf.STUCK["on"] = True
    wf.CALLS.clear()
    yield
    wf.STUCK["on"] = False  # nothing left looping for ever


@pytest.fixture(autouse=True)
def _no_errors_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing escapes into the worker: no failed work item, no task exception nobody retrieved, no
    activation that failed in the engine (each would be logged as an error)."""
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


async def _paused_on_deadlock(handle: cairn.RunHandle) -> Any:
    await eventually(lambda: status_is(handle, RunStatus.PAUSED), timeout=20, what="the run paused")
    row = await handle.describe()
    assert row.pause_reason == "deadlock"
    error = json.loads(row.error or "{}")
    assert error["type"] == "WorkflowDeadlock", error
    return error


@pytest.mark.parametrize("cache_size", [1000, 0], ids=["in-memory", "replayed"])
async def test_a_busy_loop_is_paused_naming_its_line_while_another_run_completes(
    client: cairn.Client, cache_size: int
) -> None:
    async with cairn.Worker(client, poll_interval=0.1, deadlock_timeout=0.5, cache_size=cache_size) as w:
        began = time.monotonic()
        bad = await client.start(wf.spins, 1)
        good = await client.start(wf.quick, 10)
        assert await good.result(timeout=20) == 12
        error = await _paused_on_deadlock(bad)
        assert time.monotonic() - began < 10  # half a second of blocking, then the worker is free
        assert await client.run(wf.quick, 20, timeout=20) == 22  # and it goes on serving
    assert w.failure is None
    assert f"deadlock_flows.py:{wf.line_of('spins')} in spins" in error["message"]
    assert bad.id in error["message"] and "more than 0.5s without awaiting" in error["message"]
    assert "move the CPU work into an @action" in error["message"] and "retry" in error["message"]
    assert f"line {wf.line_of('spins')}, in spins" in error["traceback"]  # the workflow's frames, not ours
    assert isinstance(cairn.WorkflowDeadlock("r", 2.0, "here"), cairn.CairnError)


async def test_a_call_into_c_holding_the_gil_past_the_timeout_pauses_the_run_once_it_returns(
    client: cairn.Client,
) -> None:
    """A regular expression that backtracks held the loop for its whole length; the watchdog's
    thread could not run meanwhile, and once it returned the run went on unpaused, nothing said,
    though the docs promise the run is paused. Its CPU time past the timeout now pauses it."""
    async with cairn.Worker(client, poll_interval=0.1, deadlock_timeout=0.2):
        bad = await client.start(wf.backtracks, 23)  # about 0.6 s of backtracking (0.3 s at 22 letters)
        await _paused_on_deadlock(bad)
        assert await client.run(wf.quick, 1, timeout=20) == 3
        fine = await client.start(wf.backtracks, 12)  # a few milliseconds: not paused
        assert await fine.result(timeout=20) is False


@pytest.mark.parametrize("control", ["retry", "resume"])
async def test_after_the_fix_the_run_continues_and_no_step_runs_again(client: cairn.Client, control: str) -> None:
    async with cairn.Worker(client, poll_interval=0.1, deadlock_timeout=timedelta(milliseconds=300)):
        handle = await client.start(wf.spins, 1)
        await _paused_on_deadlock(handle)
        # Nothing of the interrupted activation was recorded: only the step before the loop, whose
        # result the fixed code will be handed.
        assert [(s.name, s.status) for s in await handle.steps()] == [("tests.deadlock.add_one", StepStatus.COMPLETED)]
        wf.STUCK["on"] = False  # the fix is deployed
        assert await getattr(handle, control)() == RunStatus.RUNNING
        assert await handle.result(timeout=20) == 3
    assert wf.CALLS == {"add_one:1": 1, "add_one:2": 1}


async def test_code_that_starts_looping_on_replay_is_paused_too(client: cairn.Client) -> None:
    """A deploy that puts a busy loop into code a waiting run replays: the replay is interrupted."""
    wf.STUCK["on"] = False
    async with cairn.Worker(client, poll_interval=0.1, deadlock_timeout=0.3):
        handle = await client.start(wf.waits, 1)
        await eventually(lambda: status_is(handle, RunStatus.WAITING), timeout=20, what="waiting for its signal")
        wf.STUCK["on"] = True  # the bad deploy
        await handle.signal("go", None)
        error = await _paused_on_deadlock(handle)
        assert f"deadlock_flows.py:{wf.line_of('waits')} in waits" in error["message"]
        wf.STUCK["on"] = False  # the fix
        await handle.retry()
        assert await handle.result(timeout=20) == 3


@pytest.mark.parametrize(("workflow", "fixed"), [("swallows", "done 2"), ("swallows_all", "done 1")])
async def test_the_workflows_own_except_does_not_save_the_activation(
    client: cairn.Client, workflow: str, fixed: str
) -> None:
    """`except Exception:` does not catch the interrupt (a BaseException); even code that catches
    everything and returns does not complete the run: the activation was interrupted."""
    async with cairn.Worker(client, poll_interval=0.1, deadlock_timeout=0.3):
        handle = await client.start(getattr(wf, workflow), 1)
        error = await _paused_on_deadlock(handle)
        assert f"deadlock_flows.py:{wf.line_of(workflow)} in {workflow}" in error["message"]
        wf.STUCK["on"] = False
        await handle.retry()
        assert await handle.result(timeout=20) == fixed


def _take_and_release(handler: logging.Handler) -> bool:
    """Whether another thread than the loop's can take the handler's lock (within 5 s)."""
    lock = handler.lock
    assert lock is not None
    if not lock.acquire(timeout=5):
        return False
    lock.release()
    return True


async def test_a_busy_loop_that_logs_leaves_no_logging_lock_held(client: cairn.Client) -> None:
    """The interrupt is put off while the code runs inside logging (which takes its handlers'
    locks): landing between a lock's acquire and the `try` that releases it, it would leave the
    lock held, and every other thread that logs would hang."""
    handler = logging.StreamHandler(io.StringIO())
    wf.CHATTY.addHandler(handler)
    wf.CHATTY.setLevel(logging.INFO)
    wf.CHATTY.propagate = False
    try:
        async with cairn.Worker(client, poll_interval=0.1, deadlock_timeout=0.2):
            handles = [await client.start(wf.chatty, n) for n in range(3)]
            for handle in handles:
                error = await _paused_on_deadlock(handle)
                assert " in chatty" in error["message"]
        assert await asyncio.to_thread(_take_and_release, handler), "the loop thread left the handler's lock held"
    finally:
        wf.CHATTY.removeHandler(handler)
        wf.CHATTY.propagate = True


def test_the_thread_moving_into_logging_while_the_watchdog_reads_its_stack_is_not_interrupted_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The interleaving behind a rare hang under load, forced: the watchdog finds the thread in
    safe code, then reads the thread's source lines to name the line (file I/O, which lets the
    thread run) while the thread enters logging. The interrupt is not sent into logging all the
    same: the watchdog looks again, with nothing between that look and the interrupt."""
    from cairn.worker import watchdog as module

    chatty = logging.getLogger("tests.deadlock.forced")
    chatty.addHandler(logging.StreamHandler(io.StringIO()))
    chatty.setLevel(logging.INFO)
    chatty.propagate = False
    stop = threading.Event()

    def busy() -> None:  # half its time in its own code, half in logging
        while not stop.is_set():
            chatty.info("still going")
            for _ in range(2000):
                pass

    real_describe = module.describe
    moved: list[bool] = []

    def slow_describe(frame: Any, limit: int = 12) -> tuple[str, str]:
        described = real_describe(frame, limit)
        if not moved:  # the first reading of the stack ends once the thread is inside logging
            deadline = time.monotonic() + 10
            while not module._unsafe_spot(sys._current_frames().get(loop.ident)) and time.monotonic() < deadline:
                time.sleep(0)
            moved.append(True)
        return described

    landed: list[str] = []

    def inject(thread_id: int, exc: type[BaseException] | None) -> int:
        if exc is not None:
            frame = sys._current_frames().get(thread_id)
            landed.append(str(frame.f_globals.get("__name__")) if frame is not None else "?")
        return module.async_exc(thread_id, exc)

    monkeypatch.setattr(module, "describe", slow_describe)
    watchdog = module.Watchdog(0.05, inject=inject)
    outcome: list[BaseException] = []

    def activation() -> None:
        try:
            watchdog.run("forced", busy)
        except BaseException as exc:  # the outcome is the test's to judge
            outcome.append(exc)

    loop = threading.Thread(target=activation, name="test-loop")
    watchdog.start()
    try:
        loop.start()
        loop.join(10)
    finally:
        stop.set()
        watchdog.stop()
        loop.join(10)
        chatty.handlers.clear()
    assert moved == [True]
    assert landed and not landed[0].startswith(module._UNSAFE_MODULES), f"the interrupt was sent into {landed}"
    assert [type(e) for e in outcome] == [cairn.WorkflowDeadlock]


# --- the race: the interrupt lands only inside the activation it timed ---------------------------


def _fire_from_another_thread(watchdog: Any) -> None:
    """Do now what the watchdog's thread does at a deadline, from a thread of its own, while this
    thread (the worker's loop) waits for it."""
    helper = threading.Thread(target=watchdog.check, args=(math.inf,), name="test-watchdog")
    helper.start()
    helper.join()


@pytest.mark.parametrize(
    ("point", "paused"),
    [("armed", True), ("returned", True), ("disarmed", False)],
    ids=["before-the-code-runs", "after-it-returned", "after-the-activation"],
)
async def test_the_watchdog_firing_at_the_edges_of_an_activation(
    client: cairn.Client, point: str, paused: bool
) -> None:
    """The watchdog fires exactly at one edge of the activation (driven, not timed: its own
    deadline is an hour away). Once armed, any firing pauses the run; once disarmed, none reaches it."""
    async with cairn.Worker(client, poll_interval=0.1, deadlock_timeout=3600) as w:
        watchdog = w.watchdog
        assert watchdog is not None
        target = f"edge-{point}"
        fired: list[str] = []

        def probe(at: str, run_id: str) -> None:
            if at == point and run_id == target and not fired:
                fired.append(at)
                _fire_from_another_thread(watchdog)

        watchdog.probe = probe
        handle = await client.start(wf.compute, 1000, id=target)
        if paused:
            await _paused_on_deadlock(handle)
        else:
            assert await handle.result(timeout=20) == sum(range(1000))
        watchdog.probe = None
        assert fired == [point]
        assert await client.run(wf.quick, 1, timeout=20) == 3  # the worker goes on
        if paused:
            await handle.retry()
            assert await handle.result(timeout=20) == sum(range(1000))
    assert w.failure is None


async def test_the_watchdog_deciding_to_fire_as_the_activation_ends(client: cairn.Client) -> None:
    """The closest call: the watchdog has taken the activation's permit (it will fire) but not sent
    its interrupt yet when the activation returns. The loop thread waits for the interrupt and
    takes it (or clears it) before it leaves: it never reaches the worker; the run is paused."""
    async with cairn.Worker(client, poll_interval=0.1, deadlock_timeout=3600) as w:
        watchdog = w.watchdog
        assert watchdog is not None
        real_inject = watchdog.inject
        claimed, go = threading.Event(), threading.Event()
        steps: list[str] = []

        def held_inject(thread_id: int, exc: type[BaseException] | None) -> int:
            if exc is not None:
                claimed.set()
                assert go.wait(10)  # until the loop thread has seen that the permit is gone
            return real_inject(thread_id, exc)

        helpers: list[threading.Thread] = []

        def probe(at: str, run_id: str) -> None:
            if run_id != "the-closest-call":
                return
            steps.append(at)
            if at == "returned" and not helpers:
                helpers.append(threading.Thread(target=watchdog.check, args=(math.inf,), name="test-watchdog"))
                helpers[0].start()
                assert claimed.wait(10)  # the permit is the watchdog's; its interrupt is not sent
            elif at == "claimed":
                go.set()  # now it is sent, while this thread waits for it

        watchdog.inject = held_inject
        watchdog.probe = probe
        handle = await client.start(wf.compute, 1000, id="the-closest-call")
        await _paused_on_deadlock(handle)
        watchdog.probe = None
        watchdog.inject = real_inject
        helpers[0].join(10)
        # The interrupt surfaced where the loop thread waited for it, or was cleared there: either way
        # the permit was the watchdog's, so the run is paused, and nothing reached the worker.
        assert steps[:3] == ["armed", "returned", "claimed"], steps
        assert await client.run(wf.quick, 1, timeout=20) == 3
    assert w.failure is None


RUNS = 2000


async def test_thousands_of_short_activations_under_a_tiny_timeout_complete_or_pause(client: cairn.Client) -> None:
    """A watchdog firing at random points: activations of 0 to a few milliseconds (60,000 additions
    at most: at 20,000, a fast machine finished all but one or two of 2,000 within the timeout, and
    a run where none paused failed) under a timeout of half a millisecond, with the interpreter
    switching threads every 10 µs so that the watchdog's thread runs at many points of the loop
    thread's work (in workflow code, in the engine, at the edges of the watched stretch). Every run
    completes with its result or is paused with WorkflowDeadlock; nothing else happens to any, and
    the worker never sees the interrupt."""
    rng = random.Random(7)
    sizes = [rng.randrange(0, 60_000) for _ in range(RUNS)]
    switching = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        async with cairn.Worker(client, poll_interval=0.1, deadlock_timeout=0.0005) as w:
            handles: list[cairn.RunHandle] = []
            for i in range(0, RUNS, 100):
                handles += await asyncio.gather(*(client.start(wf.compute, n) for n in sizes[i : i + 100]))

            async def settled() -> bool:
                rows = await client.list_runs(limit=RUNS + 10)
                return sum(r.status in (RunStatus.COMPLETED, RunStatus.PAUSED) for r in rows) == RUNS

            await eventually(settled, timeout=120, what="every run completed or paused")
            assert w.failure is None
    finally:
        sys.setswitchinterval(switching)
    expected = {h.id: sum(range(n)) for h, n in zip(handles, sizes, strict=True)}
    outcomes: Counter[str] = Counter()
    for row in await client.list_runs(workflow=wf.compute, limit=RUNS + 10):
        if row.status == RunStatus.COMPLETED:
            assert json.loads(row.result or "null") == expected[row.id]
            outcomes["completed"] += 1
        else:
            assert row.status == RunStatus.PAUSED and row.pause_reason == "deadlock", row
            assert json.loads(row.error or "{}")["type"] == "WorkflowDeadlock"
            outcomes["paused"] += 1
    assert sum(outcomes.values()) == RUNS
    assert outcomes["completed"] > 0 and outcomes["paused"] > 0, outcomes  # the watchdog did fire, at times


# --- the option ------------------------------------------------------------------------------------


async def test_no_deadlock_timeout_no_watchdog(client: cairn.Client) -> None:
    """deadlock_timeout=None turns it off: a computation that a 50 ms timeout interrupts runs to its end."""
    # A quarter of a second or more of pure Python: five timeouts at least. (3,000,000 took 70 ms on
    # a fast day, and the watchdog, waking a millisecond early and then waiting for the GIL, came
    # too late to interrupt it.)
    n = 12_000_000
    async with cairn.Worker(client, poll_interval=0.1, deadlock_timeout=0.05):
        await _paused_on_deadlock(await client.start(wf.compute, n))
    async with cairn.Worker(client, poll_interval=0.1, deadlock_timeout=None) as w:
        assert w.watchdog is None and w.deadlock_timeout is None
        assert await client.run(wf.compute, n, timeout=30) == sum(range(n))
    assert cairn.Worker(client).deadlock_timeout == 2.0  # Temporal's default
    assert cairn.Worker(client, deadlock_timeout=timedelta(seconds=5)).deadlock_timeout == 5.0


@pytest.mark.parametrize(
    ("value", "error"),
    [(-1, ValueError), (0, ValueError), (float("nan"), ValueError), ("2", TypeError), (True, TypeError)],
)
async def test_a_bad_deadlock_timeout_is_refused_naming_it(client: cairn.Client, value: Any, error: type) -> None:
    with pytest.raises(error, match=r"deadlock_timeout"):
        cairn.Worker(client, deadlock_timeout=value)
