"""The control API that users, the CLI and the web all go through."""

from __future__ import annotations

import base64
import binascii
import contextvars
import dataclasses
import json
import math
import os
import threading
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cairn import telemetry
from cairn.client.input_schema import check_against, schema_of
from cairn.client.waiter import Waiters
from cairn.errors import RunIdConflict, RunNotFound, ScheduleNotFound, SerializationError, UnknownWorkflowError
from cairn.names import check_name, storable
from cairn.policies import retention as retention_of
from cairn.queues import Queue, QueueSpec, declared, queue_name
from cairn.records import NewRun, RunRow, StepRow
from cairn.redaction import redact
from cairn.registry import WorkflowDef, registry
from cairn.serialization import max_payload_bytes, same_json, text_of, to_jsonable
from cairn.store.open import open_store, redact_url, resolve_url
from cairn.store.protocol import ActionInfo, QueueRow, RunFilters, ScheduleRow, Store, WorkerInfo, WorkflowInfo
from cairn.types import RunStatus
from cairn.worker import dispatch

if TYPE_CHECKING:
    from cairn.schedules import Schedule

MAX_PAGE = 500
"""The most runs one page of `Client.runs_page` holds."""

SORTS = {"-created_at": True, "created_at": False}
"""The orders `Client.runs_page` lists runs in (name → newest first); nothing else is accepted."""


@dataclass(frozen=True)
class QueuePlace:
    """A start's place in its queue: `key`, `priority`, `dedup_key` (all None: a plain start)."""

    key: str | None = None
    priority: int | None = None
    dedup_key: str | None = None


@dataclass(frozen=True)
class RunsPage:
    """One page of runs and the opaque cursor of the next (None on the last page)."""

    runs: list[RunRow]
    next_cursor: str | None


