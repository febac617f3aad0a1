"""The persistence seam: one Protocol, two backends (SQLite and PostgreSQL) behind it.

Every method is one transaction and is named for intent. Writes made on behalf of a claim carry
the claim's fencing token; a write under an expired or stolen lease raises LeaseLost and changes
nothing. Times are float seconds since the epoch; lease expiry is judged by the database clock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from cairn.clock import Clock
from cairn.queues import QueueSpec
from cairn.records import ActivationResult, NewRun, RunRow, StepRow
from cairn.schedules import ScheduleSpec
from cairn.types import Json, RunStatus


@dataclass(frozen=True, slots=True)
class RunClaim:
    """A leased run ready for an activation: its row, the journal and the undelivered results."""

    run: RunRow
    token: int
    journal: Sequence[StepRow]
    """All steps; empty when `journal_skipped` (the caller said it holds this run's state)."""
    batch: Sequence[StepRow]
    """Resolved steps not yet delivered to the workflow, in step order (signal waits the claim
    matched to buffered signals among them)."""
    journal_skipped: bool = False
    now: float = 0.0


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
    started_at: float | None = None
    """When this attempt was leased. Its outcome is written only to a step created before then:
    a run deleted (`cairn prune`) and started again under its id has steps of the same numbers and
    attempts, and an attempt of the old run that ended late wrote into the new one."""


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
    without a claim, and child steps whose new runs are born leased to `owner`, which starts them
    from memory (see `Runner._child_births`); with `owner` set a still-running run stays leased to
    it (a sticky lease)."""

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
    closes_steps: bool = False
    """Cancel the run's open steps with this commit: a run failed outside its code (its commit was
    refused) has no activation left to settle them, and a finished run holds no open step."""
    frees_place: bool = False
    """The commit gives a place in a queue with limits back (the run ends or lets its lease go, or
    it records an attempt of such a queue): it wakes claim loops, this worker's and others', which
    may start what the limits held back (the next try of a claim that found the queue full is
    otherwise its 0.1 s poll)."""


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
    busy_due: frozenset[str] = frozenset()
    """Of the runs passed as busy, those due now: not claimed, and no later wake-up will say so."""
    limited_waiting: bool = False
    """Whether work of a limited queue may be held back by its limits: a slot freed here may let
    some start. (Work left for want of room in this worker: the claim filled all the room it had.)"""
    retry_in: float | None = None
    """Seconds until a limited queue held back (by its limits, or another worker's claim of it) is
    to be looked at again: a poll, not a time at which work falls due (a test environment does
    not skip its clock to it)."""
    clock: tuple[float, float] | None = None
    """The database's time as the claim's transaction began, and the store's clock just before it
    was sent: the database clock's offset from ours, read early by at most the trip there (see
    `Runner.observe_clock`)."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    queues: str
    """Comma-separated queue names, or "*" for all."""
    started_at: float
    heartbeat_at: float
    in_flight: int
    workflows: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    schedules: tuple[str, ...] = ()
    """Schedules declared in this worker's code: it fires them (and only a live declarer does)."""
    lease: float | None = None
    """Its lease (seconds): past it without a heartbeat, the worker is dead (its work taken over)."""

    def serves(self, kind: str, name: str, queue: str) -> bool:
        """Whether this worker runs `name` (a "workflow" or an "action") on `queue`."""
        names = self.workflows if kind == "workflow" else self.actions
        return name in names and (self.queues == "*" or queue in self.queues.split(","))


@dataclass(frozen=True, slots=True)
class Need:
    """Something a run needs a worker for: its workflow (activations), or an action one of its steps
    waits to start."""

    run_id: str
    kind: str
    """"workflow" or "action"."""
    name: str
    queue: str
    step: int | None


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
class ScheduleRow:
    """A schedule as stored: its definition, when it next fires, and what it last started."""

    spec: ScheduleSpec
    source: str
    """"code" (declared with cairn.Schedule) or "api" (client.create_schedule)."""
    paused: bool
    next_fire_at: float | None
    last_fire_at: float | None
    last_run_id: str | None
    buffered_at: float | None
    last_status: str | None

    @property
    def id(self) -> str:
        """The schedule's id (`spec.id`), as `client.pause_schedule(row.id)` takes it."""
        return self.spec.id

    @property
    def workflow(self) -> str:
        """The id of the workflow each tick starts (`spec.workflow`)."""
        return self.spec.workflow


@dataclass(frozen=True, slots=True)
class QueueRow:
    """A queue as stored (its limits, the last declaration's) and what is in it now."""

    spec: QueueSpec
    declared_by: str | None
    updated_at: float
    rate_next_at: float | None
    """With a rate limit, when the next start may be claimed (None: no start yet)."""
    rate_starts: int
    """Starts counted by the rate limit, since the queue was first declared."""
    runs_waiting: int = 0
    runs_in_flight: int = 0
    attempts_waiting: int = 0
    attempts_in_flight: int = 0

    @property
    def name(self) -> str:
        """The queue's name (`spec.name`)."""
        return self.spec.name


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    name: str
    description: str
    input_schema: str
    queue: str
    derives_id: bool = False
    """Whether its class derives a run's id from the input (`id(self, ...)`): only where its code is
    imported can that be done, so a start by name elsewhere must give the id."""


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """An action as workers register it: its id, human name and description (Ziet's), queue."""

    id: str
    name: str
    description: str
    queue: str


