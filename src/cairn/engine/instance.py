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
import inspect
import json
import queue
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from cairn.engine import sandbox
from cairn.engine.runtime import Evicted, Resolution, Runtime, set_thread_runtime
from cairn.errors import CairnError, NonDeterminismError, SerializationError, WorkflowCancelled
from cairn.records import ActivationResult, NewStep, RunRow, StepRow
from cairn.registry import WorkflowDef, instantiate
from cairn.serialization import dumps, error_to_json, to_jsonable
from cairn.types import RunStatus, StepKind, StepStatus

_SYNC_STEP_TIMEOUT = 300.0


class WorkflowInstance:
    def __init__(self, defn: WorkflowDef, run: RunRow, journal: Sequence[StepRow], seed: int) -> None:
        self.defn = defn
        self.run_id = run.id
        self.runtime = Runtime(run.id, {s.seq: s for s in journal}, seed)
        self.runtime.recorded_activations = run.activations
        self.loop = self.runtime.loop
        self._started_at = run.created_at
        self._input = run.input
        self.obj: Any = None
        self.main: asyncio.Task[Any] | None = None
        self._bridge: _SyncBridge | None = None
        self._last_properties: str | None = run.properties
        self.finished = False
        self.unrecorded: list[NewStep] = []
        """Steps the code scheduled while `restore` replayed recorded activations that the journal
        does not hold: a divergence the engine cannot see alone (`cairn replay` reports it)."""

    @property
    def activations(self) -> int:
        return self.runtime.activation

    # --- replay ----------------------------------------------------------------------------

    @classmethod
    def restore(cls, defn: WorkflowDef, run: RunRow, journal: Sequence[StepRow], seed: int) -> WorkflowInstance:
        """Rebuild the in-memory state after `run.activations` activations, executing nothing."""
        inst = cls(defn, run, journal, seed)
        # Steps resolved at once (records, memory writes, sends) are stored with delivered_in = 0, so
        # batches 1..K hold exactly what each activation delivered.
        batches: dict[int, list[StepRow]] = {}
        for row in journal:
            if row.delivered_in is not None and row.status.is_resolved:
                batches.setdefault(row.delivered_in, []).append(row)
        for k in range(1, run.activations + 1):
            rows = batches.get(k, [])
            when = rows[0].delivered_at if rows and rows[0].delivered_at is not None else inst._started_at
            inst._step(rows_to_resolutions(rows), when if k > 1 else inst._started_at)
            if inst.runtime.fatal is not None or inst.finished:
                break
        inst.unrecorded = inst.runtime.take_commands().new_steps
        return inst

    # --- a live activation -----------------------------------------------------------------

    def activate(self, batch: Sequence[StepRow] | Sequence[Resolution], now: float) -> ActivationResult:
        """Deliver `batch` (results, fired timers, signals the store matched to their waits) and run
        the workflow until nothing is ready. Signals are never matched here: the store pairs each
        open wait with a buffered signal when it claims the run and again when it commits (see
        `journal_tx.match_signals`), against the waits as they are in the database then."""
        rt = self.runtime
        if rt.fatal is not None:  # the replay of what was recorded diverged already
            return self._diverged()
        first = rt.activation == 0
        resolutions = sorted((r if isinstance(r, Resolution) else Resolution.of(r) for r in batch), key=lambda r: r.seq)
        paused = self._pause_on_failure(resolutions)
        if paused is not None:
            return paused
        self._step(resolutions, now if not first else self._started_at)
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
        if not result.counts_as_activation:
            rt.activation -= 1
        self._outcome(result)
        return result

    def _pause_on_failure(self, resolutions: Sequence[Resolution]) -> ActivationResult | None:
        """With on_failure="pause", an action that failed for good pauses the run before the workflow
        sees the failure, so that `retry` (after a fix) runs that step again and the run continues."""
        if self.defn.on_failure != "pause":
            return None
        for res in resolutions:
            pending = self.runtime.pending.get(res.seq)
            if res.status == StepStatus.FAILED and pending is not None and pending.kind == StepKind.ACTION:
                error = json.loads(res.error or "{}")
                error["step"] = res.seq
                error["message"] = f"step {res.seq} ({pending.name}) failed: {error.get('message', '')}"
                return ActivationResult(
                    status=RunStatus.PAUSED, pause_reason="error", error=dumps(error), counts_as_activation=False
                )
        return None

    def _step(self, resolutions: Iterable[Resolution], now: float) -> None:
        rt = self.runtime
        rt.activation += 1
        self.loop.set_time(now)
        if self.main is None:
            self.main = self.loop.create_task(self._main())
        for res in resolutions:
            rt.deliver(res)
        if rt.fatal is None:  # a record that does not decode: nothing more of the workflow runs
            self.loop.run_until_quiescent()
        if self.main.done():
            self.finished = True

    async def _main(self) -> Any:
        args, kwargs = self.defn.signature.decode_args(self._input)
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
        if inspect.iscoroutinefunction(entry):
            return await bound(*args, **kwargs)
        self._bridge = _SyncBridge(self.runtime, lambda: bound(*args, **kwargs))
        return await self._bridge.run()

    def _diverged(self) -> ActivationResult:
        """The run pauses on its divergence, and nothing else of this activation is kept: what it
        delivered stays undelivered, so that after a fix and `retry` the next activation hands the
        same results to the new code (and the steps it would have scheduled are not recorded)."""
        fatal = self.runtime.fatal
        assert fatal is not None
        return ActivationResult(
            status=RunStatus.PAUSED,
            pause_reason="nondeterminism" if isinstance(fatal, NonDeterminismError) else "corrupt_journal",
            error=dumps(error_to_json(fatal)),
            counts_as_activation=False,
        )

    def _outcome(self, result: ActivationResult) -> None:
        rt = self.runtime
        result.properties = self._properties()
        pending_timers = [p.timer.when() for p in rt.pending.values() if p.timer is not None]
        result.wake_at = min(pending_timers) if pending_timers else None
        main = self.main
        assert main is not None
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
                result.status, result.error = RunStatus.FAILED, dumps(error_to_json(err))
        elif isinstance(exc, WorkflowCancelled):
            result.status, result.error = RunStatus.CANCELLED, dumps(error_to_json(exc))
        elif isinstance(exc, Evicted):
            raise CairnError(f"workflow {self.run_id} was evicted while running")
        else:
            result.status, result.error = RunStatus.FAILED, dumps(error_to_json(exc))

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
                props[key] = repr(value)
        text = json.dumps(props, sort_keys=True, default=str)
        changed = text != self._last_properties
        self._last_properties = text
        return text if changed else None

    # --- eviction ---------------------------------------------------------------------------

    def close(self) -> None:
        """Drop the run from memory, unwinding its coroutines or sync thread without side effects."""
        self.runtime.closed = True
        if self._bridge is not None:
            self._bridge.abort()
        for task in self.loop.pending_tasks():
            with contextlib.suppress(BaseException):
                task.get_coro().close()
        self.loop.close()


