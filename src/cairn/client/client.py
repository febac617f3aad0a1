"""The control API that users, the CLI and the web all go through."""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from cairn.errors import RunNotFound, SerializationError, UnknownWorkflowError
from cairn.registry import WorkflowDef, registry
from cairn.serialization import dumps, to_jsonable
from cairn.store.open import open_store, resolve_url
from cairn.store.protocol import RunFilters, RunRow, StepRow, WorkerInfo, WorkflowInfo
from cairn.store.sql_store import SqlStore
from cairn.types import RunStatus

MAX_PAGE = 500
"""The most runs one page of `Client.runs_page` holds."""

SORTS = {"-created_at": True, "created_at": False}
"""The orders `Client.runs_page` lists runs in (name → newest first); nothing else is accepted."""


@dataclass(frozen=True)
class RunsPage:
    """One page of runs and the opaque cursor of the next (None on the last page)."""

    runs: list[RunRow]
    next_cursor: str | None


class Client:
    """Async client: `client = cairn.connect(url)`; `await client.start(Wf, *args, id=...)`."""

    def __init__(self, url: str | None = None, *, store: SqlStore | None = None) -> None:
        self.store = store or open_store(url)
        self.url = self.store.url

    def __str__(self) -> str:
        return self.url

    async def close(self) -> None:
        await self.store.close()

    async def start(
        self, workflow: Any, /, *args: Any, id: str | None = None, queue: str | None = None, **kwargs: Any
    ) -> RunHandle:
        """Start a run; with an `id` that exists already, return that run and start nothing."""
        handle, _created = await self._start(workflow, args, kwargs, id, queue)
        return handle

    async def _start(
        self, workflow: Any, args: tuple[Any, ...], kwargs: dict[str, Any], id: str | None, queue: str | None
    ) -> tuple[RunHandle, bool]:
        defn = _local_definition(workflow)
        if defn is not None:
            from cairn.api.workflow import derive_id, encode_input

            encoded = encode_input(defn, args, kwargs)  # validated before anything is written
            run_id = id or derive_id(defn, args, kwargs) or uuid.uuid4().hex
            name, default_queue, version = defn.id, defn.queue, defn.version
        else:
            info = await self._remote_definition(str(workflow))
            encoded = _encode_by_schema(info, args, kwargs)
            run_id = id or uuid.uuid4().hex
            name, default_queue, version = info.name, info.queue, None
        _check_run_id(run_id)
        row, created = await self.store.insert_run(run_id, name, encoded, queue or default_queue, code_version=version)
        return RunHandle(self, row.id), created

    async def run(
        self,
        workflow: Any,
        /,
        *args: Any,
        id: str | None = None,
        queue: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Start (or find) the run and wait for its result."""
        handle, created = await self._start(workflow, args, kwargs, id, queue)
        # A run this call created is pending: no need to read it before its first notification.
        return await handle._result(timeout, pending=created)

    def get(self, run_id: str) -> RunHandle:
        return RunHandle(self, run_id)

    async def list_runs(
        self, status: str | RunStatus | None = None, workflow: Any = None, limit: int = 50
    ) -> list[RunRow]:
        if status is not None:
            status = _status(status)
        if workflow is not None and not isinstance(workflow, str):
            defn = _local_definition(workflow)
            workflow = defn.id if defn else str(workflow)
        if limit < 1 or limit > 10_000:
            raise ValueError(f"limit must be between 1 and 10000, got {limit}")
        return await self.store.list_runs(status, workflow, limit)

    async def list_workflows(self) -> list[WorkflowInfo]:
        return await self.store.list_workflows()

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
            workflow=workflow or None,
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

    async def count_runs(self, workflow: str | None = None) -> dict[str, int]:
        """How many runs there are in each status (every status present, zeros included)."""
        counts = dict.fromkeys((s.value for s in RunStatus), 0)
        for _, status, n in await self.store.run_counts("status", workflow):
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
        known = await self.store.list_workflows()
        for info in known:
            if info.name == name:
                return info
        short = [i for i in known if i.name.rsplit(".", 1)[-1] == name]
        if len(short) == 1:  # "Checkout" for "billing.Checkout", when it is unambiguous
            return short[0]
        names = sorted({*(i.name for i in known), *(w.id for w in registry.workflows())})
        raise UnknownWorkflowError(
            f"no workflow named {name!r} is registered here or by any worker of this database "
            f"(known: {', '.join(names) or 'none'}); check the name or start a worker that imports it"
        )


def _local_definition(workflow: Any) -> WorkflowDef | None:
    defn = getattr(workflow, "__cairn_workflow__", None)
    if isinstance(defn, WorkflowDef):
        return defn
    if isinstance(workflow, str):
        return registry.workflow(workflow)
    raise TypeError(f"expected a @workflow class, function or registered name, got {workflow!r}")


def _encode_by_schema(info: WorkflowInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Bind arguments by the parameter order of the registered input schema (no code needed here)."""
    schema = json.loads(info.input_schema)
    params = list(schema.get("properties", {}))
    if len(args) > len(params):
        raise TypeError(f"{info.name} takes {len(params)} arguments ({', '.join(params)}), got {len(args)}")
    bound = dict(zip(params, args, strict=False))
    for key, value in kwargs.items():
        if key not in params:
            raise TypeError(f"{info.name} got an unexpected argument {key!r}; it takes {', '.join(params)}")
        if key in bound:
            raise TypeError(f"{info.name} got multiple values for argument {key!r}")
        bound[key] = value
    missing = [p for p in schema.get("required", []) if p not in bound]
    if missing:
        raise TypeError(f"{info.name} is missing required arguments: {', '.join(missing)}")
    return dumps(
        {k: to_jsonable(v, f"argument {k!r} of {info.name}") for k, v in bound.items()}, f"arguments of {info.name}"
    )


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
    if not isinstance(data[2], int | float) or isinstance(data[2], bool) or not math.isfinite(data[2]):
        raise bad
    _check_run_id(data[3])
    return float(data[2]), data[3]


def _check_run_id(run_id: str) -> None:
    if not isinstance(run_id, str) or not run_id or len(run_id) > 255 or "\x00" in run_id:
        raise ValueError(f"run ids are 1-255 characters without NUL bytes, got {run_id!r}")


_default_clients: dict[str, Client] = {}
_default_lock = threading.Lock()


def connect(url: str | None = None) -> Client:
    """The client for `url` (else CAIRN_DATABASE_URL, else sqlite:///./cairn.db), shared per URL."""
    resolved = resolve_url(url)
    with _default_lock:
        client = _default_clients.get(resolved)
        if client is None:
            client = _default_clients[resolved] = Client(resolved)
        return client


from cairn.client.handle import RunHandle  # noqa: E402  (handle imports Client lazily)

__all__ = ["Client", "RunHandle", "RunNotFound", "RunsPage", "SerializationError", "connect"]
