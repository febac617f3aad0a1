"""One workflow run in memory: replay its journal, then run activations. Pure: no I/O, no clock.

An activation takes the results that arrived since the last one (a batch, in step order), runs the
workflow on its deterministic loop until nothing is ready, and returns what it decided: new steps,
cancellations, the properties snapshot and, when the workflow returned or raised, the outcome. The
worker applies that in one transaction. An instance may be kept in memory between activations (a
sticky cache, to avoid replays) or rebuilt from the journal at any time; both give the same result.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import queue
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from cairn.engine import sandbox
from cairn.engine.runtime import (
    Evicted,
    Resolution,
    Runtime,
    at_their_times,
    describe,
    in_delivery_order,
    set_thread_runtime,
)
from cairn.errors import (
    ArgumentsMismatch,
    CairnError,
    NonDeterminismError,
    PayloadTooLarge,
    SerializationError,
    WorkflowCancelled,
    WorkflowDeadlock,
)
from cairn.records import ActivationResult, NewStep, RunRow, StepRow
from cairn.registry import WorkflowDef, instantiate
from cairn.serialization import dumps, error_text, error_to_json, max_payload_bytes, text_of, to_jsonable
from cairn.types import RunStatus, StepKind, StepStatus

_SYNC_STEP_TIMEOUT = 300.0
REPLAY_TURN = 0.01
"""Seconds of a replay on an event loop between two turns of that loop for its other work (see
`restore_async`)."""

COPY_BYTES = 10_000
"""About what a run's copy holds besides its journal (see `WorkflowInstance.size_estimate`)."""

T = TypeVar("T")


class Watch(Protocol):
    """Runs `fn`, a stretch of run `run_id`'s workflow code, on this thread under a deadline; raises
    WorkflowDeadlock when it had to interrupt it (the worker's deadlock watchdog)."""

    def __call__(self, run_id: str, fn: Callable[[], T], /) -> T: ...