def rows_to_resolutions(rows: Iterable[StepRow]) -> list[Resolution]:
    return [Resolution.of(r) for r in sorted(rows, key=lambda r: r.seq)]


class _SyncBridge:
    """Runs a plain `def` workflow on its own thread; each durable call hops to the loop and back.

    The two sides strictly alternate (the loop waits while the thread runs and vice versa), so the
    workflow stays deterministic. Eviction answers the blocked thread with `Evicted`, unwinding it.
    """

    def __init__(self, runtime: Runtime, fn: Any) -> None:
        self._runtime = runtime
        self._fn = fn
        self._to_loop: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._to_thread: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

    def _thread_main(self) -> None:
        set_thread_runtime(self._runtime, self)
        try:
            with sandbox.guarded():
                value = self._fn()
            self._to_loop.put(("done", value))
        except BaseException as exc:
            self._to_loop.put(("error", exc))
        finally:
            set_thread_runtime(None, None)

    def call(self, awaitable: Any) -> Any:
        """Called on the workflow thread: block until the loop has awaited `awaitable`."""
        self._to_loop.put(("call", awaitable))
        kind, value = self._to_thread.get()
        if kind == "abort":
            raise Evicted()
        if kind == "error":
            raise value
        return value

    def abort(self) -> None:
        self._to_thread.put(("abort", None))

    async def run(self) -> Any:
        thread = threading.Thread(target=self._thread_main, name=f"cairn-wf-{self._runtime.run_id}", daemon=True)
        with sandbox.suspended():
            thread.start()
        while True:
            try:
                kind, value = self._to_loop.get(timeout=_SYNC_STEP_TIMEOUT)
            except queue.Empty:
                raise CairnError(
                    f"plain-def workflow {self._runtime.run_id} did not reach a durable call within "
                    f"{_SYNC_STEP_TIMEOUT:.0f}s; blocking work belongs in an action"
                ) from None
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