Listener = Callable[[Any], None]
"""Called on a notification with its in-process detail: an object the commit attached for waiters
in this process (a finished run's row), or None (none attached, or it came from another process)."""


@runtime_checkable
class Store(Protocol):
    """The only way the client, the worker and the web touch the database: one interface, a SQL
    implementation (`SqlStore`) over SQLite and PostgreSQL behind it. Every method is one
    transaction; `tests/store/test_contract.py` runs each one against both backends."""

    url: str
    clock: Clock
    """The clock `now()` and every lease and due time follow: the real one, or a test's."""

    # --- lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        """Connect and apply pending migrations (once, however many callers ask at once)."""

    async def close(self) -> None: ...

    async def now(self) -> float:
        """The database clock, by which leases and due times are judged."""

    def refused(self, exc: Exception) -> bool:
        """Whether a failed write was refused (surely not applied), not cut off (outcome unknown)."""

    # --- notifications ------------------------------------------------------------------------
    def subscribe_key(self, key: str, callback: Listener) -> Callable[[], None]:
        """Call `callback(detail)` (from any thread) on notifications of `key`: "work" for claim
        loops, "run:<id>" for a run's result waiters. Returns the unsubscribe function."""

    @property
    def notifies_across_processes(self) -> bool:
        """Whether other processes' commits reach subscribers here (else only a poll sees them)."""

    # --- runs ---------------------------------------------------------------------------------
    async def run_trace(self, run_id: str) -> tuple[str, str | None] | None:
        """A run's workflow and the trace context it was started in (its parent's for a child)."""

    async def insert_run(
        self, run: NewRun, owner: str | None = None, lease: float = 0.0, now: float | None = None
    ) -> RunRow | None:
        """Create the run, one statement, unless its id names a run already: None when created, else
        that run (and nothing is written). With `owner`, it is born leased to that worker for `lease`
        seconds from `now` (the worker's estimate of the database clock), which starts it in memory;
        else any worker may claim it, woken at once."""

    async def get_run(self, run_id: str) -> RunRow | None: ...

    async def runs_by_ids(self, run_ids: Sequence[str], finished_only: bool = False) -> list[RunRow]:
        """The runs of these ids that exist (with `finished_only`, only the ended ones), in one read."""

    async def list_runs(self, status: str | None = None, workflow: str | None = None, limit: int = 50) -> list[RunRow]:
        """Newest first."""

    async def count_runs(self, status: str) -> int: ...

    async def runs_page(
        self, filters: RunFilters, newest_first: bool, after: tuple[float, str] | None, limit: int
    ) -> list[RunRow]:
        """Up to `limit` runs matching `filters` in created_at order (then id), strictly after the
        keyset `after` (the (created_at, id) of the previous page's last run): never OFFSET."""

    async def run_counts(
        self,
        by: str,
        workflow: str | None = None,
        id_prefix: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[tuple[str, str, int]]:
        """(group, status, count) by "status" (group ""; of `workflow` only, and of the id prefix
        and creation window, when given),
        "workflow" or "queue"; ValueError for any other grouping."""

    async def last_steps(self, run_ids: Sequence[str]) -> dict[str, StepRow]:
        """Run id → its latest step (highest seq), for the runs that have steps."""

    async def list_children(self, run_id: str, limit: int) -> list[RunRow]:
        """The child runs of `run_id`, oldest first."""

    async def list_steps(
        self, run_id: str, after: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[StepRow]:
        """The run's steps in order: those after step `after`, at most `limit` of them (all by
        default); or with `last`, its `last` latest ones (still oldest first)."""

    async def run_logs(self, run_id: str) -> list[tuple[int, str, str]]:
        """(seq, step name, JSON list of its lines) of each step that wrote log lines, in order."""

    async def get_memory(self, run_id: str) -> dict[str, str]:
        """Key -> JSON text of the run's durable memory."""

    async def property_history(self, run_id: str, *, last: int | None = None) -> list[tuple[int, str]]:
        """(activation number, properties JSON) after each activation that changed them (the
        `last` latest only, when given), oldest first."""

    async def run_sizes(self, run_id: str) -> tuple[int, int, int]:
        """How many steps, events and property snapshots the run has recorded."""

    async def list_events(
        self,
        run_id: str,
        after: int = 0,
        limit: int | None = None,
        *,
        last: int | None = None,
        steps: tuple[int, int] | None = None,
    ) -> list[EventRow]:
        """The run's events in order, as `list_steps` pages its steps (by event id); `steps`: only
        those of the steps numbered from the first to the second, both included."""

    async def add_event(self, run_id: str, kind: str, **detail: Any) -> None:
        """Append a finding that changes nothing else to a run's events (e.g. its work unserved)."""

    async def prune(self, before: float, status: str | None = None, limit: int = 500) -> int:
        """Delete up to `limit` finished runs (of `status`, when given) that finished before `before`
        (epoch seconds), with all they recorded, keeping the parents of runs still going; how many.
        In transactions bounded by rows, not runs (one huge run must not hold the write lock), a
        run's row last; runs an earlier prune began and did not finish (its process died) are
        finished first, whatever their status, and are neither shown nor changed meanwhile."""

    async def send_signal(self, run_id: str, name: str, payload: str) -> bool:
        """Buffer a signal for a run and wake it; False when the run does not exist, and
        IllegalTransition (nothing written) when it has finished: no wait would ever receive it."""

    # --- control (each idempotent; IllegalTransition when the status forbids it) ---------------
    async def pause(self, run_id: str) -> RunStatus: ...

    async def resume(self, run_id: str) -> RunStatus: ...

    async def cancel(self, run_id: str) -> RunStatus: ...

    async def time_out(self, run_id: str, timeout: float) -> RunStatus:
        """Cancel the run with WorkflowTimeout if `timeout` seconds have passed since its start, or
        since its last retry (`RunRow.deadline`), by the database's clock; else
        nothing changes. Its status either way."""

    async def retry(self, run_id: str) -> RunStatus: ...

    async def fork(self, run_id: str, from_step: int, new_id: str | None = None) -> str: ...

    # --- work -----------------------------------------------------------------------------------
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

    async def commit_activation(self, commit: Commit) -> frozenset[int]:
        """Apply an activation atomically (perhaps in a transaction shared with others: group
        commit); LeaseLost when its run's token is no longer current (nothing of it is written).
        Returns the child steps among `commit.births` whose runs it created leased to its owner."""

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

    async def unserved(
        self, run_ids: Sequence[str] | None = None, limit: int = 1000, alive: str | None = None
    ) -> dict[str, str]:
        """Why each of these runs (None: each with work due now) cannot progress, for those that
        cannot: no live worker serves its workflow or an action it waits on. `alive`: a worker
        known to be live whatever its last heartbeat says (the worker asking)."""

    # --- schedules ------------------------------------------------------------------------------
    async def upsert_schedules(self, specs: Sequence[ScheduleSpec], source: str) -> None:
        """Declare schedules ("code": from a worker's imports; "api"): a changed expression moves the
        next tick, an unchanged one keeps it; a pause stays."""

    async def list_schedules(self) -> list[ScheduleRow]: ...

    async def fire_schedules(
        self, workflows: Sequence[str], declared: Sequence[str], up_since: float | None = None
    ) -> float | None:
        """Start the runs of the due ticks of the schedules of `workflows` (of those declared in code,
        only the `declared` ones), for a worker up since `up_since` (the database's clock: a tick
        that fell due before then was missed, for `catchup`); seconds until the next tick of these
        (None: none)."""

    async def pause_schedule(self, schedule_id: str, paused: bool) -> bool:
        """Pause or resume (from the next tick after now); False when there is no such schedule."""

    async def delete_schedule(self, schedule_id: str) -> bool: ...

    async def trigger_schedule(self, schedule_id: str) -> str | None:
        """Start a run of the schedule now, outside its ticks; its id, or None without such schedule."""

    # --- workers and definitions -----------------------------------------------------------------
    async def upsert_queues(self, specs: Sequence[QueueSpec], declared_by: str) -> list[str]:
        """Store the limits of queues declared in code (the last declaration wins); the names of
        those whose stored limits were other ones, declared elsewhere (the caller logs them)."""
        ...

    async def get_queue(self, name: str) -> QueueRow | None:
        """A queue's limits, without its counts (None: never declared)."""
        ...

    async def list_queues(self, counts: bool = True) -> list[QueueRow]:
        """Every declared queue with its limits, rate window and (with `counts`) the runs and
        attempts in it."""
        ...

    async def heartbeat(
        self, info: WorkerInfo, lease: float, runs: Collection[str] = (), attempts: Collection[tuple[str, int]] = ()
    ) -> set[tuple[str, int]]:
        """Record liveness and extend the leases of the runs this worker holds and the attempts
        (run id, step) it is running; of those attempts, the ones whose step was cancelled (its run
        cancelled or timed out), for the worker to stop."""

    async def remove_worker(self, worker_id: str) -> None:
        """A worker's goodbye: what it held is handed over at once."""

    async def hand_over(self, worker_id: str, attempts: Collection[tuple[str, int]]) -> None:
        """A stopping worker lets go of the runs it holds and of these attempts (run id, step), which
        it stopped: other workers may take them now. Its other attempts stay leased to it (a plain
        `def` action's thread, which cannot be stopped, keeps its lease until it returns)."""

    async def list_workers(self, stale_after: float = 60.0) -> list[WorkerInfo]: ...

    async def register_workflows(self, infos: Sequence[WorkflowInfo]) -> None: ...

    async def list_workflows(self) -> list[WorkflowInfo]: ...

    async def register_actions(self, infos: Sequence[ActionInfo]) -> None:
        """Record the actions a worker serves (the latest registration of an id wins)."""

    async def list_actions(self) -> list[ActionInfo]: ...
