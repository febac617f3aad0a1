"""The per-run runtime that workflow-facing functions reach through the running loop.

It numbers steps in the order the workflow *schedules* them (never completion order), matches
each against the journal while replaying, and turns new ones into `NewStep` commands. Results are
delivered in the batches recorded in the journal (`delivered_in`), in the order `in_delivery_order`
gives from the journal alone, so races such as `wait_for` versus a timer replay exactly as they
first ran.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cairn.engine.loop import DeterministicLoop, DurableTimerHandle
from cairn.errors import JournalCorrupted, NonDeterminismError, NotInWorkflow, SerializationError
from cairn.records import NewStep, StepRow
from cairn.serialization import decode_error, dumps, same_json
from cairn.types import Json, StepKind, StepStatus

T = TypeVar("T")


class Evicted(BaseException):
    """Unwinds workflow code whose run was evicted from memory; never seen by users."""


@dataclass(slots=True)
class Resolution:
    """A step outcome to deliver to the workflow."""

    seq: int
    status: StepStatus
    result: str | None = None
    error: str | None = None
    memory_writes: str | None = None
    at: float | None = None
    """When it happened: a timer's due time, another step's end (a signal wait's: when its signal
    was there for it); None for outcomes handed over as they arrive."""
    timer: bool = False

    @classmethod
    def of(cls, row: StepRow) -> Resolution:
        timer = row.kind == StepKind.TIMER
        at = row.due_at if timer else row.completed_at
        return cls(row.seq, row.status, row.result, row.error, row.memory_writes, at, timer)


def in_delivery_order(batch: Iterable[Resolution]) -> list[Resolution]:
    """A batch in the order the workflow is handed it, live and on every replay alike (from what the
    journal holds): the results that ended by the first timer's due time (in step order), then that
    timer, then those that ended by the next one's, and so on; the rest after the last timer. A
    timer fired late (its worker busy, draining or down) thus still beats a result that came after
    it, as it would have on time, and loses to one that came before it: `wait_for(child, 3600)`
    times out when the child ended a day later, even if both are delivered in one activation.
    (A result of a higher step that ended before the timer went after it: cut by the timer at the
    first result of the batch that ended after it, the batch handed a `wait_for` its timeout first.)"""
    ordered = sorted(batch, key=lambda r: r.seq)
    timers = sorted((r for r in ordered if r.timer), key=lambda r: (r.at if r.at is not None else math.inf, r.seq))
    if not timers:
        return ordered
    results = [r for r in ordered if not r.timer]
    out: list[Resolution] = []
    for timer in timers:
        due = timer.at if timer.at is not None else math.inf
        ended = [r for r in results if r.at is not None and r.at <= due]
        if ended:
            out.extend(ended)
            results = [r for r in results if not (r.at is not None and r.at <= due)]
        out.append(timer)
    return out + results


def at_their_times(batch: Sequence[Resolution]) -> list[list[Resolution]]:
    """A batch in delivery order cut into what happened at one time: each timer alone, the results
    between them together. The workflow runs until it waits again after each, as it would have had
    each come on time: handed a `wait_for`'s timeout and then its late result, it has timed out
    (with both at once, `wait_for` returns a result that is there when it wakes)."""
    groups: list[list[Resolution]] = [[]]
    for r in batch:
        if r.timer:
            if groups[-1]:
                groups.append([])
            groups[-1].append(r)
            groups.append([])
        else:
            groups[-1].append(r)
    if len(groups) > 1 and not groups[-1]:
        groups.pop()
    return groups


@dataclass(slots=True)
class _Pending:
    kind: StepKind
    name: str
    future: asyncio.Future[Any] | None = None
    timer: DurableTimerHandle | None = None
    decode: Callable[[Json], Any] | None = None


@dataclass(slots=True)
class Commands:
    new_steps: list[NewStep] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)


def describe(kind: str, name: str, args: str | None) -> str:
    if args is None:
        return f"{kind} {name!r}"
    return f"{kind} {name}({args if len(args) <= 200 else args[:200] + '...'})"


class Runtime:
    def __init__(self, run_id: str, journal: Mapping[int, StepRow], seed: int) -> None:
        self.run_id = run_id
        self.loop = DeterministicLoop(self)
        self.journal = dict(journal)
        self.journal_bytes = sum(map(row_bytes, self.journal.values()))
        """About what the journal holds in memory, kept as steps are added (see `row_bytes`)."""
        self.recorded_activations = 0
        self.activation = 0
        self.next_seq = 1
        self.pending: dict[int, _Pending] = {}
        self._children: dict[str, asyncio.Future[Any]] = {}
        """The child steps still waiting, by child id (see `wait_for_child`)."""
        self.commands = Commands()
        self.memory: dict[str, str] = {}
        self.fatal: BaseException | None = None
        self.closed = False
        self._rng = random.Random(seed)
        self._patches: dict[str, bool] = {}

    def release(self) -> None:
        """Once its run is closed: its loop's reference back to it is the one cycle a run's objects
        make, and broken, a finished run is freed as its copy is dropped. Left, it waited for the
        garbage collector, most often for a full collection (a run that lived through a few
        collections is in the oldest generation), each one a walk of every object of the process."""
        del self.loop

    @property
    def replaying(self) -> bool:
        return self.activation <= self.recorded_activations

    # --- scheduling ------------------------------------------------------------------------

    def _take_seq(self, kind: StepKind, name: str, args: str | None) -> tuple[int, StepRow | None]:
        if self.closed:
            raise Evicted()
        seq = self.next_seq
        self.next_seq += 1
        rec = self.journal.get(seq)
        if rec is not None and (
            rec.kind != kind
            or rec.name != name
            or (rec.args != args and kind != StepKind.TIMER and not same_json(rec.args, args))
        ):
            self._diverge(seq, describe(rec.kind, rec.name, rec.args), describe(kind, name, args))
        return seq, rec

    def _diverge(self, seq: int, recorded: str, attempted: str) -> None:
        if self.fatal is None:
            self.fatal = NonDeterminismError(self.run_id, seq, recorded, attempted)
        raise Evicted()

    def schedule(
        self,
        kind: StepKind,
        name: str,
        args: str | None,
        *,
        queue: str | None = None,
        options: Json = None,
        decode: Callable[[Json], Any] | None = None,
    ) -> asyncio.Future[Any]:
        """A step whose result arrives in a later activation (action, child, signal wait)."""
        seq, rec = self._take_seq(kind, name, args)
        fut: asyncio.Future[Any] = self.loop.create_future()
        self.pending[seq] = _Pending(kind, name, future=fut, decode=decode)
        fut.add_done_callback(lambda f, s=seq: self._on_future_done(s, f))  # type: ignore[misc]
        if rec is None:
            self.commands.new_steps.append(NewStep(seq, kind, name, args, queue=queue, options=options))
        return fut

    def wait_for_child(
        self,
        child_id: str,
        name: str,
        args: str | None,
        options: dict[str, Any],
        decode: Callable[[Json], Any],
        queue: str | None = None,
    ) -> asyncio.Future[Any]:
        """A child step waiting for run `child_id` (`options` say how it starts or joins it). A run
        has one parent step: while one waits for that child here, a second wait for it (`cairn.child`
        with its id twice at once, `ChildHandle.result` twice) shares it instead of taking it over."""
        waiting = self._children.get(child_id)
        if waiting is None or waiting.done():
            options = {**options, "run_id": child_id}
            waiting = self.schedule(StepKind.CHILD, name, args, queue=queue, options=options, decode=decode)
            self._children[child_id] = waiting
        return waiting

    def immediate(
        self,
        kind: StepKind,
        name: str,
        args: str | None,
        compute: Callable[[], str | None],
        options: Json = None,
        queue: str | None = None,
    ) -> str | None:
        """A step resolved at once and recorded (now/random/uuid, memory writes, sends, a child
        started detached on `queue`)."""
        seq, rec = self._take_seq(kind, name, args)
        if rec is not None:
            return rec.result
        value = compute()
        self.commands.new_steps.append(
            NewStep(
                seq,
                kind,
                name,
                args,
                status=StepStatus.COMPLETED,
                result=value,
                queue=queue,
                options=options,
                delivered=True,
            )
        )
        return value

    def start_timer(self, when: float, make: Callable[[int], DurableTimerHandle]) -> DurableTimerHandle:
        seq, rec = self._take_seq(StepKind.TIMER, "sleep", None)
        handle = make(seq)
        self.pending[seq] = _Pending(StepKind.TIMER, "sleep", timer=handle)
        if rec is None:
            self.commands.new_steps.append(NewStep(seq, StepKind.TIMER, "sleep", None, due_at=when))
        return handle

    def cancel_timer(self, seq: int) -> None:
        if self.pending.pop(seq, None) is not None:
            self._cancel(seq)

    def _on_future_done(self, seq: int, fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() and self.pending.pop(seq, None) is not None:
            self._cancel(seq)

    def _cancel(self, seq: int) -> None:
        rec = self.journal.get(seq)
        # Resolved but not delivered before this activation: a signal wait whose signal a commit
        # matched to it, stopped by a timer that came first. Named, so that the signal is given back.
        if rec is None or not rec.status.is_resolved or rec.delivered_in is None:
            self.commands.cancelled.append(seq)

    # --- delivery --------------------------------------------------------------------------

    def deliver(self, resolution: Resolution) -> None:
        """Hand a step's outcome to the workflow. A stored value that does not decode makes the run
        pause with JournalCorrupted (its cause named), never the workflow see a wrong value."""
        if resolution.memory_writes:
            try:
                writes = [(str(k), str(v)) for k, v in json.loads(resolution.memory_writes)]
            except (ValueError, TypeError):
                self._corrupted(resolution.seq, resolution.memory_writes, "is not a list of memory writes")
                return
            self.memory.update(writes)
        pending = self.pending.pop(resolution.seq, None)
        if pending is None:
            if resolution.seq >= self.next_seq:
                self._diverge_quietly(resolution.seq)
            return
        if pending.timer is not None:
            self.loop.fire(pending.timer)
            return
        fut = pending.future
        assert fut is not None
        if fut.done():
            return
        if resolution.status == StepStatus.COMPLETED:
            try:
                value = json.loads(resolution.result) if resolution.result is not None else None
            except json.JSONDecodeError as exc:
                self._corrupted(resolution.seq, resolution.result, f"is not JSON ({exc.msg} at char {exc.pos})")
                return
            try:
                fut.set_result(pending.decode(value) if pending.decode else value)
            except SerializationError as exc:
                self._corrupted(resolution.seq, resolution.result, f"does not decode to its type: {exc}")
        elif resolution.status == StepStatus.FAILED:
            try:
                fut.set_exception(decode_error(resolution.error))
            except ValueError as exc:
                self._corrupted(resolution.seq, resolution.error, f"{exc}")
        else:
            fut.cancel()

    def _corrupted(self, seq: int, stored: str | None, why: str) -> None:
        if self.fatal is None:
            self.fatal = JournalCorrupted(self.run_id, seq, stored, why)

    def _diverge_quietly(self, seq: int) -> None:
        rec = self.journal.get(seq)
        if self.fatal is None and rec is not None:
            self.fatal = NonDeterminismError(
                self.run_id, seq, describe(rec.kind, rec.name, rec.args), "nothing (the workflow no longer reaches it)"
            )

    # --- recorded values ------------------------------------------------------------------

    def now(self) -> float:
        return self._recorded("now", lambda: dumps(self.loop.time()), float)

    def random(self) -> float:
        return self._recorded("random", lambda: dumps(self._rng.random()), float)

    def uuid4_int(self) -> int:
        return self._recorded("uuid4", lambda: dumps(str(self._rng.getrandbits(128))), int)

    def _recorded(self, name: str, compute: Callable[[], str], kind: Callable[[Any], T]) -> T:
        """A value recorded once (now, random, uuid4) and read back on replay."""
        seq = self.next_seq
        text = self.immediate(StepKind.RECORD, name, None, compute)
        try:
            return kind(json.loads(text or "null"))
        except (ValueError, TypeError):
            self._corrupted(seq, text, f"is not a recorded {name} value")
            raise Evicted() from None

    def patched(self, change_id: str, deprecated: bool = False) -> bool:
        if change_id in self._patches:
            return self._patches[change_id]
        name = f"patched:{change_id}"
        rec = self.journal.get(self.next_seq)
        if rec is not None and rec.kind == StepKind.RECORD and rec.name == name:
            self.immediate(StepKind.RECORD, name, None, lambda: "true")
            taken = True
        elif self.replaying and not deprecated:
            taken = False
        else:
            if not deprecated:
                self.immediate(StepKind.RECORD, name, None, lambda: "true")
            taken = True
        self._patches[change_id] = taken
        return taken

    def memory_add(self, key: str, value: Any) -> None:
        text = dumps(value, f"memory value {key!r}")
        self.immediate(StepKind.MEMORY, key, text, lambda: None)
        self.memory[key] = text

    def memory_get(self, key: str, default: Any = None) -> Any:
        text = self.memory.get(key)
        return default if text is None else json.loads(text)

    def memory_keys(self) -> list[str]:
        return sorted(self.memory)

    def send_signal(self, run_id: str, name: str, payload: Any) -> asyncio.Future[Any]:
        """A send, scheduled as it is called (awaited or not, it is sent with this activation's
        commit); the future says whether it was delivered (RunNotFound, IllegalTransition)."""
        args = dumps({"run_id": run_id, "payload": payload}, f"payload of signal {name!r}")
        return self.schedule(StepKind.SEND_SIGNAL, name, args)

    # --- end of an activation ---------------------------------------------------------------

    def take_commands(self) -> Commands:
        out, self.commands = self.commands, Commands()
        # Steps scheduled in this activation are now part of the journal for any later replay.
        for step in out.new_steps:
            row = _as_row(self.run_id, step)
            self.journal[step.seq] = row
            self.journal_bytes += row_bytes(row)
        return out


STEP_BYTES = 250
"""About what a journal step holds besides its payloads' text (measured: 260 bytes a step with
small payloads)."""


def row_bytes(row: StepRow) -> int:
    """About how many bytes a journal step holds in memory."""
    return STEP_BYTES + len(row.args or "") + len(row.result or "") + len(row.error or "") + len(row.logs or "")


def _as_row(run_id: str, step: NewStep) -> StepRow:
    return StepRow(
        run_id=run_id,
        seq=step.seq,
        kind=step.kind,
        name=step.name,
        args=step.args,
        status=step.status,
        result=step.result,
        error=None,
        attempt=0,
        delivered_in=None,
        delivered_at=None,
        due_at=step.due_at,
        queue=step.queue,
        options=None,
        memory_writes=None,
        logs=None,
        created_at=0.0,
        started_at=None,
        completed_at=None,
    )


# --- finding the current runtime -----------------------------------------------------------

_thread_state = threading.local()


def current_runtime() -> Runtime | None:
    """The runtime of the workflow running here: through the loop, or a sync workflow's thread."""
    loop = asyncio.events._get_running_loop()
    if isinstance(loop, DeterministicLoop):
        return loop.runtime
    rt = getattr(_thread_state, "runtime", None)
    return rt if isinstance(rt, Runtime) else None


def require_runtime(what: str) -> Runtime:
    rt = current_runtime()
    if rt is None:
        raise NotInWorkflow(f"{what} can only be used inside a workflow")
    return rt


def in_sync_workflow_thread() -> bool:
    return getattr(_thread_state, "bridge", None) is not None


def set_thread_runtime(rt: Runtime | None, bridge: object | None) -> None:
    _thread_state.runtime = rt
    _thread_state.bridge = bridge


def thread_bridge() -> Any:
    return getattr(_thread_state, "bridge", None)