class Client:
    """Async client: `client = cairn.connect(url)`; `await client.start(Wf, *args, id=...)`."""

    def __init__(
        self, url: str | None = None, *, store: Store | None = None, retention: timedelta | float | None = None
    ) -> None:
        self.store = store or open_store(url)
        self.url = self.store.url
        self.waiters = Waiters(self.store)
        """Result waits: one shared waiter per event loop, reading the database in batches."""
        self.retention = retention_of(retention)
        max_payload_bytes()  # a bad CAIRN_MAX_PAYLOAD_BYTES is an error here, not at the first payload
        """How long finished runs are kept (workers delete older ones); None: keep everything."""
        self._queues_stored: dict[str, QueueSpec] = {}
        """Queues given to `start` as a `cairn.Queue`, with the limits this client made sure are stored."""

    def __str__(self) -> str:
        return redact_url(self.url)  # printed and logged: never the password

    async def close(self) -> None:
        await self.store.close()

    async def start(
        self,
        workflow: Any,
        /,
        *args: Any,
        id: str | None = None,
        queue: str | Queue | None = None,
        key: str | None = None,
        priority: int | None = None,
        dedup_key: str | None = None,
        **kwargs: Any,
    ) -> RunHandle:
        """Start a run; with an `id` that exists already, return that run and start nothing
        (`handle.created` is then False). RunIdConflict when the id names a run of another workflow.

        In its queue, `key` is what `per_key` counts; `priority`: lower numbers start first (the
        queue must be declared with `priority=True`); `dedup_key`: while a run of the queue started
        with that key is unfinished, this returns that run and starts nothing."""
        queued = QueuePlace(key, priority, dedup_key)
        handle, _created = await self._start(workflow, args, kwargs, id, queue, queued)
        return handle

    async def _start(
        self,
        workflow: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        id: str | None,
        queue: str | Queue | None,
        queued: QueuePlace | None = None,
    ) -> tuple[RunHandle, bool]:
        defn = _local_definition(workflow)
        if defn is not None:
            if isinstance(workflow, str):  # by name: checked against its schema, as where the code is not imported
                _encode_by_schema(WorkflowInfo(defn.id, "", defn.input_schema_text, defn.queue), args, kwargs)
            encoded = defn.encode_input(args, kwargs)  # validated before anything is written
            derived = id if id is not None else defn.derive_id(encoded, len(args))
            name, default_queue, version = defn.id, defn.queue, defn.version
        else:
            info = await self._remote_definition(str(workflow))
            encoded = _encode_by_schema(info, args, kwargs)
            if id is None and info.derives_id:  # a new id each time would break idempotent starts
                raise ValueError(
                    f"workflow {info.name} derives a run's id from its input (its id() method), which only code "
                    'that imports it can run: give the run id (--id with `cairn start`, "id" in the HTTP body), '
                    "or start it where the workflow is imported (`cairn start --import MODULE`, Python code)"
                )
            derived = id
            name, default_queue, version = info.name, info.queue, None
        # An empty id is a mistake (`id=order_id` of a blank field), not a request for a new one: it
        # would make an idempotent start start a new run every time.
        run_id = _check_run_id(derived) if derived is not None else uuid.uuid4().hex
        queue_id = queue_name(queue, "queue name") if queue is not None else default_queue
        given = queue.spec if isinstance(queue, Queue) else None
        if queued == QueuePlace():
            queued = None
        if queued is not None:
            await self._check_queued(queue_id, queued, given)
        if given is not None:
            await self._store_queue(given)
        with telemetry.span("cairn.start", run_id=run_id, workflow=name):  # nothing when tracing is off
            new = NewRun(run_id, name, encoded, queue_id, code_version=version)
            if queued is not None:
                new = dataclasses.replace(new, key=queued.key, priority=queued.priority, dedup_key=queued.dedup_key)
            trace = telemetry.current_context()
            if trace is not None:
                new = dataclasses.replace(new, trace=trace)
            # A run of a limited queue given here is left to the queue's claim (a worker in this
            # process may not know yet that the queue has limits).
            existing = await self._insert(new, local=given is None or not given.limited)
        if existing is not None and existing.id != run_id:  # the unfinished run holding the dedup_key
            handle = RunHandle(self, existing.id)
            handle.created = False
            return handle, False
        handle = RunHandle(self, run_id)
        handle.created = existing is None
        if existing is not None:
            if existing.workflow != name:
                raise RunIdConflict(run_id, existing.workflow, name)
            handle.input_differs = not same_json(existing.input, encoded) and not (
                defn is not None
                and same_json(defn.signature.with_defaults(existing.input), defn.signature.with_defaults(encoded))
            )
        return handle, existing is None

    async def _check_queued(self, queue: str, queued: QueuePlace, given: QueueSpec | None = None) -> None:
        """Bad queue arguments are an error before anything is written."""
        if queued.key is not None:
            check_name(queued.key, "queue key")
        if queued.dedup_key is not None:
            check_name(queued.dedup_key, "dedup_key")
        if queued.priority is None:
            return
        if isinstance(queued.priority, bool) or not isinstance(queued.priority, int):
            raise ValueError(f"priority must be an integer (lower numbers start first), got {queued.priority!r}")
        if not -(2**31) < queued.priority < 2**31:
            raise ValueError(f"priority must fit in 32 bits, got {queued.priority}")
        spec = given or declared(queue)  # the Queue given, declared in this process, else as stored
        if spec is None:
            row = await self.store.get_queue(queue)
            spec = None if row is None else row.spec
        if spec is None or not spec.priority:  # a queue nobody declared has no priorities either
            raise ValueError(
                f"queue {queue!r} does not take priorities: declare it with cairn.Queue({queue!r}, priority=True)"
            )

    async def _store_queue(self, spec: QueueSpec) -> None:
        """A queue given to `start` as a `cairn.Queue` holds its limits even where no worker's code
        declares it: it is stored as declared (once per client), unless stored so already."""
        if self._queues_stored.get(spec.name) == spec:
            return
        row = await self.store.get_queue(spec.name)
        stored = row.spec if row is not None else QueueSpec(spec.name)  # a queue nobody declared: no limits
        if stored != spec:
            await self.store.upsert_queues([spec], "client")
        self._queues_stored[spec.name] = spec

    async def _insert(self, new: NewRun, local: bool = True) -> RunRow | None:
        """Create the run (None), or find the run holding its id; a worker in this process may take
        it at birth (see `cairn.worker.dispatch`) when `local`, unless it goes through its queue's insert."""
        if new.queued or not local:
            return await self.store.insert_run(new)
        for dispatcher in dispatch.local(self.store):
            taken = await dispatcher.start_run(new)
            if taken is not None:
                return None if taken[1] else taken[0]
        return await self.store.insert_run(new)

    async def run(
        self,
        workflow: Any,
        /,
        *args: Any,
        id: str | None = None,
        queue: str | Queue | None = None,
        timeout: float | None = None,
        key: str | None = None,
        priority: int | None = None,
        dedup_key: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """Start (or find) the run and wait for its result."""
        check_timeout(timeout)  # before the start: a bad timeout started the run, then said so
        queued = QueuePlace(key, priority, dedup_key)
        handle, created = await self._start(workflow, args, kwargs, id, queue, queued)
        # A run this call created is pending: no need to read it before its first notification.
        return await handle._result(timeout, pending=created)

    def get(self, run_id: str) -> RunHandle:
        return RunHandle(self, run_id)

    async def list_runs(
        self, status: str | RunStatus | None = None, workflow: Any = None, limit: int = 50
    ) -> list[RunRow]:
        if status is not None:
            status = _status(status)
        if limit < 1 or limit > 10_000:
            raise ValueError(f"limit must be between 1 and 10000, got {limit}")
        if workflow is not None:
            workflow = await self._workflow_id(workflow)
            if not storable(workflow):
                return []  # no workflow can have such a name
        return await self.store.list_runs(status, workflow, limit)

    async def _workflow_id(self, workflow: Any) -> str:
        """The id runs of `workflow` are stored under: as a start would name it (the workflow, its
        registered id or human name, or an unambiguous short name such as "Checkout" for
        "billing.Checkout"); a name nothing matches is kept, and finds no runs."""
        defn = _local_definition(workflow) if not isinstance(workflow, str) else registry.workflow(workflow)
        if defn is not None:
            return defn.id
        if not isinstance(workflow, str):
            return str(workflow)
        info = _find_workflow(workflow, await self.store.list_workflows()) if storable(workflow) else None
        return workflow if info is None else info.name

    async def unserved(self, run_ids: list[str] | None = None) -> dict[str, str]:
        """Why each of these runs (default: each run with work due now) cannot progress, for those
        that cannot: no live worker runs their workflow or an action they wait on."""
        return await self.store.unserved(run_ids)

    async def prune(self, older_than: timedelta | float, status: str | RunStatus | None = None) -> int:
        """Delete the runs that finished more than `older_than` ago (of `status`, when given), with
        all they recorded, in small batches; the parents of runs still going are kept. How many."""
        age = older_than.total_seconds() if isinstance(older_than, timedelta) else float(older_than)
        if age < 0:
            raise ValueError(f"older_than must not be negative, got {older_than!r}")
        which = None if status is None else _status(status)
        if which is not None and not which.is_terminal:
            raise ValueError(f"only finished runs are pruned; {which.value} is not a finished status")
        before = await self.store.now() - age
        total = 0
        while True:
            removed = await self.store.prune(before, None if which is None else which.value, PRUNE_BATCH)
            total += removed
            if removed < PRUNE_BATCH:
                return total

    # --- schedules (cairn.Schedule) --------------------------------------------------------------

    async def create_schedule(self, schedule: Schedule | str, workflow: Any = None, /, **options: Any) -> None:
        """Create (or update) a schedule in the database: workers that serve its workflow fire it.
        Give a `cairn.Schedule(..., register=False)` (unless it is also declared in code), or its
        arguments, id and workflow first as DBOS and Temporal take them:
        `create_schedule("eu-sync", report, every=timedelta(minutes=10), args=("eu",))`."""
        if isinstance(schedule, str):
            from cairn.schedules import Schedule

            if workflow is None:
                raise TypeError(f"create_schedule({schedule!r}, ...) needs the workflow to run after the id")
            schedule = Schedule(schedule, workflow, **options, register=False)
        elif workflow is not None or options:
            raise TypeError("create_schedule takes a cairn.Schedule alone, or its arguments (id, workflow, cron=...)")
        await self.store.upsert_schedules([schedule.spec()], "api")

    async def list_queues(self) -> list[QueueRow]:
        """Every declared queue: its limits, its rate window, and its runs and attempts waiting and in flight."""
        return await self.store.list_queues()

    async def list_schedules(self) -> list[ScheduleRow]:
        """Every schedule, with its next tick, its last run and that run's status."""
        return await self.store.list_schedules()

    async def pause_schedule(self, schedule_id: str) -> None:
        """No ticks fire until `resume_schedule` (missed ones are not caught up)."""
        await self._schedule(self.store.pause_schedule(schedule_id, True), schedule_id)

    async def resume_schedule(self, schedule_id: str) -> None:
        """Fire again, from the next tick after now."""
        await self._schedule(self.store.pause_schedule(schedule_id, False), schedule_id)

    async def trigger_schedule(self, schedule_id: str) -> RunHandle:
        """Start a run of the schedule now, besides its ticks."""
        run_id = await self.store.trigger_schedule(check_name(schedule_id, "schedule id"))
        if run_id is None:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        return RunHandle(self, run_id)

    async def delete_schedule(self, schedule_id: str) -> None:
        """Remove it; a schedule declared in code comes back when a worker that declares it starts."""
        await self._schedule(self.store.delete_schedule(schedule_id), schedule_id)

    async def _schedule(self, done: Awaitable[bool], schedule_id: str) -> None:
        if not await done:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")

    async def list_workflows(self) -> list[WorkflowInfo]:
        return await self.store.list_workflows()

    async def list_actions(self) -> list[ActionInfo]:
        """The actions workers registered, with their human names and descriptions."""
        return await self.store.list_actions()

    async def runs_page(
        self,
        *,
        status: str | RunStatus | None = None,
        workflow: str | None = None,
        id_prefix: str | None = None,
        since: float | None = None,
        until: float | None = None,
        sort: str = "-created_at",
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunsPage:
        """A page of runs by keyset (each page costs the same however deep); pass `next_cursor` back
        for the next. `sort` is "-created_at" (newest first) or "created_at"; `since`/`until` bound
        the creation time (epoch seconds). Bad values raise ValueError before any query."""
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}, got {sort!r}")
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}, got {limit}")
        if id_prefix is not None:
            _check_run_id(id_prefix)
        for name, bound in (("since", since), ("until", until)):
            if bound is not None and not math.isfinite(bound):
                raise ValueError(f"{name} must be a finite number of seconds since the epoch, got {bound!r}")
        filters = RunFilters(
            status=None if status is None else _status(status).value,
            workflow=await self._workflow_id(workflow) if workflow else None,
            id_prefix=id_prefix or None,
            since=since,
            until=until,
        )
        after = None if cursor is None else _decode_cursor(cursor, sort)
        rows = await self.store.runs_page(filters, SORTS[sort], after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = _encode_cursor(sort, rows[-1]) if more else None
        return RunsPage(rows, next_cursor)

    async def current_steps(self, run_ids: list[str]) -> dict[str, StepRow]:
        """Run id → the run's latest step (what it is doing, or did last)."""
        return await self.store.last_steps(run_ids)

    async def count_runs(
        self,
        workflow: str | None = None,
        *,
        id_prefix: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> dict[str, int]:
        """How many runs there are in each status (every status present, zeros included), of
        `workflow` named as `runs_page` and `list_runs` take it (a short name too), and of the
        other filters `runs_page` takes but the status: what its pages show, counted."""
        counts = dict.fromkeys((s.value for s in RunStatus), 0)
        workflow_id = await self._workflow_id(workflow) if workflow else None
        for _, status, n in await self.store.run_counts("status", workflow_id, id_prefix, since, until):
            counts[status] = n
        return counts

    async def run_counts(self, by: str) -> dict[str, dict[str, int]]:
        """Run counts per status for each workflow (`by="workflow"`) or each queue (`by="queue"`)."""
        if by not in ("workflow", "queue"):
            raise ValueError(f"runs are counted by workflow or queue, not {by!r}")
        out: dict[str, dict[str, int]] = {}
        for key, status, n in await self.store.run_counts(by):
            out.setdefault(key, {})[status] = n
        return out

    async def list_workers(self, seen_within: float = 60.0) -> list[WorkerInfo]:
        """Workers whose last heartbeat is at most `seen_within` seconds old (by the database clock)."""
        return await self.store.list_workers(stale_after=seen_within)

    async def now(self) -> float:
        """The database's clock (epoch seconds): what leases and heartbeats are judged by."""
        return await self.store.now()

    async def _remote_definition(self, name: str) -> WorkflowInfo:
        check_name(name, "workflow name")
        known = await self.store.list_workflows()
        ids = {i.name for i in known} | {w.id for w in registry.workflows()}
        several = {n for n in ids if n.rsplit(".", 1)[-1] == name} | {
            w.id for w in registry.workflows() if w.name == name
        }
        if name not in ids and len(several) > 1:  # never the first of them: another's runs
            raise UnknownWorkflowError(
                f"{name!r} names several workflows ({', '.join(sorted(several))}); give the full id of the one meant"
            )
        found = _find_workflow(name, known)
        if found is not None:
            return found
        raise UnknownWorkflowError(
            f"no workflow named {name!r} is registered here or by any worker of this database "
            f"(known: {', '.join(sorted(ids)) or 'none'}); check the name or start a worker that imports it"
        )


def _find_workflow(name: str, known: list[WorkflowInfo]) -> WorkflowInfo | None:
    """The registered workflow `name` names: its id, else an unambiguous short name ("Checkout"
    for "billing.Checkout")."""
    for info in known:
        if info.name == name:
            return info
    short = [i for i in known if i.name.rsplit(".", 1)[-1] == name]
    return short[0] if len(short) == 1 else None


def _local_definition(workflow: Any) -> WorkflowDef | None:
    defn = getattr(workflow, "__cairn_workflow__", None)
    if isinstance(defn, WorkflowDef):
        return defn
    if isinstance(workflow, str):
        return registry.workflow(workflow)
    raise TypeError(f"expected a @workflow class, function or registered name, got {workflow!r}")


_POSITIONAL = ("positional_only", "positional_or_keyword")


def _encode_by_schema(info: WorkflowInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Bind arguments as the workflow's signature would, from the schema its workers registered
    (the code need not be importable here), and check them against it before anything is written."""
    schema, validator = schema_of(info.input_schema)
    params: list[dict[str, str]] | None = schema.get("x-cairn-parameters")
    if params is None:  # registered by a worker of an older version, which kept no order
        if len(args) > 1:
            raise TypeError(
                f"{info.name} was registered by an older Cairn worker, which did not record the order of its "
                "parameters; pass the arguments by name (a JSON object), or restart its workers to register it again"
            )
        params = [{"name": name, "kind": "positional_or_keyword"} for name in schema.get("properties", {})]
    positional = [p["name"] for p in params if p["kind"] in _POSITIONAL]
    kinds = {p["name"]: p["kind"] for p in params}
    var_args = next((p["name"] for p in params if p["kind"] == "var_positional"), None)
    var_kwargs = next((p["name"] for p in params if p["kind"] == "var_keyword"), None)
    takes = ", ".join(p["name"] for p in params) or "no arguments"
    if len(args) > len(positional) and var_args is None:
        by_name = [p["name"] for p in params if p["kind"] == "keyword_only"]
        raise TypeError(
            f"{info.name} takes {len(positional)} positional arguments ({', '.join(positional) or 'none'}), "
            f"got {len(args)}: {redact(list(args))!r}"
            + (f"; {', '.join(by_name)} only by name (a JSON object)" if by_name else "")
        )
    bound: dict[str, Any] = dict(zip(positional, args, strict=False))
    if var_args is not None:
        bound[var_args] = list(args[len(positional) :])
    for key, value in kwargs.items():
        kind = kinds.get(key)
        if kind is None or kind in ("positional_only", "var_positional", "var_keyword"):
            if var_kwargs is None:
                raise TypeError(f"{info.name} got an unexpected argument {key!r}; it takes {takes}")
            bound.setdefault(var_kwargs, {})[key] = value
            continue
        if key in bound:
            raise TypeError(f"{info.name} got multiple values for argument {key!r}")
        bound[key] = value
    missing = [p for p in schema.get("required", []) if p not in bound]
    if missing:
        raise TypeError(f"{info.name} is missing required arguments: {', '.join(missing)}")
    data = {k: to_jsonable(v, f"argument {k!r} of {info.name}") for k, v in bound.items()}
    check_against(validator, data, info.name)
    # Each argument is plain JSON within the nesting limit already: as `Signature.encode_args`
    # does, the object holding them is not counted as one more level (an argument 128 levels deep
    # was refused by name and taken where the code is imported).
    return text_of(data, f"arguments of {info.name}")


def _status(status: str | RunStatus) -> RunStatus:
    try:
        return RunStatus(status)
    except ValueError:
        raise ValueError(f"unknown status {status!r}; use one of {', '.join(s.value for s in RunStatus)}") from None


def _encode_cursor(sort: str, last: RunRow) -> str:
    """Opaque to callers: the sort and the keyset of the page's last run, base64url JSON."""
    raw = json.dumps([1, sort, last.created_at, last.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[float, str]:
    bad = ValueError("invalid cursor: pass back the next_cursor of a previous page unchanged")
    if len(cursor) > 1024:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not (isinstance(data, list) and len(data) == 4 and data[0] == 1 and isinstance(data[3], str)):
        raise bad
    if data[1] != sort:
        raise ValueError(f"this cursor belongs to sort {data[1]!r}, not {sort!r}; start again without a cursor")
    if not isinstance(data[2], int | float) or isinstance(data[2], bool):
        raise bad
    try:
        created = float(data[2])  # an integer of 400 digits overflows (it said 500)
    except OverflowError:
        raise bad from None
    if not math.isfinite(created):
        raise bad
    _check_run_id(data[3])
    return created, data[3]


def _check_run_id(run_id: str) -> str:
    return check_name(run_id, "run id")


_default_clients: dict[str, Client] = {}
_default_lock = threading.Lock()


_environment_client: contextvars.ContextVar[Client | None] = contextvars.ContextVar("cairn_env_client", default=None)
"""The client of the test environment this code runs in (`cairn.testing.environment`), if any."""


def default_in_this_context(client: Client | None) -> contextvars.Token[Client | None]:
    """Make `client` what `connect()` with no URL gives in this context and the tasks it starts (a
    test environment's, whose database is not ./cairn.db: `cairn.send_signal` from the test or from
    an action, `Workflow.where_id`). The token says what it held before."""
    return _environment_client.set(client)


def connect(url: str | None = None, retention: timedelta | float | None = None) -> Client:
    """The client for `url` (else CAIRN_DATABASE_URL, else sqlite:///./cairn.db), shared per URL.
    `retention` (else CAIRN_RETENTION, e.g. "30d"): how long workers keep finished runs. In a test
    environment, with no URL: the environment's client."""
    if url is None and retention is None:
        given = _environment_client.get()
        if given is not None:
            return given
    resolved = resolve_url(url)
    with _default_lock:
        client = _default_clients.get(resolved)
        if client is None:
            client = _default_clients[resolved] = Client(resolved, retention=retention)
        elif retention is not None:
            client.retention = retention_of(retention)
        return client


def _forget_clients_in_a_forked_child() -> None:
    """A child of a fork gets clients of its own from `connect` (the parent's are the parent's)."""
    global _default_lock
    _default_clients.clear()
    _default_lock = threading.Lock()  # another thread of the parent may have held it at the fork


os.register_at_fork(after_in_child=_forget_clients_in_a_forked_child)


PRUNE_BATCH = 500
"""Runs deleted per transaction by retention: small batches, short locks."""


from cairn.client.handle import RunHandle, check_timeout  # noqa: E402  (handle imports Client lazily)

__all__ = ["Client", "RunHandle", "RunNotFound", "RunsPage", "SerializationError", "connect"]
