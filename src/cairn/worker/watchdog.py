"""The deadlock watchdog: workflow code that holds the worker's event loop too long is interrupted.

An async workflow's code runs on the worker's own event loop thread, from one of its awaits to the
next. Code that does not await (a busy loop, a long computation) blocks the whole worker: claims,
heartbeats, every other run; its lease then runs out and the next worker to take the run blocks
too. As Temporal's deadlock detector does (2 s by default), each such stretch is timed, and one
still running past `deadlock_timeout` gets `DeadlockInterrupt` raised in the loop thread
(`PyThreadState_SetAsyncExc`); the run is then paused with `WorkflowDeadlock`, naming the line.

Race safety: the interrupt lands only inside the stretch it timed, never in the worker.

- Each stretch gets a fresh `_Slot` holding a one-use *permit* (a one-item list). Whoever pops it
  first (`list.pop`: atomic under the GIL, no Python code runs) decides. The loop thread popping it
  at the end of the stretch disarms it for good: the watchdog injects only with the permit in hand,
  so no interrupt can come for that stretch afterwards, nor for an earlier one (their permits are
  gone too). The watchdog popping it owns the one interrupt of that stretch.
- When the loop thread finds the permit gone, the watchdog is about to inject or has injected: it
  waits on the slot's gate (a lock the watchdog releases once its call returned), then clears what
  has not surfaced yet (`PyThreadState_SetAsyncExc(tid, NULL)`). No interrupt outlives the stretch.
- The interrupt surfaces at most once, anywhere from its injection to that clearing: in workflow
  code, in the engine, or in this module's own bookkeeping. All of that lies inside one `try` whose
  handler catches it; as no second interrupt can follow, the handler itself cannot be interrupted.
- From arming to clearing the loop thread takes no lock in Python code (an interrupt raised just
  after a `with` acquired its lock would leave it held): the permit, the gate, the dict of armed
  slots and the bell that wakes the thread are single C calls.
- Once fired, the stretch ends as a deadlock, whatever its code did with the interrupt.

One interrupt per stretch is what makes this provable. `DeadlockInterrupt` derives from
BaseException, so a workflow's `except Exception:` does not swallow it (nor do `finally` blocks or
`asyncio.gather(..., return_exceptions=True)` change the outcome: the stretch ends as a deadlock). A
bare `except:` that swallows it and keeps looping cannot be interrupted again without giving up the
proof (a second interrupt could land in the handler that catches the first), so it is logged as an
error every second or timeout instead; the worker stays blocked until that code returns, as it does
for code stuck in one long call into C (which only sees the interrupt when it returns to Python),
or in the rare case where the interrupt surfaced in a finalizer the garbage collector ran just then
(Python reports it as "Exception ignored in ..." and goes on). Time the process spends stopped
(SIGSTOP, a paused VM) is not counted against a stretch (see `Watchdog._forgive`).

Cost on the hot path: arming is a slot object, a clock read and a dict store (under a microsecond
a stretch, an activation being one). The thread sleeps on a lock until the earliest deadline; with
nothing armed it looks once more a timeout later, then sleeps until an arming rings (a lock release),
so a busy worker wakes it about once per timeout and an idle one never.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import sysconfig
import threading
import time
import traceback
from collections.abc import Callable
from types import FrameType
from typing import TypeVar

from cairn.errors import WorkflowDeadlock

T = TypeVar("T")

log = logging.getLogger("cairn.worker")

Probe = Callable[[str, str], None]
"""A test's hook, called on the loop thread with a point of a stretch and its run id: "armed",
"returned" (its code returned), "disarmed", and "claimed" (the watchdog took the permit first), so
that a test can fire at the moment of its choosing."""

AsyncExc = Callable[[int, "type[BaseException] | None"], int]
"""Raises an exception type in a thread (None: clears it); the number of threads it reached."""


class DeadlockInterrupt(BaseException):
    """Raised by the watchdog inside workflow code that ran too long without awaiting.

    A BaseException, like KeyboardInterrupt and CancelledError, so that a workflow's `except
    Exception:` lets it through. The worker turns it into a pause of the run with WorkflowDeadlock;
    workflow code should never catch it (if it does, the run is paused all the same)."""


_set_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
_clear_exc = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)
# Prototypes of our own: `ctypes.pythonapi.PyThreadState_SetAsyncExc.argtypes` is shared with
# whatever else in the process sets them (and with py_object, None would be passed as Py_None).


def async_exc(thread_id: int, exc: type[BaseException] | None) -> int:
    """Raise `exc` in thread `thread_id` at its next check of the eval loop (None: clear it)."""
    if exc is None:
        return int(_clear_exc(thread_id, None))
    return int(_set_exc(thread_id, exc))


SUSPENDED_AFTER = 0.1
"""Seconds (or half the timeout, or four GIL switch intervals, if more) this thread may wake late
before it takes the process to have been stopped meanwhile (see `Watchdog._forgive`). Waiting for
the GIL that a busy loop holds takes about one switch interval (5 ms by default)."""

POSTPONE_BY = 0.001
POSTPONE_AT_MOST = 1.0
"""While the loop thread is in code where the interrupt would do harm, it is put off by POSTPONE_BY
seconds at a time, for POSTPONE_AT_MOST in all (then sent anyway). It surfaces where that thread
is: in code of the standard library that takes locks (logging, threading, imports, queues), between
a lock's acquire and the `try` that releases it, it would leave the lock held for ever (a logging
handler's: every thread that logs would hang); in a finalizer or a weakref callback (`__del__`,
WeakSet's), which the garbage collector runs at any moment, Python would swallow it ("Exception
ignored in ..."), leaving the code it interrupted running. A best effort on top of the protocol
above, which alone guarantees that the interrupt stays inside its stretch. The last look comes
right before the interrupt, with nothing between them that gives up the GIL (naming the line reads
source files, so it comes before); the thread can still move on only if this one is made to give
up the GIL within those few bytecodes, after a whole switch interval descheduled."""

_FINALIZERS = ("__del__", "call_exception_handler")
"""Functions run from finalizers (asyncio's futures and tasks call their loop's handler there)."""

_UNSAFE_MODULES = (
    "logging",
    "threading",
    "importlib",
    "queue",
    "concurrent",
    "multiprocessing",
    "weakref",
    "_weakrefset",
    "warnings",
)

REMIND_EVERY = 1.0
"""At least this many seconds between the errors saying that interrupted code still runs (after
the interrupt, the engine still winds the activation down: a traceback or two to format)."""

_monotonic: Callable[[], float] = getattr(time.monotonic, "__wrapped__", time.monotonic)
"""The real clock: the sandbox wraps `time.monotonic` once installed (a thread-local check a call)."""


_thread_cpu: Callable[[], float] = getattr(time.thread_time, "__wrapped__", time.thread_time)
"""This thread's CPU time: the function itself, not the sandbox's guard of it (workflow code may not
read it; the watchdog reads it around that code, on the same thread)."""


class _Slot:
    """One timed stretch of workflow code."""

    __slots__ = ("deadline", "fired", "gate", "permit", "postponed_until", "run_id", "stack", "where", "won")

    def __init__(self, run_id: str, deadline: float) -> None:
        self.run_id = run_id
        self.deadline = deadline
        self.permit = [True]
        self.fired = False
        self.gate: threading.Lock | None = None
        self.postponed_until: float | None = None
        self.where = _NOWHERE
        self.stack = ""
        self.won: bool | None = None
        """Who took the permit: the loop thread (True: never interrupted), the watchdog (False)."""


class Watchdog:
    """Times stretches of workflow code on a worker's loop thread; interrupts those past `timeout`.

    `run(run_id, fn)` runs one stretch (the engine's `Watch`); `start()`/`stop()` the thread. The
    seams for tests: `probe`, `check(now)` to fire at will, and `clock` and `inject` to replace."""

    def __init__(
        self, timeout: float, *, clock: Callable[[], float] = _monotonic, inject: AsyncExc = async_exc
    ) -> None:
        self.timeout = timeout
        self.probe: Probe | None = None
        self.clock = clock
        self.inject = inject
        self._armed: dict[int, _Slot] = {}
        """Thread id → the stretch it runs now (a worker's loop is one thread; more are allowed)."""
        self._fire_lock = threading.Lock()
        """One firing at a time (the thread's, or a test's `check`): the loop thread never takes it."""
        self._bell = threading.Lock()
        """Locked while nobody rang: released to wake the thread, acquired by it to sleep."""
        self._bell.acquire()
        self._idle = False
        """Set while the thread sleeps with nothing armed: the next arming rings the bell."""
        self._stopping = False
        self._thread: threading.Thread | None = None

    # --- the loop thread's side --------------------------------------------------------------

    def run(self, run_id: str, fn: Callable[[], T]) -> T:
        """Run `fn` (workflow code of run `run_id`, synchronous) on this thread under the deadline;
        WorkflowDeadlock when the watchdog interrupted it (whatever `fn` did with the interrupt)."""
        tid = threading.get_ident()
        if tid in self._armed:  # a stretch within a stretch: the outer one is timed already
            return fn()
        slot = _Slot(run_id, self.clock() + self.timeout)
        probe = self.probe
        failure: BaseException | None = None
        began = _thread_cpu()
        try:
            try:
                self._armed[tid] = slot
                if self._idle:
                    self._ring()
                if probe is not None:
                    probe("armed", run_id)
                try:
                    value = fn()
                    if probe is not None:
                        probe("returned", run_id)
                except DeadlockInterrupt:
                    raise
                except BaseException as exc:  # kept while the permit is taken back
                    failure = exc
                self._disarm(tid, slot)
                if slot.won and _thread_cpu() - began > self.timeout:
                    # One call into C that held the GIL (a regex that backtracks) for longer than the
                    # timeout: the watchdog's thread could not run to interrupt it, and the code ran
                    # on unpaused. Counted in the thread's CPU time, so that time the process spent
                    # stopped (SIGSTOP, a paused VM) is not taken for it.
                    slot.won = False
                if probe is not None:
                    probe("disarmed", run_id)
            except DeadlockInterrupt:
                slot.won = False  # it surfaced: the one interrupt of this stretch, nothing more can come
        finally:
            if slot.won is None:  # left by another exception (a KeyboardInterrupt from a signal handler)
                try:
                    self._disarm(tid, slot)
                except DeadlockInterrupt:
                    slot.won = False
            self._armed.pop(tid, None)
        if slot.won is False and (failure is None or isinstance(failure, Exception)):
            raise WorkflowDeadlock(run_id, self.timeout, slot.where, slot.stack) from None
        if failure is not None:
            raise failure
        return value

    def _disarm(self, tid: int, slot: _Slot) -> None:
        """Take the permit back (`slot.won`), and no interrupt can come for this stretch. If the
        watchdog took it first, wait until its injection is done, then clear what has not surfaced."""
        try:
            slot.permit.pop()
        except IndexError:
            pass
        else:
            slot.won = True
            return
        probe = self.probe
        if probe is not None:
            probe("claimed", slot.run_id)
        gate = slot.gate  # set before the watchdog took the permit
        if gate is not None:
            gate.acquire()  # released by the watchdog once it has injected
        self.inject(tid, None)
        slot.won = False

    def _ring(self) -> None:
        # Not contextlib.suppress: in the armed window, no more Python code than need be.
        try:  # noqa: SIM105
            self._bell.release()
        except RuntimeError:  # rung already
            pass

    # --- the watchdog's side -----------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._watch, name="cairn-watchdog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._ring()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def _watch(self) -> None:
        lingered = False
        while not self._stopping:
            try:
                due = self.check()
            except Exception:  # never let the watchdog die of a bug: it would stop watching
                log.exception("deadlock watchdog: checking failed")
                due = self.clock() + self.timeout
            if self._stopping:
                return
            if due is None and lingered:
                self._idle = True
                if not self._armed:  # an arming after this line sees `_idle` and rings
                    self._bell.acquire()
                self._idle = False
                lingered = False
                continue
            # Never asleep for more than a timeout: a stretch armed after this look (which rings
            # only an idle thread) falls due a timeout from now at the earliest.
            soon = self.clock() + self.timeout
            if due is None:
                # Nothing armed, but activations come in streams: look again in a timeout before
                # sleeping until the next arming rings (a ring for each would wake this thread for each).
                due = soon
                lingered = True
            else:
                due = min(due, soon)
                lingered = False
            self._bell.acquire(timeout=min(max(0.0, due - self.clock()), threading.TIMEOUT_MAX))
            late = self.clock() - due
            if late > max(SUSPENDED_AFTER, self.timeout / 2, 4 * sys.getswitchinterval()):
                self._forgive(late)

    def _forgive(self, late: float) -> None:
        """This thread woke `late` seconds after it meant to: the process was stopped (SIGSTOP, a
        VM paused) or this thread starved. That time is not the workflow code's: the deadlines of
        the stretches armed now move on by as much, so that none is interrupted for it."""
        for slot in list(self._armed.values()):
            if not slot.fired:
                slot.deadline += late

    def check(self, now: float | None = None) -> float | None:
        """Interrupt every stretch past its deadline at `now` (the clock's time by default); the
        next deadline, None when nothing is armed. The thread calls it at each deadline; a test may
        call it at a moment of its choosing (`now=math.inf` fires whatever is armed)."""
        if now is None:
            now = self.clock()
        due: float | None = None
        for tid, slot in list(self._armed.items()):
            if slot.deadline <= now:
                self._overdue(tid, slot, now)
            if slot.permit or slot.fired:
                due = slot.deadline if due is None else min(due, slot.deadline)
        return due

    def _put_off(self, tid: int, slot: _Slot, now: float) -> bool:
        """Whether the thread is where the interrupt would do harm (see POSTPONE_AT_MOST): then the
        slot falls due again shortly, until it has been put off for POSTPONE_AT_MOST in all."""
        if not _unsafe_spot(sys._current_frames().get(tid)):
            return False
        if slot.postponed_until is None:
            slot.postponed_until = now + POSTPONE_AT_MOST
        if now >= slot.postponed_until:
            return False
        slot.deadline = now + min(POSTPONE_BY, self.timeout)
        return True

    def _overdue(self, tid: int, slot: _Slot, now: float) -> None:
        with self._fire_lock:
            if slot.fired:
                slot.deadline = now + max(self.timeout, REMIND_EVERY)
                if self._armed.get(tid) is slot and slot.won is None:
                    where, _ = describe(sys._current_frames().get(tid))
                    log.error(
                        "run %s: its workflow code is still running at %s, more than %gs after it was interrupted "
                        "for running without awaiting (it caught the interrupt with a bare except, or is "
                        "stuck in one long call into C code). This worker is blocked until it returns: fix "
                        "the code and restart the worker",
                        slot.run_id,
                        where,
                        max(self.timeout, REMIND_EVERY),
                    )
                return
            if not slot.permit:
                return  # disarmed: the loop thread took its permit back
            if self._put_off(tid, slot, now):
                return
            where, stack = describe(sys._current_frames().get(tid))
            gate = threading.Lock()
            gate.acquire()
            slot.where, slot.stack, slot.gate = where, stack, gate
            # Reading the source lines gave up the GIL (file I/O), and the thread ran meanwhile: it
            # may be in logging now. Look again, with nothing that lets it run between this look and
            # the interrupt (a few bytecodes; no I/O, no lock that waits).
            if self._put_off(tid, slot, now):
                return
            try:
                slot.permit.pop()
            except IndexError:
                return  # disarmed meanwhile; the loop thread won the permit and never reads the gate
            slot.fired = True
            slot.deadline = now + max(self.timeout, REMIND_EVERY)  # when to say that it still runs
            try:
                reached = self.inject(tid, DeadlockInterrupt)
                if reached > 1:  # cannot happen for one thread id; CPython asks to undo it then
                    self.inject(tid, None)
            finally:
                gate.release()
        log.warning(
            "run %s: workflow code ran for more than %gs without awaiting, at %s; interrupting it",
            slot.run_id,
            self.timeout,
            slot.where,
        )


_CAIRN = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_STDLIB = tuple({os.path.abspath(sysconfig.get_paths()[key]) + os.sep for key in ("stdlib", "platstdlib")})
_RUN = Watchdog.run.__code__
_NOWHERE = "a place the watchdog could not see"


def _unsafe_spot(frame: FrameType | None) -> bool:
    """Whether the thread's innermost frame, where an interrupt would surface, is one where it
    would do harm (see POSTPONE_AT_MOST)."""
    if frame is None:
        return False
    return frame.f_code.co_name in _FINALIZERS or str(frame.f_globals.get("__name__", "")).startswith(_UNSAFE_MODULES)


def _is_workflow_code(filename: str) -> bool:
    """Whether a frame's file is the user's (not Cairn's, not the standard library's)."""
    if filename.startswith("<frozen"):
        return False
    if filename.startswith("<"):
        return True  # exec'd code
    path = os.path.abspath(filename)
    return not path.startswith(_CAIRN) and not path.startswith(_STDLIB)


def describe(frame: FrameType | None, limit: int = 12) -> tuple[str, str]:
    """Where a thread running a stretch is: `file:line in function (`source`)` of its innermost
    frame of workflow code (of Cairn's, when it runs none), and the workflow code's frames of the
    stretch formatted as a traceback's (most recent call last). Frames outside the stretch (the
    worker, the event loop) are not looked at."""
    if frame is None:
        return _NOWHERE, ""
    inside: list[tuple[FrameType, int]] = []
    for f, lineno in traceback.walk_stack(frame):
        if f.f_code is _RUN:
            break
        inside.append((f, lineno))
    frames = traceback.StackSummary.extract(iter(inside))
    mine = [f for f in frames if _is_workflow_code(f.filename)] or list(frames[:1])
    if not mine:
        return _NOWHERE, ""
    top = mine[0]
    where = f"{top.filename}:{top.lineno} in {top.name}"
    if top.line:
        where += f" (`{top.line.strip()}`)"
    stack = "".join(traceback.StackSummary.from_list(list(reversed(mine[:limit]))).format())
    return where, stack
