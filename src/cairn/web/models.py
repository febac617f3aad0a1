"""Pydantic models of every request and response body of the HTTP API (they make the OpenAPI document).

Rows are turned into these here, once, so the JSON API and the pages show the same fields.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from cairn.client.handle import RunEvent, StepInfo
from cairn.serialization import loads
from cairn.store.protocol import QueueRow
from cairn.types import RunStatus

ID_MAX = 255
"""Run ids, workflow and signal names: at most this many characters (as the client enforces)."""
NO_NUL = r"^[^\x00]*$"
"""Names stored as text: PostgreSQL's text holds no NUL byte."""
StoredName = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX, pattern=NO_NUL)]
"""An id or a name a run is stored under."""


class ErrorOut(BaseModel):
    error: str = Field(description="A stable code: bad_request, unauthorized, forbidden, csrf, not_found, ...")
    message: str = Field(description="What was wrong and what to do, for people.")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StartIn(Strict):
    args: list[JsonValue] = Field(default_factory=list, description="Positional arguments, in signature order.")
    kwargs: dict[str, JsonValue] = Field(default_factory=dict, description="Keyword arguments by parameter name.")
    id: StoredName | None = Field(default=None, description="Run id; an existing id returns that run.")
    queue: StoredName | None = Field(default=None, description="Queue (default: the workflow's).")
    key: StoredName | None = Field(default=None, description="The run's key in its queue (what per_key counts).")
    priority: int | None = Field(
        default=None,
        gt=-(2**31),
        lt=2**31,
        strict=True,
        description="Lower numbers start first (a queue declared with priority=True).",
    )
    dedup_key: StoredName | None = Field(
        default=None,
        description="While a run of the queue started with this key is unfinished, that run is returned (200).",
    )


class ForkIn(Strict):
    from_step: int = Field(ge=0, le=2**31 - 1, strict=True, description="Reuse the journal up to this step.")
    id: StoredName | None = Field(default=None, description="Id of the new run.")


class WorkflowOut(BaseModel):
    name: str
    description: str
    queue: str
    input_schema: dict[str, JsonValue]
    counts: dict[str, int] = Field(description="Runs of this workflow per status.")
    registered_here: bool = Field(description="Its code is imported in this process (else known from a worker).")


class RunSummary(BaseModel):
    id: str
    workflow: str
    status: RunStatus
    pause_reason: str | None
    queue: str
    parent_id: str | None
    created_at: float
    started_at: float | None
    completed_at: float | None
    updated_at: float
    duration: float | None = Field(description="Seconds from start to completion (or to now while running).")
    activations: int

    @classmethod
    def of(cls, row: Any, now: float) -> RunSummary:
        start = row.started_at or row.created_at
        end = row.completed_at if row.completed_at is not None else (now if row.started_at is not None else None)
        return cls(
            id=row.id,
            workflow=row.workflow,
            status=row.status,
            pause_reason=row.pause_reason,
            queue=row.queue,
            parent_id=row.parent_id,
            created_at=row.created_at,
            started_at=row.started_at,
            completed_at=row.completed_at,
            updated_at=row.updated_at,
            duration=None if end is None else max(0.0, end - start),
            activations=row.activations,
        )


