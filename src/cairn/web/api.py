"""The JSON HTTP API (SPEC section 5): a thin mapping of routes onto `cairn.Client` calls.

No SQL and no store here: whatever a route needs that the client lacked was added to the client.
Errors are raised as the client raises them and turned into `{"error", "message"}` answers by the
handlers in `app.py`; parameters are bounded by their declarations, so bad input is a 4xx before
any query.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import quote, unquote

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import JsonValue
from starlette.convertors import PathConvertor, register_url_convertor

from cairn.client.client import MAX_PAGE, Client, QueuePlace, RunHandle
from cairn.records import RunRow
from cairn.registry import registry
from cairn.serialization import loads
from cairn.types import RunStatus
from cairn.web.models import (
    ID_MAX,
    ControlOut,
    ErrorOut,
    EventOut,
    ForkIn,
    HealthOut,
    LogOut,
    PropertySnapshot,
    QueueOut,
    QueuesOut,
    ResultOut,
    RunOut,
    RunsOut,
    RunSummary,
    ScheduleOut,
    SchedulesOut,
    SignalOut,
    StartIn,
    StartOut,
    StepOut,
    WorkerOut,
    WorkersOut,
    WorkflowOut,
)

MAX_WAIT = 300.0
"""Longest `?wait=` accepted, in seconds."""
STALE_AFTER = 30.0
"""A worker whose last heartbeat is older than this is shown as dead."""
SHOWN_DEAD_FOR = 3600.0
"""How long a dead worker stays listed."""

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": text}
    for status, text in [
        (400, "Malformed request"),
        (401, "Token required"),
        (403, "Refused (host, origin or CSRF)"),
        (404, "No such run or workflow"),
        (409, "The run's status forbids it, or the id belongs to another workflow"),
        (413, "Body over the size limit"),
        (422, "Invalid parameters or body"),
        (503, "The database is unavailable or locked"),
    ]
}


class AnyText(PathConvertor):
    """A run id, workflow or signal name in a URL: any text, `/` and line breaks included (`path`
    stops at a line break, so a run id holding one was looked up without its end, or not at all).

    An escaped `/` (`%2F`) and `%` (`%25`) reach it still escaped (`edge.routed_path`): a slash in
    the id is never taken for the one before a sub-route's name."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return quote(str(value), safe="")


register_url_convertor("cairn_text", AnyText())


def known_query(request: Request) -> None:
    """A query parameter the route does not take, or one given twice, is a 422 naming it: a typo
    (`?stauts=failed`) listed every run, and `?status=waiting&status=failed` only the failed ones."""
    route = request.scope.get("route")
    declared = getattr(getattr(route, "dependant", None), "query_params", None)
    if declared is None:
        return
    known: set[str] = {str(getattr(p, "alias", None) or getattr(p, "name", "")) for p in declared}
    unknown = sorted(k for k in request.query_params if k not in known)
    if unknown:
        takes = f"it takes {', '.join(sorted(known))}" if known else "it takes none"
        raise ValueError(f"unknown query parameter {', '.join(map(repr, unknown))} for this route; {takes}")
    repeated = sorted(k for k in known if len(request.query_params.getlist(k)) > 1)
    if repeated:
        raise ValueError(f"query parameter {', '.join(map(repr, repeated))} given more than once; give it once")


router = APIRouter(prefix="/api", responses=_ERRORS, dependencies=[Depends(known_query)])
health = APIRouter()

RunId = Annotated[str, Path(min_length=1, max_length=ID_MAX, description="The run's id.")]
Name = Annotated[str, Path(min_length=1, max_length=ID_MAX)]
Wait = Annotated[
    float | None, Query(ge=0, le=MAX_WAIT, description="Seconds to wait for the run to end (or be stuck on an error).")
]


def client_of(request: Request) -> Client:
    client: Client = request.app.state.client
    return client


async def unserved(client: Client, run_ids: list[str] | None = None) -> dict[str, str]:
    """Run id → why no live worker can serve it (its workflow or an action it needs is registered
    nowhere), for `run_ids` or every run with work due."""
    return await client.unserved(run_ids)


HEALTH_TIMEOUT = 3.0
"""Seconds /healthz waits for the database: a probe wants an answer, and the store's own retries
while the database is down (a minute) made it wait for all of them."""


