"""The records the engine and the store exchange: a run and its journal in, an activation's decisions out.

They live below both (the engine imports no store code, the store no engine code), so either can be
read, tested and changed on its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cairn.types import Json, RunStatus, StepKind, StepStatus


@dataclass(frozen=True, slots=True)
class RunRow:
    id: str
    workflow: str
    status: RunStatus
    input: str
    result: str | None
    error: str | None
    queue: str
    parent_id: str | None
    parent_seq: int | None
    created_at: float
    updated_at: float
    started_at: float | None
    completed_at: float | None
    activations: int
    properties: str | None
    code_version: str | None
    lease_owner: str | None
    lease_token: int
    pause_reason: str | None = None
    """Why a paused run is paused: "user", "error" (an action failed, on_failure="pause"),
    "nondeterminism" (its code diverged from the journal), "corrupt_journal" (a recorded value no
    longer decodes) or "deadlock" (its code ran too long without awaiting: WorkflowDeadlock)."""
    timeout_from: float | None = None
    """When its workflow's `timeout` began counting again after a retry (the retry's time); None
    when it counts from the run's start (`started_at`, its first activation's clock). A run
    pending in its queue has not started, and does not time out."""

    def deadline(self, timeout: float | None) -> float | None:
        """When the run times out, for its workflow's `timeout` (None: not while it is so). One
        judge for the worker's wake-up and check and for `control.time_out`. NULL is the common
        case, so a run activated by a worker of a version before the column (a rolling deploy)
        counts from its start too."""
        opened = self.timeout_from if self.timeout_from is not None else self.started_at
        if timeout is None or opened is None:
            return None
        return opened + timeout

    @property
    def stuck(self) -> bool:
        """Whether the run waits for a fix: paused on an error, a divergence or a deadlock (any pause
        but a user's), it goes on only once someone retries it. No wait for its end outlasts that."""
        return self.status == RunStatus.PAUSED and self.pause_reason not in (None, "user")


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create: what a start (or a child step, or a fork) gives."""

    id: str
    workflow: str
    input: str
    queue: str
    parent_id: str | None = None
    parent_seq: int | None = None
    code_version: str | None = None
    trace: str | None = None
    """The starter's trace context (JSON), stored with the run when tracing is on (cairn[otel])."""
    key: str | None = None
    """The run's key in its queue: `per_key` limits how many runs of one key go at once."""
    priority: int | None = None
    """Lower numbers start first within the queue (None: 0)."""
    dedup_key: str | None = None
    """While a run of the queue with this key is unfinished, starting another returns that one."""

    @property
    def queued(self) -> bool:
        """Started with a key, a priority or a dedup_key: created by the queue's insert, never born claimed."""
        return self.key is not None or self.priority is not None or self.dedup_key is not None

    @classmethod
    def child(cls, parent: RunRow, step: NewStep) -> NewRun:
        """The run a child step of `parent` starts (its `options` say its id and whether it is detached)."""
        options = step.options or {}
        detached = bool(options.get("detached"))
        seq = None if detached else step.seq
        return cls(str(options["run_id"]), step.name, step.args or "{}", step.queue or parent.queue, parent.id, seq)

    def born(self, owner: str, now: float) -> RunRow:
        """The run as a worker's first commit of it creates it: leased to that worker, token 1."""
        return RunRow(
            id=self.id,
            workflow=self.workflow,
            status=RunStatus.PENDING,
            input=self.input,
            result=None,
            error=None,
            queue=self.queue,
            parent_id=self.parent_id,
            parent_seq=self.parent_seq,
            created_at=now,
            updated_at=now,
            started_at=None,
            completed_at=None,
            activations=0,
            properties=None,
            code_version=self.code_version,
            lease_owner=owner,
            lease_token=1,
        )


@dataclass(frozen=True, slots=True)
class StepRow:
    run_id: str
    seq: int
    kind: StepKind
    name: str
    args: str | None
    status: StepStatus
    result: str | None
    error: str | None
    attempt: int
    delivered_in: int | None
    delivered_at: float | None
    due_at: float | None
    """When an action attempt is due (or its lease runs out, while it runs), or a timer fires."""
    queue: str | None
    options: str | None
    memory_writes: str | None
    logs: str | None
    created_at: float
    started_at: float | None
    completed_at: float | None


@dataclass(frozen=True, slots=True)
class NewStep:
    """A step the workflow scheduled in this activation, with what its kind needs."""

    seq: int
    kind: StepKind
    name: str
    args: str | None
    status: StepStatus = StepStatus.SCHEDULED
    result: str | None = None
    queue: str | None = None
    due_at: float | None = None
    """When a timer fires."""
    options: Json = None
    delivered: bool = False
    """Resolved and consumed in this same activation (records, memory writes, sends)."""


@dataclass(slots=True)
class ActivationResult:
    """What one activation decided, applied in one transaction under the run's lease."""

    new_steps: list[NewStep] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)
    delivered_at: float = 0.0
    properties: str | None = None
    status: RunStatus = RunStatus.RUNNING
    result: str | None = None
    error: str | None = None
    wake_at: float | None = None
    counts_as_activation: bool = True
    pause_reason: str | None = None
    signal_waits: bool = False
    """The workflow still waits for a signal: the commit matches its open waits to buffered signals."""
    code_version: str | None = None
    """The version of the code that ran a run's first activation, recorded for a run that has none
    (one started by name, a child, a schedule's tick)."""