class WorkflowInstance:
    def __init__(
        self, defn: WorkflowDef, run: RunRow, journal: Sequence[StepRow], seed: int, watch: Watch | None = None
    ) -> None:
        self.defn = defn
        self.run_id = run.id
        self.runtime = Runtime(run.id, {s.seq: s for s in journal}, seed)
        self.runtime.recorded_activations = run.activations
        self.loop = self.runtime.loop
        self._started_at = run.started_at
        """When its first activation ran (None before it has run): its logical time. Not its
        creation: a run that waited in a queue for two hours would start its `sleep(3600)` an hour
        overdue, and finish it at once."""
        self._input = run.input
        self.obj: Any = None
        self.main: asyncio.Task[Any] | None = None
        self._coro: Coroutine[Any, Any, Any] | None = None
        """The coroutine `main` runs, made before a watched stretch starts it: an interrupt there
        could otherwise drop it unawaited (a RuntimeWarning from a finalizer); `close` closes it."""
        self._bridge: _SyncBridge | None = None
        self._last_properties: str | None = run.properties
        self.finished = False
        self.unrecorded: list[NewStep] = []
        """Steps the code scheduled while `restore` replayed recorded activations that the journal
        does not hold: a divergence the engine cannot see alone (`cairn replay` reports it)."""
        self.watch = watch
        """Times the async workflow's code where it runs on the caller's thread (None: untimed)."""
        self.threaded = not defn.is_async
        """A plain `def` workflow: its code runs on a thread of its own (see `_SyncBridge`)."""
        self.deadlock: WorkflowDeadlock | None = None
        """Set when the watch interrupted the workflow's code: the instance is done for (its state
        is whatever the interrupt left), and every activation pauses the run with it."""

    @property
    def activations(self) -> int:
        return self.runtime.activation

    # --- replay ----------------------------------------------------------------------------

    @classmethod
    def restore(
        cls, defn: WorkflowDef, run: RunRow, journal: Sequence[StepRow], seed: int, watch: Watch | None = None
    ) -> WorkflowInstance:
        """Rebuild the in-memory state after `run.activations` activations, executing nothing.
        (A plain `def` workflow's thread is waited for blocking: see `restore_async` on a loop.)"""
        inst = cls(defn, run, journal, seed, watch)
        inst._replay(run, journal)
        return inst

    def _replay(self, run: RunRow, journal: Sequence[StepRow]) -> None:
        for _ in self._replaying(run, journal):
            pass

    def _replaying(self, run: RunRow, journal: Sequence[StepRow]) -> Iterator[None]:
        """Replay the recorded activations, one at each step of the iteration (a caller on an event
        loop gives it turns in between). Each recorded activation of an async workflow is a stretch
        of its own for the watch, as each was when it first ran: a replay of many is not one."""
        try:
            for resolutions, when in self._recorded(run, journal):
                self._watched(functools.partial(self._step, resolutions, when))
                if self.runtime.fatal is not None or self.finished:
                    break
                yield
        except WorkflowDeadlock as exc:
            self.deadlock = exc
            return
        self._took_unrecorded(run)

    @classmethod
    async def restore_async(
        cls, defn: WorkflowDef, run: RunRow, journal: Sequence[StepRow], seed: int, watch: Watch | None = None
    ) -> WorkflowInstance:
        """`restore` for a caller on an event loop: a plain `def` workflow's thread is awaited, so
        the loop goes on with its other work while the workflow code computes. An async
        workflow's code runs here, under the watch, and the loop gets a turn every REPLAY_TURN
        seconds: a journal of 50,000 steps took 2.6 s to replay, during which the worker's
        heartbeat (its leases), its claims and its other runs all waited; past the lease, two
        workers took such a run from each other for ever, each losing its commit to the other."""
        inst = cls(defn, run, journal, seed, watch)
        try:
            if not inst.threaded:
                loop = asyncio.get_running_loop()
                turn = loop.time() + REPLAY_TURN
                for _ in inst._replaying(run, journal):
                    if loop.time() >= turn:
                        await asyncio.sleep(0)
                        turn = loop.time() + REPLAY_TURN
                return inst
            for resolutions, when in inst._recorded(run, journal):
                await inst._step_async(resolutions, when)
                if inst.runtime.fatal is not None or inst.finished:
                    break
        except BaseException:
            inst.close()
            raise
        inst._took_unrecorded(run)
        return inst

    def _took_unrecorded(self, run: RunRow) -> None:
        """After the replay of the recorded activations: the steps the code scheduled that none of
        them recorded (code that gathers one more branch, or starts a task before a wait it had).
        A divergence: the run pauses on it, as on any other. Dropped, it left the run waiting for
        ever on what nothing would resolve, `running`, with no error, and `retry` nothing to do."""
        self.unrecorded = self.runtime.take_commands().new_steps
        if self.unrecorded and self.runtime.fatal is None:
            new = self.unrecorded[0]
            recorded = "nothing (the run's recorded activations did not schedule it)"
            attempted = describe(new.kind, new.name, new.args)
            self.runtime.fatal = NonDeterminismError(run.id, new.seq, recorded, attempted)

    def _recorded(self, run: RunRow, journal: Sequence[StepRow]) -> Iterator[tuple[list[Resolution], float]]:
        """The batches activations 1..K delivered, with their times, in order."""
        # Steps resolved at once (records, memory writes, sends) are stored with delivered_in = 0, so
        # batches 1..K hold exactly what each activation delivered.
        batches: dict[int, list[StepRow]] = {}
        for row in journal:
            if row.delivered_in is not None and row.status.is_resolved:
                batches.setdefault(row.delivered_in, []).append(row)
        started = run.started_at if run.started_at is not None else run.created_at
        for k in range(1, run.activations + 1):
            rows = batches.get(k, [])
            when = rows[0].delivered_at if rows and rows[0].delivered_at is not None else started
            yield rows_to_resolutions(rows), when if k > 1 else started

    # --- a live activation -----------------------------------------------------------------

    def activate(self, batch: Sequence[StepRow] | Sequence[Resolution], now: float) -> ActivationResult:
        """Deliver `batch` (results, fired timers, signals the store matched to their waits) and run
        the workflow until nothing is ready. Signals are never matched here: the store pairs each
        open wait with a buffered signal when it claims the run and again when it commits (see
        `journal_tx.match_signals`), against the waits as they are in the database then.
        (A plain `def` workflow's thread is waited for blocking: see `activate_async` on a loop.)"""
        resolutions = self._resolutions(batch)
        early = self._before(resolutions)
        if early is not None:
            return early
        self._step(resolutions, self._when(now))
        return self._after(resolutions, now)

    async def activate_async(self, batch: Sequence[StepRow] | Sequence[Resolution], now: float) -> ActivationResult:
        """`activate` for a caller on an event loop: while a plain `def` workflow's thread computes
        between two durable calls, the loop is free (heartbeats, claims, other runs go on). An async
        workflow's activation never awaits: all of it runs here, as one stretch under the watch."""
        if not self.threaded:
            try:
                return self._watched(lambda: self.activate(batch, now))
            except WorkflowDeadlock as exc:
                self.deadlock = exc
                return self._deadlocked()
        resolutions = self._resolutions(batch)
        early = self._before(resolutions)
        if early is not None:
            return early
        await self._step_async(resolutions, self._when(now))
        return self._after(resolutions, now)

    @staticmethod
    def _resolutions(batch: Sequence[StepRow] | Sequence[Resolution]) -> list[Resolution]:
        return in_delivery_order(r if isinstance(r, Resolution) else Resolution.of(r) for r in batch)

    def _when(self, now: float) -> float:
        """The logical time of the next activation: the run's start for its first (`now`, the first
        time it runs; its recorded start when that activation runs again)."""
        if self.runtime.activation != 0 or self._started_at is None:
            return now
        return self._started_at

    def _watched(self, fn: Callable[[], T]) -> T:
        """Run `fn`, workflow code running on this thread, under the watch (an async workflow's)."""
        watch = self.watch
        if watch is None or self.threaded:
            return fn()
        if self.main is None and self._coro is None:
            self._coro = self._main()
        outer = asyncio.events._get_running_loop()
        guarded = sandbox.active()
        try:
            return watch(self.run_id, fn)
        except WorkflowDeadlock:
            # The interrupt may have surfaced in one of the engine's own `finally` blocks and cut it
            # short: the loop's putting back the thread's running loop, the sandbox's its flag.
            asyncio.events._set_running_loop(outer)
            sandbox._state.active = guarded
            raise

    def _deadlocked(self) -> ActivationResult:
        """The run pauses on the interrupted activation, and nothing else of it is kept (as on a
        divergence): what it delivered stays undelivered, so that after a fix `retry` (or `resume`)
        hands the same results to the new code, and no recorded step runs again."""
        exc = self.deadlock
        assert exc is not None
        error = error_to_json(exc)
        error["traceback"] = (
            f"Workflow code when it was interrupted (most recent call last):\n{exc.stack}"
            f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}\n"
        )
        return ActivationResult(
            status=RunStatus.PAUSED, pause_reason="deadlock", error=dumps(error), counts_as_activation=False
        )

    def _before(self, resolutions: Sequence[Resolution]) -> ActivationResult | None:
        """The result of an activation that does not run the workflow (diverged, interrupted, or
        paused on failure)."""
        if self.deadlock is not None:
            return self._deadlocked()
        if self.runtime.fatal is not None:  # the replay of what was recorded diverged already
            return self._diverged()
        return self._pause_on_failure(resolutions)

    def _after(self, resolutions: Sequence[Resolution], now: float) -> ActivationResult:
        rt = self.runtime
        first = rt.activation == 1
        if rt.fatal is not None:
            return self._diverged()
        cmds = rt.take_commands()
        result = ActivationResult(
            new_steps=cmds.new_steps,
            cancelled=cmds.cancelled,
            delivered=[r.seq for r in resolutions],
            delivered_at=now,
            counts_as_activation=bool(resolutions) or first,
        )
        self._outcome(result)
        if result.status.is_terminal:
            # An activation that ends the run counts, even with nothing delivered: `retry` of a
            # failed run rewinds exactly the activation that failed it.
            result.counts_as_activation = True
        if not result.counts_as_activation:
            rt.activation -= 1
        return result

    def _pause_on_failure(self, resolutions: Sequence[Resolution]) -> ActivationResult | None:
        """With on_failure="pause", an action that failed for good pauses the run before the workflow
        sees the failure, so that `retry` (after a fix) runs that step again and the run continues.
        So does, whatever `on_failure` says, an action whose worker's code did not take the step's
        arguments (`ArgumentsMismatch`: an old worker in a rolling deploy): no failure of the action."""
        for res in resolutions:
            pending = self.runtime.pending.get(res.seq)
            if res.status == StepStatus.FAILED and pending is not None and pending.kind == StepKind.ACTION:
                error = json.loads(res.error or "{}")
                if self.defn.on_failure != "pause" and not _mismatched(error):
                    continue
                error["step"] = res.seq
                error["message"] = f"step {res.seq} ({pending.name}) failed: {error.get('message', '')}"
                return ActivationResult(
                    status=RunStatus.PAUSED, pause_reason="error", error=dumps(error), counts_as_activation=False
                )
        return None

    def _step(self, resolutions: Sequence[Resolution], now: float) -> None:
        self._begin_step(now)
        for group in at_their_times(resolutions):
            if not self._deliver(group):
                break
            while self._thread_turn():
                self._receive_blocking()
                self.loop.run_until_quiescent()
        self._end_step()

    async def _step_async(self, resolutions: Sequence[Resolution], now: float) -> None:
        self._begin_step(now)
        for group in at_their_times(resolutions):
            if not self._deliver(group):
                break
            while self._thread_turn():
                await self._receive()
                self.loop.run_until_quiescent()
        self._end_step()

    def _begin_step(self, now: float) -> None:
        self.runtime.activation += 1
        self.loop.set_time(now)
        if self.main is None:
            self.main = self.loop.create_task(self._coro if self._coro is not None else self._main())

    def _deliver(self, group: Sequence[Resolution]) -> bool:
        """Hand the workflow what happened at one time and let it run until it waits again (its
        thread's turns too); False once a record does not decode: nothing more of it runs."""
        rt = self.runtime
        if rt.fatal is not None:
            return False
        for res in group:
            rt.deliver(res)
        if rt.fatal is not None:
            return False
        self.loop.run_until_quiescent()
        return True

    def _thread_turn(self) -> bool:
        """Whether the loop is quiet only because a plain `def` workflow's thread is running: the
        activation is not over until it reaches its next durable call (or returns)."""
        return self.runtime.fatal is None and self._bridge is not None and self._bridge.awaiting

    def _receive_blocking(self) -> None:
        assert self._bridge is not None
        self._bridge.receive_blocking()

    async def _receive(self) -> None:
        assert self._bridge is not None
        await self._bridge.receive()

    def _end_step(self) -> None:
        assert self.main is not None
        if self.main.done():
            self.finished = True

    async def _main(self) -> Any:
        try:
            args, kwargs = self.defn.signature.decode_args(self._input)
        except ArgumentsMismatch as exc:
            # Another version's input: the run pauses as diverged (nothing of this activation is
            # kept), for the code it was started with to take up after `retry`, instead of failing.
            self.runtime.fatal = exc
            return None
        entry = self.defn.entry
        if self.defn.init_input:  # Zenaton's style: the input goes to __init__, `handle(self)` takes none
            self.obj = self.defn.target(*args, **kwargs)
            args, kwargs = [], {}
            bound = getattr(self.obj, entry.__name__)
        elif self.defn.is_class:
            self.obj = instantiate(self.defn.target)
            bound = getattr(self.obj, entry.__name__)
        else:
            bound = entry
        if not self.threaded:
            return await bound(*args, **kwargs)
        self._bridge = _SyncBridge(self.runtime, lambda: bound(*args, **kwargs))
        return await self._bridge.run()

    def fatal(self) -> BaseException | None:
        """Why the run cannot go on (`runtime.fatal`), told with what the workflow raised when that
        is why it no longer reaches a recorded step: new code's NameError was lost, the run paused
        as calling "nothing", and neither the error nor its traceback showed anywhere."""
        fatal = self.runtime.fatal
        raised = self.raised()
        if isinstance(fatal, NonDeterminismError) and raised is not None and fatal.attempted.startswith("nothing"):
            told = NonDeterminismError(fatal.run_id, fatal.step, fatal.recorded, self.reached_nothing())
            told.__cause__ = raised
            return told
        return fatal

    def raised(self) -> BaseException | None:
        """What the workflow raised, if it ended so."""
        main = self.main
        if main is None or not main.done() or main.cancelled():
            return None
        return main.exception()

    def reached_nothing(self) -> str:
        """What the code did in place of a recorded step it no longer reaches."""
        raised = self.raised()
        if raised is None:
            return "nothing (the workflow no longer reaches it)"
        return f"nothing: it raised {type(raised).__name__}: {raised} before it got there"

    def _diverged(self) -> ActivationResult:
        """The run pauses on its divergence, and nothing else of this activation is kept: what it
        delivered stays undelivered, so that after a fix and `retry` the next activation hands the
        same results to the new code (and the steps it would have scheduled are not recorded)."""
        fatal = self.fatal()
        assert fatal is not None
        return ActivationResult(
            status=RunStatus.PAUSED,
            pause_reason="nondeterminism"
            if isinstance(fatal, NonDeterminismError | ArgumentsMismatch)
            else "corrupt_journal",
            error=dumps(error_to_json(fatal)),
            counts_as_activation=False,
        )

    def next_timer(self) -> float | None:
        """When the earliest timer the run waits on is due, if it waits on one."""
        due = [p.timer.when() for p in self.runtime.pending.values() if p.timer is not None]
        return min(due) if due else None

    def _outcome(self, result: ActivationResult) -> None:
        rt = self.runtime
        result.properties = self._properties()
        result.wake_at = self.next_timer()
        main = self.main
        assert main is not None
        if not main.done() and not rt.pending:
            # It awaits nothing durable (an asyncio.Event or Future nobody sets): nothing can ever
            # wake it, and it would wait for ever, silently. It fails saying so; fixed, it can be retried.
            stuck = CairnError(
                f"workflow {self.defn.id} (run {self.run_id}) waits for something that is not durable: no "
                "action, timer, signal or child run is pending, so nothing can ever wake it (an asyncio.Event, "
                "Queue or Future that nothing sets?). Await only durable calls in a workflow; after a fix, retry"
            )
            result.status, result.error, result.wake_at = RunStatus.FAILED, error_text(stuck), None
            return
        if not main.done():
            busy = any(p.kind in (StepKind.ACTION, StepKind.CHILD) for p in rt.pending.values())
            result.status = RunStatus.RUNNING if busy else RunStatus.WAITING
            result.signal_waits = any(p.kind == StepKind.SIGNAL for p in rt.pending.values())
            return
        # The run is over: nothing it left pending may still run.
        result.cancelled.extend(seq for seq in sorted(rt.pending) if seq not in result.cancelled)
        rt.pending.clear()
        result.wake_at = None
        if main.cancelled():
            result.status, result.error = RunStatus.CANCELLED, dumps(error_to_json(WorkflowCancelled("cancelled")))
            return
        exc = main.exception()
        if exc is None:
            try:
                result.result = self.defn.signature.encode_result(main.result())
                result.status = RunStatus.COMPLETED
            except SerializationError as err:
                result.status, result.error = RunStatus.FAILED, error_text(err)
        elif isinstance(exc, WorkflowCancelled):
            result.status, result.error = RunStatus.CANCELLED, dumps(error_to_json(exc))
        elif isinstance(exc, Evicted):
            raise CairnError(f"workflow {self.run_id} was evicted while running")
        else:
            result.status, result.error = RunStatus.FAILED, error_text(exc)

    def _properties(self) -> str | None:
        if self.obj is None:
            return self._last_properties
        props: dict[str, Any] = {}
        for key, value in vars(self.obj).items():
            if key.startswith("_"):
                continue
            try:
                props[key] = to_jsonable(value, f"property {key!r}")
            except SerializationError:
                props[key] = _shown(value)
        text = json.dumps(props, default=str)  # in the order the workflow set them
        if len(text) > max_payload_bytes():
            text = json.dumps(_within_limit(props), default=str)
        changed = text != self._last_properties
        self._last_properties = text
        return text if changed else None

    # --- eviction ---------------------------------------------------------------------------

    def steps(self) -> int:
        """Journal steps this copy holds in memory."""
        return len(self.runtime.journal)

    def size_estimate(self) -> int:
        """About how many bytes this copy holds: its coroutines and loop (measured about 10 KB),
        and its journal with the payloads' text (what a cache of copies weighs them by)."""
        return COPY_BYTES + self.runtime.journal_bytes

    def close(self) -> None:
        """Drop the run from memory, unwinding its coroutines or sync thread without side effects.
        The unwinding is workflow code (a `finally`, an `async with`'s exit) and runs as such, on
        the run's own loop under the sandbox: a durable call there finds the run closed and is
        stopped (`Evicted`). On the worker's loop it found no run, and an action called there ran
        for real, unrecorded, each time a resting run was dropped."""
        self.runtime.closed = True
        if self._bridge is not None:
            self._bridge.abort()
        with self.loop.as_running():
            for task in self.loop.pending_tasks():
                with contextlib.suppress(BaseException):
                    task.get_coro().close()
                # Destroyed pending, it would call the loop's handler from its finalizer: Python code
                # run at whatever moment the garbage collector picks (even in another run's activation).
                task._log_destroy_pending = False  # type: ignore[attr-defined]
            if self._coro is not None:
                with contextlib.suppress(BaseException):
                    self._coro.close()  # never started when a watched stretch was cut short before it
        main = self.main
        if main is not None and main.done() and not main.cancelled():
            main.exception()  # retrieved: no "exception was never retrieved" from its finalizer either
        self.loop.close()
        self.runtime.release()