@health.get(
    "/healthz",
    response_model=HealthOut,
    tags=["health"],
    responses={503: {"model": ErrorOut, "description": "The database did not answer"}},
)
async def healthz(request: Request) -> HealthOut | JSONResponse:
    """Liveness and database reachability; the one route that never needs the token."""
    client = client_of(request)
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT):
            await client.now()
    except Exception as exc:  # any failure to reach the database is "unavailable", never a 500
        said = f"no answer within {HEALTH_TIMEOUT:g}s" if isinstance(exc, TimeoutError) else type(exc).__name__
        return JSONResponse({"error": "unavailable", "message": f"database unreachable: {said}"}, status_code=503)
    return HealthOut(status="ok", database=client.url.split(":", 1)[0])  # the kind only: this route is public


# --- workflows -----------------------------------------------------------------------------------


async def workflow_names(client: Client) -> list[str]:
    """Names of the workflows known to the database or to this process (no counts: cheap)."""
    return sorted({*(i.name for i in await client.list_workflows()), *(d.id for d in registry.workflows())})


async def list_workflows(client: Client) -> list[WorkflowOut]:
    """Workflows known to the database (registered by workers) and to this process, merged."""
    import json

    counts = await client.run_counts("workflow")
    found: dict[str, WorkflowOut] = {}
    for info in await client.list_workflows():
        found[info.name] = WorkflowOut(
            name=info.name,
            description=info.description,
            queue=info.queue,
            input_schema=json.loads(info.input_schema),
            counts=counts.get(info.name, {}),
            registered_here=False,
        )
    for defn in registry.workflows():
        found[defn.id] = WorkflowOut(
            name=defn.id,
            description=defn.description,
            queue=defn.queue,
            input_schema=defn.input_schema(),
            counts=counts.get(defn.id, {}),
            registered_here=True,
        )
    return sorted(found.values(), key=lambda w: w.name)


@router.get("/workflows", response_model=list[WorkflowOut], tags=["workflows"])
async def workflows(request: Request) -> list[WorkflowOut]:
    """Registered workflows with their description, input JSON schema and run counts."""
    return await list_workflows(client_of(request))


@router.post(
    "/workflows/{name:cairn_text}/runs",
    status_code=201,
    response_model=StartOut,
    responses={200: {"model": StartOut, "description": "The id named an existing run: nothing started"}},
    tags=["workflows"],
)
async def start_run(
    name: Name, response: Response, request: Request, body: StartIn | None = None, wait: Wait = None
) -> StartOut:
    """Start a run of workflow `name` (201), or find the existing run with `id`, or the unfinished
    run of its queue with `dedup_key` (200). With `?wait=SECONDS`, answer once it finishes within
    that time, with its result or error. No body: no arguments."""
    client = client_of(request)
    body = body or StartIn()
    # Client._start also says whether the run is new (SPEC's `handle.created`).
    queued = QueuePlace(body.key, body.priority, body.dedup_key)
    handle, created = await client._start(name, tuple(body.args), dict(body.kwargs), body.id, body.queue, queued)
    if not created:
        response.status_code = 200
    # Waited for, until it ends or is stuck paused on an error (it would not end before a fix).
    row = await _settled(request, handle, wait) if wait else await handle.describe()
    return StartOut(id=row.id, status=row.status, created=created, **_outcome(row))


def stopping(app: Any) -> asyncio.Event:
    """Set when the server serving `app` stops (`serve.stop`): a wait for a run answers then."""
    event: asyncio.Event = app.state.stopping
    return event


async def _settled(request: Request, handle: RunHandle, wait: float) -> RunRow:
    """The run once it ends (or is stuck paused on an error) within `wait` seconds, or as it is
    when the server stops meanwhile. A client that hangs up ends the wait: each wait holds a task
    and a result waiter until then, and a stopping server waited for every one of them."""
    waiting = asyncio.ensure_future(handle._settled(wait))
    ends = [waiting, asyncio.ensure_future(_hung_up(request)), asyncio.ensure_future(stopping(request.app).wait())]
    try:
        await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in ends:
            task.cancel()
        await asyncio.gather(*ends, return_exceptions=True)
    if waiting.cancelled():
        return await handle.describe()
    return waiting.result()


