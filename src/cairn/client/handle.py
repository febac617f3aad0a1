"""RunHandle: read and control one run by id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cairn import telemetry
from cairn.errors import JournalCorrupted, RunNotFound, WorkflowCancelled, WorkflowFailed
from cairn.names import check_name, storable
from cairn.records import RunRow
from cairn.registry import registry
from cairn.serialization import decode_error, dumps, loads
from cairn.store.open import redact_url
from cairn.types import Json, RunStatus, StepKind, StepStatus

if TYPE_CHECKING:
    from cairn.client.client import Client


@dataclass(frozen=True)
class StepInfo:
    """One journal step, decoded for people and programs."""

    seq: int
    kind: StepKind
    name: str
    args: Json
    status: StepStatus
    result: Json
    error: Json
    attempt: int
    created_at: float
    started_at: float | None
    completed_at: float | None
    logs: list[str]
    due_at: float | None = None
    """When a timer falls due, or an action attempt is due (its lease runs out while it runs)."""

    @property
    def duration(self) -> float | None:
        start = self.started_at or self.created_at
        return None if self.completed_at is None else max(0.0, self.completed_at - start)


class RunHandle:
    def __init__(self, client: Client, run_id: str) -> None:
        self.client = client
        self.id = run_id
        self.created: bool | None = None
        """From `start`: whether this call created the run (False: the id named an existing run,
        which was returned and nothing was started). None for a handle from `get`."""
        self.input_differs = False
        """From a `start` that found the run: whether that run was started with other input."""

    def __repr__(self) -> str:
        return f"<RunHandle {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunHandle) and other.id == self.id and other.client.url == self.client.url

    def __hash__(self) -> int:
        return hash((self.id, self.client.url))

    def _stored_id(self) -> str:
        """The id, when a run could have it (one with a NUL byte could never be stored)."""
        if not storable(self.id):
            raise RunNotFound(f"no run with id {self.id!r}: run ids never contain NUL bytes")
        return self.id

    async def describe(self) -> RunRow:
        row = await self.client.store.get_run(self.id) if storable(self.id) else None
        if row is None:
            raise RunNotFound(f"no run with id {self.id!r} in {redact_url(self.client.url)}")
        return row

    async def diagnose(self) -> str | None:
        """Why the run cannot progress now (no live worker runs its workflow, or an action one of
        its steps waits to start), or None. Such a run waits, cancellable, for a worker that can."""
        return (await self.client.store.unserved([self.id])).get(self.id)

    async def children(self, limit: int = 100) -> list[RunRow]:
        """The runs this run started (child workflows), oldest first, at most `limit`."""
        return await self.client.store.list_children(self.id, limit)

    async def status(self) -> RunStatus:
        return (await self.describe()).status

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the run to finish; its value, or its exception re-raised (WorkflowCancelled if
        cancelled, WorkflowTimeout if it outlived its workflow's timeout)."""
        return await self._result(timeout, pending=False)

    async def _result(self, timeout: float | None, pending: bool) -> Any:
        """`result()`; `pending` when the caller has just created the run (its first read is skipped)."""
        row = await self._wait_terminal(timeout, pending)
        if row.status == RunStatus.COMPLETED:
            value = loads(row.result)
            defn = registry.workflow(row.workflow)
            return defn.signature.decode_result(value) if defn is not None else value
        try:
            error = decode_error(row.error, WorkflowFailed)
        except ValueError as exc:
            if row.status == RunStatus.CANCELLED:
                raise WorkflowCancelled(f"run {self.id} was cancelled") from None
            raise JournalCorrupted(self.id, None, row.error, str(exc)) from None
        if row.status == RunStatus.CANCELLED and not isinstance(error, WorkflowCancelled):
            raise WorkflowCancelled(f"run {self.id} was cancelled")  # however the cancel was recorded
        raise error

    async def _settled(self, timeout: float) -> RunRow:
        """The run's row once it has ended or is stuck on an error (paused for a fix: no wait
        outlasts that), or as it is after `timeout` seconds: what a CLI's or an HTTP caller's wait
        answers with."""
        try:
            return await self.client.waiters.here().wait(self._stored_id(), timeout, or_stuck=True)
        except TimeoutError:
            return await self.describe()

    async def _wait_terminal(self, timeout: float | None, pending: bool = False) -> RunRow:
        """The run's row once it has ended, from the client's shared waiter (see `client.waiter`)."""
        check_timeout(timeout)
        try:
            return await self.client.waiters.here().wait(self._stored_id(), timeout, created=pending)
        except TimeoutError:
            if timeout is None:  # not the caller's timeout: a test environment's word that it cannot end
                raise
            row = await self.describe()
            if row.status.is_terminal:  # ended before the wait could look (timeout=0), or just as it ran out
                return row
            raise TimeoutError(f"run {self.id} did not finish within {timeout}s (status: {row.status})") from None

    async def steps(self, after: int = 0, limit: int | None = None, *, last: int | None = None) -> list[StepInfo]:
        """The run's steps in the order it scheduled them. A long run's a page at a time: those
        after step `after`, at most `limit` (the next page starts after the last seq given); or its
        `last` latest ones. All of them by default. ValueError for a bad bound, nothing read."""
        _check_page(after, limit, last)
        await self.describe()
        return [
            StepInfo(
                seq=s.seq,
                kind=s.kind,
                name=s.name,
                args=loads(s.args),
                status=s.status,
                result=loads(s.result),
                error=loads(s.error),
                attempt=s.attempt,
                created_at=s.created_at,
                started_at=s.started_at,
                completed_at=s.completed_at,
                logs=loads(s.logs) or [],
                due_at=s.due_at,
            )
            for s in await self.client.store.list_steps(self.id, after, limit, last=last)
        ]

    async def properties(self, history: bool = False, *, last: int | None = None) -> Any:
        """Current properties; with history=True, [{"activation", "properties"}] after each change
        (the `last` latest only, when given)."""
        _check_page(0, None, last, "properties")
        row = await self.describe()
        if not history:
            return loads(row.properties) or {}
        snapshots = await self.client.store.property_history(self.id, last=last)
        return [{"activation": a, "properties": json.loads(p)} for a, p in snapshots]

    async def sizes(self) -> RunSizes:
        """How many steps, events and property snapshots the run has recorded (to page through them)."""
        await self.describe()
        return RunSizes(*await self.client.store.run_sizes(self.id))

    async def logs(self) -> list[tuple[int, str, str]]:
        """The lines the run's actions logged (`cairn.context().logger`): (seq, step name, line),
        in step order. Reads no step's arguments or result: cheap on a long run."""
        await self.describe()
        return [
            (seq, name, line)
            for seq, name, text in await self.client.store.run_logs(self.id)
            for line in loads(text) or []
        ]

    async def memory(self) -> dict[str, Any]:
        await self.describe()
        return {k: json.loads(v) for k, v in (await self.client.store.get_memory(self.id)).items()}

    async def signal(self, name: str, payload: Any = None) -> None:
        """Send signal `name` to the run, buffered until a `wait_for_signal(name)` takes it (a paused
        or waiting run receives it too). IllegalTransition, nothing sent, once the run has finished."""
        check_name(name, "signal name")
        text = dumps(payload, f"payload of signal {name!r}")
        if not storable(self.id) or not await self.client.store.send_signal(self.id, name, text):
            raise RunNotFound(f"no run with id {self.id!r}; the signal {name!r} was not sent")

    # --- control: IllegalTransition when the status forbids it (see cairn.transitions); pausing a
    # paused run or cancelling a cancelled one changes nothing and is safe to repeat or race ---

    async def pause(self) -> RunStatus:
        """The run takes no new steps until `resume()`; a step in flight finishes and is recorded."""
        return await self.client.store.pause(self._stored_id())

    async def resume(self) -> RunStatus:
        """Continue a paused run (one paused on an error retries the failed step; one paused before
        it ever started is pending again). A run that is going already is left as it is and its
        status returned (safe to repeat or race); a finished one is IllegalTransition."""
        return await self.client.store.resume(self._stored_id())

    async def cancel(self) -> RunStatus:
        """Stop the run and its children; pending actions are cancelled; result() raises WorkflowCancelled."""
        before = await self.describe() if telemetry.enabled() else None  # its span ends here
        status = await self.client.store.cancel(self._stored_id())
        if before is not None and not before.status.is_terminal and status == RunStatus.CANCELLED:
            found = await self.client.store.run_trace(before.id)
            telemetry.record_run(None if found is None else found[1], before, "cancelled", await self.client.now())
        return status

    kill = cancel

    async def retry(self) -> RunStatus:
        """Continue a failed run, or one paused on an error, from the failed step."""
        return await self.client.store.retry(self._stored_id())

    async def fork(self, from_step: int, id: str | None = None) -> RunHandle:
        """A new run that reuses this run's journal up to step `from_step`, then continues on its own.
        The journal is reused by whole activations: steps one activation scheduled together (a
        signal wait and the timer of its timeout, the branches of a gather) are reused only when all of
        them lie at or before `from_step`; otherwise the fork schedules them again."""
        if id is not None:
            check_name(id, "run id of the fork")
        return RunHandle(self.client, await self.client.store.fork(self._stored_id(), from_step, id))

    async def events(
        self, after: int = 0, limit: int | None = None, *, last: int | None = None, steps: range | None = None
    ) -> list[RunEvent]:
        """Every state change of the run, oldest first; a long run's a page at a time, as `steps()`
        pages its steps, by event id (`after`, `limit`, or the `last` ones); `steps`: only the
        events of those steps (`range(101, 301)`: steps 101 to 300)."""
        _check_page(after, limit, last, "events")
        of_steps = None
        if steps is not None:
            if not isinstance(steps, range) or steps.step != 1:
                raise ValueError(
                    f"events(steps=...) takes a range of step numbers, such as range(1, 201), got {steps!r}"
                )
            if last is not None:
                raise ValueError(
                    "events(last=...) takes no steps=: page the events of some steps with after= and limit="
                )
            if not steps:
                return []
            of_steps = (steps.start, steps.stop - 1)
        await self.describe()
        return [
            RunEvent(e.id, e.at, e.kind, e.step, json.loads(e.detail) if e.detail else {})
            for e in await self.client.store.list_events(self.id, after, limit, last=last, steps=of_steps)
        ]