def _mismatched(error: Any) -> bool:
    """Whether a step's error record is an ArgumentsMismatch (see `_pause_on_failure`)."""
    return (
        isinstance(error, dict) and error.get("type") == "ArgumentsMismatch" and error.get("module") == "cairn.errors"
    )


def rows_to_resolutions(rows: Iterable[StepRow]) -> list[Resolution]:
    return in_delivery_order(Resolution.of(r) for r in rows)


class _SyncBridge:
    """Runs a plain `def` workflow on its own thread; each durable call hops to the loop and back.

    The two sides strictly alternate, so the workflow stays deterministic: the workflow's loop runs
    only while the thread waits for the answer to a durable call, and the thread runs only while
    the loop waits for its next message (`awaiting`). That wait is not a blocking one on the
    worker's loop: the activation awaits `receive`, which the thread wakes with
    `call_soon_threadsafe`, so heartbeats, claims and other runs go on while the workflow code
    computes. (`receive_blocking` is for callers with no loop of their own: replay tools, tests.)
    Eviction answers the blocked thread with `Evicted`, unwinding it.
    """

    def __init__(self, runtime: Runtime, fn: Any) -> None:
        self._runtime = runtime
        self._fn = fn
        self._to_loop: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._to_thread: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._wake: Callable[[], None] | None = None
        """How the thread wakes the activation awaiting its next message (set only while it waits)."""
        self._inbox: asyncio.Future[tuple[str, Any]] | None = None
        """The workflow loop's future for the thread's next message, while it waits for one."""

    @property
    def awaiting(self) -> bool:
        """Whether the workflow's loop waits for the thread (which is running, or has just answered)."""
        return self._inbox is not None and not self._inbox.done()

    def _thread_main(self) -> None:
        set_thread_runtime(self._runtime, self)
        try:
            with sandbox.guarded():
                value = self._fn()
            self._send(("done", value))
        except BaseException as exc:
            self._send(("error", exc))
        finally:
            set_thread_runtime(None, None)

    def _send(self, message: tuple[str, Any]) -> None:
        """On the workflow thread: hand a message to the loop side, waking it if it awaits one."""
        with self._lock:
            self._to_loop.put(message)
            wake, self._wake = self._wake, None
        if wake is not None:
            wake()

    def call(self, awaitable: Any) -> Any:
        """Called on the workflow thread: block until the loop has awaited `awaitable`."""
        self._send(("call", awaitable))
        kind, value = self._to_thread.get()
        if kind == "abort":
            raise Evicted()
        if kind == "error":
            raise value
        return value

    def abort(self) -> None:
        self._to_thread.put(("abort", None))

    def receive_blocking(self) -> None:
        """Wait (blocking) for the thread's next message and hand it to the workflow's loop."""
        try:
            message = self._to_loop.get(timeout=_SYNC_STEP_TIMEOUT)
        except queue.Empty:
            message = ("stalled", None)
        self._deliver(message)

    async def receive(self) -> None:
        """Await the thread's next message without blocking the running loop, and hand it over."""
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not arrived.done():
                arrived.set_result(None)

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
                loop.call_soon_threadsafe(resolve)

        with self._lock:
            waiting = self._to_loop.empty()
            if waiting:
                self._wake = wake
        if waiting:
            try:
                async with asyncio.timeout(_SYNC_STEP_TIMEOUT):
                    await arrived
            except TimeoutError:
                self._deliver(("stalled", None))
                return
            finally:
                with self._lock:
                    if self._wake is wake:
                        self._wake = None
        self._deliver(self._to_loop.get_nowait())

    def _deliver(self, message: tuple[str, Any]) -> None:
        inbox = self._inbox
        assert inbox is not None and not inbox.done()
        inbox.set_result(message)

    async def run(self) -> Any:
        thread = threading.Thread(target=self._thread_main, name=f"cairn-wf-{self._runtime.run_id}", daemon=True)
        with sandbox.suspended():
            thread.start()
        while True:
            self._inbox = self._runtime.loop.create_future()
            kind, value = await self._inbox
            self._inbox = None
            if kind == "stalled":
                raise CairnError(
                    f"plain-def workflow {self._runtime.run_id} did not reach a durable call within "
                    f"{_SYNC_STEP_TIMEOUT:.0f}s; blocking work belongs in an action"
                )
            if kind == "done":
                return value
            if kind == "error":
                raise value
            try:
                self._to_thread.put(("ok", await value))
            except Evicted:
                self._to_thread.put(("abort", None))
                raise
            except BaseException as exc:
                self._to_thread.put(("error", exc))


def _within_limit(props: dict[str, Any]) -> dict[str, Any]:
    """Properties held to the payload limit, as every payload is: they are recorded after every
    step (3 MB a hundred times), and were the one payload nobody measured. A property over it, and
    then the largest ones while the whole still is, are recorded as a note saying so: the run goes
    on, and whoever reads its properties sees why that one is missing."""
    out: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for key, value in props.items():
        try:
            sizes[key] = len(text_of(value, f"property {key!r}"))
            out[key] = value
        except PayloadTooLarge as exc:
            out[key] = f"<not recorded: {exc}>"
    limit = max_payload_bytes()
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if len(json.dumps(out, default=str)) <= limit:
            break
        out[key] = (
            f"<not recorded: property {key!r} is {sizes[key]} bytes of JSON; with the others, the properties "
            f"are over the {limit}-byte payload limit (CAIRN_MAX_PAYLOAD_BYTES)>"
        )
    return out


def _shown(value: Any) -> str:
    """A property JSON cannot hold, as its repr; one whose repr raises (a detached ORM object) as
    its type. Recording properties only watches the run: it failed the run with the repr's error."""
    try:
        return repr(value)
    except Exception as exc:
        return f"<{type(value).__qualname__} object: its repr() raised {type(exc).__name__}>"