class RunsOut(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")
    counts: dict[str, int] | None = Field(default=None, description="Runs per status (with `counts=true`).")


class ChildOut(BaseModel):
    id: str
    workflow: str
    status: RunStatus
    parent_seq: int | None


class Timings(BaseModel):
    created_at: float
    started_at: float | None
    completed_at: float | None
    updated_at: float
    duration: float | None = Field(description="Seconds from start to completion (or to now while running).")


class RunOut(RunSummary):
    parent_seq: int | None
    code_version: str | None
    input: JsonValue
    output: JsonValue = Field(description="What the run returned (null until it completes); `result` is the same.")
    result: JsonValue
    error: JsonValue
    timings: Timings = Field(description="The run's times, also given at the top level.")
    properties: JsonValue
    children: list[ChildOut]

    @classmethod
    def detail(cls, row: Any, now: float, children: list[Any]) -> RunOut:
        summary = RunSummary.of(row, now)
        output = loads(row.result)
        return cls(
            **summary.model_dump(),
            parent_seq=row.parent_seq,
            code_version=row.code_version,
            input=loads(row.input),
            output=output,
            result=output,
            error=loads(row.error),
            timings=Timings.model_validate(summary.model_dump(include=set(Timings.model_fields))),
            properties=loads(row.properties),
            children=[
                ChildOut(id=c.id, workflow=c.workflow, status=c.status, parent_seq=c.parent_seq) for c in children
            ],
        )


class StartOut(BaseModel):
    id: str
    status: RunStatus
    created: bool = Field(description="False when the id named an existing run (nothing was started).")
    done: bool = Field(description="The run has finished (then `result` or `error` is set).")
    result: JsonValue = None
    output: JsonValue = Field(default=None, description="The same as `result` (the name GET /api/runs/{id} uses).")
    error: JsonValue = None


class StepOut(BaseModel):
    seq: int
    kind: str
    name: str
    title: str | None = Field(description="The action's human name, where its code is registered here.")
    description: str | None
    args: JsonValue
    status: str
    result: JsonValue
    error: JsonValue
    attempt: int
    created_at: float
    started_at: float | None
    completed_at: float | None
    duration: float | None
    due_at: float | None = Field(
        default=None, description="When a timer falls due, or when a running action attempt's lease runs out."
    )
    logs: list[str]

    @classmethod
    def of(cls, step: StepInfo, title: str | None, description: str | None) -> StepOut:
        return cls(
            seq=step.seq,
            kind=step.kind.value,
            name=step.name,
            title=title,
            description=description,
            args=step.args,
            status=step.status.value,
            result=step.result,
            error=step.error,
            attempt=step.attempt,
            created_at=step.created_at,
            started_at=step.started_at,
            completed_at=step.completed_at,
            duration=step.duration,
            due_at=step.due_at,
            logs=step.logs,
        )


class PropertySnapshot(BaseModel):
    activation: int
    properties: JsonValue


class EventOut(BaseModel):
    id: int
    at: float
    kind: str
    step: int | None
    detail: dict[str, JsonValue]

    @classmethod
    def of(cls, e: RunEvent) -> EventOut:
        return cls(id=e.id, at=e.at, kind=e.kind, step=e.step, detail=e.detail)


class LogOut(BaseModel):
    seq: int
    name: str
    line: str


class ResultOut(BaseModel):
    id: str
    status: RunStatus
    done: bool
    result: JsonValue = None
    output: JsonValue = Field(default=None, description="The same as `result` (the name GET /api/runs/{id} uses).")
    error: JsonValue = None


class ControlOut(BaseModel):
    id: str
    status: RunStatus


class SignalOut(BaseModel):
    id: str
    name: str
    sent: bool


class WorkerOut(BaseModel):
    id: str
    host: str
    pid: int
    queues: str
    in_flight: int
    started_at: float
    heartbeat_at: float
    heartbeat_age: float
    alive: bool


class WorkersOut(BaseModel):
    workers: list[WorkerOut]
    unserved: dict[str, str] = Field(description="Run id → why no live worker can serve it.")


class QueueOut(BaseModel):
    name: str
    counts: dict[str, int] = Field(description="Runs of the queue per status.")
    concurrency: int | None = None
    per_worker: int | None = None
    per_key: int | None = None
    rate_limit: int | None = Field(default=None, description="Starts allowed per rate_period seconds.")
    rate_period: float | None = None
    priority: bool = False
    runs_waiting: int = 0
    runs_in_flight: int = 0
    attempts_waiting: int = 0
    attempts_in_flight: int = 0
    rate_next_at: float | None = Field(default=None, description="With a rate limit: when the next start may go.")
    rate_starts: int = Field(default=0, description="Starts counted by the rate limit.")

    @classmethod
    def of(cls, name: str, counts: dict[str, int], row: QueueRow | None) -> QueueOut:
        if row is None:  # a queue seen on runs, declared by no cairn.Queue: no limits
            return cls(name=name, counts=counts)
        spec = row.spec
        return cls(
            name=name,
            counts=counts,
            concurrency=spec.concurrency,
            per_worker=spec.per_worker,
            per_key=spec.per_key,
            rate_limit=spec.rate_n,
            rate_period=spec.rate_period,
            priority=spec.priority,
            runs_waiting=row.runs_waiting,
            runs_in_flight=row.runs_in_flight,
            attempts_waiting=row.attempts_waiting,
            attempts_in_flight=row.attempts_in_flight,
            rate_next_at=row.rate_next_at,
            rate_starts=row.rate_starts,
        )


class QueuesOut(BaseModel):
    queues: list[QueueOut]
    note: str


class ScheduleOut(BaseModel):
    id: str
    workflow: str
    expression: str = Field(description="The cron expression, or `every Ns`.")
    tz: str
    overlap: str
    catchup: str
    source: str = Field(description='"code" (declared with cairn.Schedule) or "api".')
    paused: bool
    next_fire_at: float | None
    last_fire_at: float | None
    last_run_id: str | None
    last_status: str | None
    declared: bool = Field(description="False for one declared in code that no live worker declares: it does not fire.")


class SchedulesOut(BaseModel):
    schedules: list[ScheduleOut]


class HealthOut(BaseModel):
    status: str
    database: str