def _check_page(after: int, limit: int | None, last: int | None, what: str = "steps") -> None:
    """The bounds of a page of `what` (`steps()`, `events()`): whole numbers, a page of at least
    one, `last` on its own."""
    for name, value, least in (("after", after, 0), ("limit", limit, 1), ("last", last, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ValueError(f"{what}({name}=...) takes a whole number of at least {least}, got {value!r}")
    if last is not None and (after or limit is not None):
        raise ValueError(
            f"{what}(last=...) gives a run's latest {what} and takes neither after= nor limit=: "
            "page forwards with after= and limit=, or take the tail with last= alone"
        )


@dataclass(frozen=True)
class RunSizes:
    """How much a run has recorded (`handle.sizes()`)."""

    steps: int
    events: int
    snapshots: int
    """Property snapshots: `properties(history=True)` gives one per activation that changed them."""


@dataclass(frozen=True)
class RunEvent:
    """One state change: `kind` is e.g. "started", "step.scheduled", "step.retried", "paused"."""

    id: int
    at: float
    kind: str
    step: int | None
    detail: dict[str, Any]


def check_timeout(timeout: float | None) -> None:
    """A wait's timeout: None (no limit) or seconds, 0 or more; NaN too is refused."""
    if timeout is not None and not timeout >= 0:
        raise ValueError(f"timeout must be a number of seconds, 0 or more, got {timeout!r}")
