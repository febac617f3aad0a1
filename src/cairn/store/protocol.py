"""The persistence seam: one Protocol, two backends (SQLite and PostgreSQL) behind it.

Every method is one transaction and is named for intent. Writes made on behalf of a claim carry
the claim's fencing token; a write under an expired or stolen lease raises LeaseLost and changes
nothing. Times are float seconds since the epoch; lease expiry is judged by the database clock.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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
    """Why a paused run is paused: "user", "error" (an action failed, on_failure="pause") or
    "nondeterminism" (its code diverged from the journal)."""


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
    fire_at: float | None
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
    fire_at: float | None = None
    options: Json = None
    delivered: bool = False
    """Resolved and consumed in this same activation (records, memory writes, sends)."""
    signal_id: int | None = None
    """A buffered signal this new wait consumed at once (delivered in the next activation)."""


@dataclass(frozen=True, slots=True)
class RunClaim:
    """A leased run ready for an activation: its row, the journal and the undelivered results."""

    run: RunRow
    token: int
    journal: Sequence[StepRow]
    """All steps; empty when `journal_skipped` (the caller said it holds this run's state)."""
    batch: Sequence[StepRow]
    """Resolved steps not yet delivered to the workflow, in step order."""
    signals: Sequence[tuple[int, str, str | None]] = ()
    """Buffered signals (id, name, payload) not yet consumed."""
    journal_skipped: bool = False
    now: float = 0.0


class RunTaker(Protocol):
    """A worker in this process that takes runs started here as they are created. It activates the
    run before it is written, and the run's insert goes in the transaction of that first commit:
    the run is born leased to the worker and already started, with no claim and no transaction of
    its own (as born actions are)."""

    id: str
    lease: float

    def reserve_run(self, run_id: str, workflow: str, queue: str) -> bool:
        """Whether this worker takes the run about to be created (a run slot is then held for it)."""
        ...

    def clock(self) -> float:
        """The worker's estimate of the database clock: the new run's creation time."""
        ...

    async def start_run(self, claim: RunClaim, insert: Mapping[str, Any]) -> bool:
        """Activate the reserved run (`claim`: as it will be once inserted) and commit that first
        activation with the run's `insert` (`insert_run` parameters), in one transaction. False
        when the id names an existing run: then nothing is written."""
        ...


@dataclass(frozen=True, slots=True)
class ActionClaim:
    """A leased attempt of one action step."""

    run_id: str
    seq: int
    name: str
    args: str
    attempt: int
    options: Json
    queue: str | None
    lost: int = 0
    """Earlier attempts lost with their worker (not failures of the action)."""


@dataclass(slots=True)
class ActivationResult:
    """What one activation decided, applied in one transaction under the run's lease."""

    new_steps: list[NewStep] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    delivered: list[int] = field(default_factory=list)
    delivered_at: float = 0.0
    consumed_signals: list[tuple[int, int]] = field(default_factory=list)
    """(signal id, step seq) pairs: a buffered signal resolves a waiting step."""
    properties: str | None = None
    status: RunStatus = RunStatus.RUNNING
    result: str | None = None
    error: str | None = None
    wake_at: float | None = None
    counts_as_activation: bool = True
    pause_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A final action outcome recorded in the same transaction as the activation it feeds."""

    claim: ActionClaim
    result: str | None
    error: str | None
    memory_writes: Sequence[tuple[str, str]] = ()
    logs: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class Commit:
    """One activation to apply, fenced by `token` (the run's lease token when it was taken); the
    commit advances the token by one.

    `completions` are action results recorded in the same transaction (the worker ran them and
    holds the run); `births` are new action steps leased at once to `owner`, which runs them
    without a claim; with `owner` set a still-running run stays leased to it (a sticky lease)."""

    run: RunRow
    token: int
    result: ActivationResult
    completions: Sequence[Completion] = ()
    births: frozenset[int] = frozenset()
    owner: str | None = None
    lease: float = 0.0
    now: float | None = None
    """The committer's estimate of the database clock, so the commit need not ask for it (a round
    trip); None: ask the database."""
    insert: Mapping[str, Any] | None = None
    """The `insert_run` parameters of a run this commit creates (see `RunTaker`): inserted in the
    same transaction, first; the commit is refused (LeaseLost) when the id is taken."""


@dataclass(frozen=True, slots=True)
class EventRow:
    id: int
    at: float
    kind: str
    step: int | None
    detail: str | None


@dataclass(frozen=True, slots=True)
class WorkClaim:
    """What one claim transaction leased, and when the next work falls due."""

    runs: Sequence[RunClaim]
    actions: Sequence[tuple[ActionClaim, dict[str, str]]]
    """Attempts, each with a snapshot of its run's memory."""
    next_due_in: float | None
    """Seconds until the next timer, retry or lease expiry (database clock); None when nothing waits."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    queues: str
    started_at: float
    heartbeat_at: float
    in_flight: int


@dataclass(frozen=True, slots=True)
class RunFilters:
    """Which runs a page lists; None means any. `id_prefix` matches the start of the id; `since`
    and `until` bound created_at (epoch seconds, until exclusive)."""

    status: str | None = None
    workflow: str | None = None
    id_prefix: str | None = None
    since: float | None = None
    until: float | None = None


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    name: str
    description: str
    input_schema: str
    queue: str


class Store(Protocol):
    """The only way the client and worker touch the database."""

    url: str

    async def open(self) -> None:
        """Connect and apply pending migrations."""

    async def close(self) -> None: ...

    # --- runs ---
    async def insert_run(
        self,
        run_id: str,
        workflow: str,
        input: str,
        queue: str,
        parent_id: str | None = None,
        parent_seq: int | None = None,
        code_version: str | None = None,
    ) -> tuple[RunRow, bool]:
        """Insert a run unless its id exists; returns (the row, whether it was created)."""

    async def get_run(self, run_id: str) -> RunRow | None: ...

    async def list_runs(
        self, status: str | None = None, workflow: str | None = None, limit: int = 50
    ) -> list[RunRow]: ...

    async def runs_page(
        self, filters: RunFilters, newest_first: bool, after: tuple[float, str] | None, limit: int
    ) -> list[RunRow]:
        """Up to `limit` runs matching `filters` in created_at order (then id), strictly after the
        keyset `after` (the (created_at, id) of the previous page's last run): never OFFSET."""

    async def run_counts(self, by: str, workflow: str | None = None) -> list[tuple[str, str, int]]:
        """(group, status, count) by "status" (group ""; of `workflow` only, when given),
        "workflow" or "queue"; ValueError for any other grouping."""

    async def last_steps(self, run_ids: Sequence[str]) -> dict[str, StepRow]:
        """Run id → its latest step (highest seq), for the runs that have steps."""

    async def list_children(self, run_id: str, limit: int) -> list[RunRow]:
        """The child runs of `run_id`, oldest first."""

    async def list_steps(self, run_id: str) -> list[StepRow]: ...

    async def get_memory(self, run_id: str) -> dict[str, str]:
        """Key → JSON text of the run's durable memory."""

    async def property_history(self, run_id: str) -> list[tuple[int, str]]:
        """(activation number, properties JSON) after each activation that changed them."""

    async def send_signal(self, run_id: str, name: str, payload: str) -> bool:
        """Buffer a signal for a run and wake it; False when the run does not exist."""

    # --- work ---
    async def claim_work(
        self,
        worker: str,
        workflows: Sequence[str],
        actions: Sequence[str],
        queues: Sequence[str] | None,
        run_limit: int,
        action_limit: int,
        lease: float,
        cached: dict[str, int] | None = None,
        busy: Collection[str] = (),
        new_run_limit: int | None = None,
    ) -> WorkClaim:
        """Lease up to `run_limit` runnable runs and `action_limit` due attempts in one transaction.
        `cached` maps run id to the lease token under which this worker's in-memory copy is still
        current, so that run's journal need not be reloaded; runs in `busy` (held and being worked
        on by this worker) are not claimed again. Of the runs, oldest first, at most `new_run_limit`
        are new ones, never activated (default: up to `run_limit`)."""

    async def commit_activation(self, commit: Commit) -> None:
        """Apply an activation atomically (perhaps in a transaction shared with others: group
        commit); LeaseLost when its run's token is no longer current (nothing of it is written)."""

    async def release_run(self, claim: RunClaim) -> None:
        """Give a claimed run back without changes (shutdown, or an error before commit)."""

    async def complete_action(
        self,
        claim: ActionClaim,
        result: str | None,
        error: str | None,
        retry_delay: float | None,
        memory_writes: Sequence[tuple[str, str]],
        logs: Sequence[str],
    ) -> bool:
        """Record an attempt's outcome fenced by its attempt number; False when it lost the step."""

    async def read_memory(self, run_id: str, key: str) -> str | None: ...

    # --- workers ---
    async def heartbeat(
        self, info: WorkerInfo, lease: float, runs: Collection[str] = (), attempts: Collection[tuple[str, int]] = ()
    ) -> None:
        """Record liveness and extend the leases of the runs this worker holds and the attempts
        (run id, step) it is running."""

    async def remove_worker(self, worker_id: str) -> None: ...

    async def list_workers(self) -> list[WorkerInfo]: ...

    async def register_workflows(self, infos: Sequence[WorkflowInfo]) -> None: ...

    async def list_workflows(self) -> list[WorkflowInfo]: ...