async def _hung_up(request: Request) -> None:
    """Returns when the client disconnects (the body, if any, was read before: only that is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _outcome(row: Any) -> dict[str, Any]:
    if not row.status.is_terminal:  # a run paused on an error has one: why it waits (as GET /runs/{id} says)
        return {"done": False, "error": loads(row.error)}
    output = loads(row.result)
    return {"done": True, "result": output, "output": output, "error": loads(row.error)}


# --- runs ----------------------------------------------------------------------------------------


@router.get("/runs", response_model=RunsOut, tags=["runs"])
async def runs(
    request: Request,
    status: RunStatus | None = None,
    workflow: Annotated[str | None, Query(max_length=ID_MAX)] = None,
    id_prefix: Annotated[str | None, Query(max_length=ID_MAX, description="Runs whose id starts so.")] = None,
    since: Annotated[float | None, Query(ge=0, le=1e11, description="Created at or after (epoch s).")] = None,
    until: Annotated[float | None, Query(ge=0, le=1e11, description="Created before (epoch s).")] = None,
    sort: Annotated[str, Query(pattern="^-?created_at$", description="-created_at (newest first) or created_at.")] = (
        "-created_at"
    ),
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=1024, description="next_cursor of the previous page.")] = None,
    counts: bool = False,
) -> RunsOut:
    """Runs, one keyset page at a time, filtered and sorted by allow-listed fields only."""
    client = client_of(request)
    page = await client.runs_page(
        status=status,
        workflow=workflow,
        id_prefix=id_prefix or None,
        since=since,
        until=until,
        sort=sort,
        limit=limit,
        cursor=cursor or None,
    )
    now = await client.now()
    return RunsOut(
        runs=[RunSummary.of(r, now) for r in page.runs],
        next_cursor=page.next_cursor,
        counts=await client.count_runs(workflow, id_prefix=id_prefix or None, since=since, until=until)
        if counts
        else None,
    )


MAX_STEPS_PAGE = 10_000
PageLimit = Annotated[
    int | None, Query(ge=1, le=MAX_STEPS_PAGE, description="At most this many; a full page links the next one.")
]
PageLast = Annotated[int | None, Query(ge=1, le=MAX_STEPS_PAGE, description="The run's latest ones instead (alone).")]
LAST_SEQ = 2**31 - 1
"""The highest step number a store holds (PostgreSQL's `integer`)."""


@router.get("/runs/{run_id:cairn_text}/steps", response_model=list[StepOut], tags=["runs"])
async def steps(
    run_id: RunId,
    request: Request,
    response: Response,
    after: Annotated[int, Query(ge=0, le=LAST_SEQ, description="Only the steps after this seq.")] = 0,
    limit: PageLimit = None,
    last: PageLast = None,
) -> list[StepOut]:
    """The run's journal, step by step, with each action's human name and description (from its code,
    or as the workers registered it). All of it by default; a long run's a page at a time (`after`,
    `limit`: a full page sends `Link: <...>; rel="next"`), or its `last` steps."""
    client = client_of(request)
    found = await client.get(run_id).steps(after, limit, last=last)  # `last` with a page's bounds: 422
    _link_next(request, response, limit, found[-1].seq if found else 0, len(found))
    actions = await action_labels(client, {s.name for s in found if s.kind.value == "action"})
    out = []
    for s in found:
        action = actions.get(s.name) if s.kind.value == "action" else None
        out.append(StepOut.of(s, action.name if action else None, action.description if action else None))
    return out


async def action_labels(client: Client, names: set[str]) -> dict[str, Any]:
    """Action id → its human name and description: from its code where it is imported here, else as
    the workers registered it (a dashboard served apart from its workers imports no code)."""
    found: dict[str, Any] = {n: a for n in names if (a := registry.action(n)) is not None}
    if names - found.keys():
        found.update({a.id: a for a in await client.list_actions() if a.id in names and a.id not in found})
    return found


@router.get(
    "/runs/{run_id:cairn_text}/properties", response_model=dict[str, JsonValue] | list[PropertySnapshot], tags=["runs"]
)
async def properties(run_id: RunId, request: Request, history: bool = False) -> Any:
    """The run's properties now, or with `history=true` after each activation that changed them."""
    return await client_of(request).get(run_id).properties(history=history)


@router.get("/runs/{run_id:cairn_text}/memory", response_model=dict[str, JsonValue], tags=["runs"])
async def memory(run_id: RunId, request: Request) -> dict[str, Any]:
    return await client_of(request).get(run_id).memory()


@router.get("/runs/{run_id:cairn_text}/events", response_model=list[EventOut], tags=["runs"])
async def events(
    run_id: RunId,
    request: Request,
    response: Response,
    after: Annotated[int, Query(ge=0, le=2**63 - 1, description="Only the events after this id.")] = 0,
    limit: PageLimit = None,
    last: PageLast = None,
) -> list[EventOut]:
    """Every state change of the run, oldest first; a long run's a page at a time, as its steps
    (`after` an event's id, `limit`: a full page sends `Link: <...>; rel="next"`), or its `last` events."""
    found = await client_of(request).get(run_id).events(after, limit, last=last)  # `last` with a page's bounds: 422
    _link_next(request, response, limit, found[-1].id if found else 0, len(found))
    return [EventOut.of(e) for e in found]


def _link_next(request: Request, response: Response, limit: int | None, last_key: int, count: int) -> None:
    """`Link: <the next page>; rel="next"` on a full page of a list paged by key (`after`, `limit`)."""
    if limit is not None and count == limit:  # the route takes no other parameter with these two
        path = quote(request.scope["path"], safe="/%")  # as routed: `%2F` and `%25` kept, the rest escaped
        response.headers["Link"] = f'<{path}?after={last_key}&limit={limit}>; rel="next"'


@router.get("/runs/{run_id:cairn_text}/logs", response_model=list[LogOut], tags=["runs"])
async def logs(run_id: RunId, request: Request) -> list[LogOut]:
    """The log lines the run's actions wrote (`cairn.context().logger`), in step order."""
    return [LogOut(seq=seq, name=name, line=line) for seq, name, line in await client_of(request).get(run_id).logs()]


@router.get("/runs/{run_id:cairn_text}/result", response_model=ResultOut, tags=["runs"])
async def result(run_id: RunId, request: Request, wait: Wait = None) -> ResultOut:
    """The run's outcome; `done` is false when it has not finished (within `wait` seconds, or
    before it was stuck paused on an error: `error` says which)."""
    handle = client_of(request).get(run_id)
    row = await _settled(request, handle, wait) if wait else await handle.describe()
    return ResultOut(id=row.id, status=row.status, **_outcome(row))


# --- control -------------------------------------------------------------------------------------


def _control(op: str) -> Any:
    async def control(run_id: RunId, request: Request) -> ControlOut:
        handle: RunHandle = client_of(request).get(run_id)
        return ControlOut(id=run_id, status=await getattr(handle, op)())

    return control


for _op, _doc in [
    (
        "pause",
        "Take no new steps until resumed; a step in flight finishes. A paused run is left as it is "
        "(200, its status unchanged); 409 once the run has finished.",
    ),
    (
        "resume",
        "Continue a paused run (one paused on an error tries the failed step again; one paused before it "
        "ever started is pending again). A run that is not paused but still going is left as it is (200, "
        "its status unchanged); 409 once it has finished.",
    ),
    (
        "cancel",
        "Stop the run and its children; pending steps are cancelled. A cancelled run is left as it is "
        "(200, its status unchanged); 409 once it has finished otherwise.",
    ),
    ("kill", "The same as cancel (`cancel`'s other name, as in the client and the CLI)."),
    (
        "retry",
        "Continue a failed run, or one paused on an error, from the failed step (a run paused by a user is "
        "resumed). A run still going is left as it is (200, its status unchanged); 409 for a completed or "
        "cancelled run.",
    ),
]:
    router.add_api_route(
        f"/runs/{{run_id:cairn_text}}/{_op}",
        _control(_op),
        methods=["POST"],
        response_model=ControlOut,
        tags=["control"],
        name=_op,
        summary=_op.capitalize(),
        description=_doc,
    )


@router.post("/runs/{run_id:cairn_text}/signals/{name:cairn_text}", response_model=SignalOut, tags=["control"])
async def signal(
    run_id: RunId,
    name: Name,
    request: Request,
    payload: Annotated[JsonValue, Body(description="The signal's payload: any JSON (none: null).")] = None,
) -> SignalOut:
    """Send signal `name` to the run; the body is its payload (409 once the run has finished)."""
    await client_of(request).get(run_id).signal(name, payload)
    return SignalOut(id=run_id, name=name, sent=True)


@router.post("/runs/{run_id:cairn_text}/fork", status_code=201, response_model=ControlOut, tags=["control"])
async def fork(run_id: RunId, body: ForkIn, request: Request) -> ControlOut:
    """Start a new run reusing this run's journal up to `from_step`."""
    client = client_of(request)
    forked = await client.get(run_id).fork(body.from_step, id=body.id)
    return ControlOut(id=forked.id, status=await forked.status())


@router.get("/runs/{run_id:cairn_text}", response_model=RunOut, tags=["runs"])
async def run(run_id: RunId, request: Request) -> RunOut:
    """One run: status, input, output, error, properties, timings, parent and children.

    Declared after the routes under it, as a run id may hold a slash: those of the controls too, so
    that a wrong method on one is told its methods (POST), not this route's (GET)."""
    client = client_of(request)
    handle = client.get(run_id)
    row = await handle.describe()
    return RunOut.detail(row, await client.now(), await handle.children())


# --- workers, queues, schedules -----------------------------------------------------------------


async def list_workers(client: Client) -> tuple[list[WorkerOut], float]:
    now = await client.now()
    out = []
    for w in await client.list_workers(seen_within=SHOWN_DEAD_FOR):
        age = max(0.0, now - w.heartbeat_at)
        out.append(
            WorkerOut(
                id=w.id,
                host=w.host,
                pid=w.pid,
                queues=w.queues,
                in_flight=w.in_flight,
                started_at=w.started_at,
                heartbeat_at=w.heartbeat_at,
                heartbeat_age=age,
                alive=age <= STALE_AFTER,
            )
        )
    return out, now


@router.get("/workers", response_model=WorkersOut, tags=["workers"])
async def workers(request: Request) -> WorkersOut:
    """Workers seen in the last hour (`alive`: heartbeat within 30 s), and runs no live worker serves."""
    client = client_of(request)
    found, _ = await list_workers(client)
    return WorkersOut(workers=found, unserved=await unserved(client))


QUEUES_NOTE = (
    "Queues declared with cairn.Queue carry their limits (enforced by the claim, across all workers) and "
    "what is waiting and in flight; other queue names are those seen on runs, with no limits."
)


async def list_queues(client: Client) -> list[QueueOut]:
    """Every queue declared or seen on runs: its limits, its runs per status, waiting and in flight."""
    counts = await client.run_counts("queue")
    declared = {q.spec.name: q for q in await client.list_queues()}
    return [QueueOut.of(name, counts.get(name, {}), declared.get(name)) for name in sorted({*counts, *declared})]


@router.get("/queues", response_model=QueuesOut, tags=["workers"])
async def queues(request: Request) -> QueuesOut:
    return QueuesOut(queues=await list_queues(client_of(request)), note=QUEUES_NOTE)


async def list_schedules(client: Client) -> list[ScheduleOut]:
    live = {sid for w in await client.list_workers() for sid in w.schedules}
    return [
        ScheduleOut(
            id=row.spec.id,
            workflow=row.spec.workflow,
            expression=row.spec.expression(),
            tz=row.spec.tz,
            overlap=row.spec.overlap,
            catchup=row.spec.catchup,
            source=row.source,
            paused=row.paused,
            next_fire_at=row.next_fire_at,
            last_fire_at=row.last_fire_at,
            last_run_id=row.last_run_id,
            last_status=row.last_status,
            declared=row.source != "code" or row.spec.id in live,
        )
        for row in await client.list_schedules()
    ]


@router.get("/schedules", response_model=SchedulesOut, tags=["workers"])
async def schedules(request: Request) -> SchedulesOut:
    """Schedules, with their next tick, last run and its status; those declared in code that no live
    worker declares any more (they do not fire) have `declared` false."""
    return SchedulesOut(schedules=await list_schedules(client_of(request)))
