"""The dashboard's HTML pages, rendered on the server with Jinja2 (autoescaped) from client data.

Pages read through the same client calls as the JSON API; their buttons and forms act through the
API from `static/app.js` (with the CSRF token from the page's meta tag), so there is one way to
change a run. No inline script anywhere: the CSP forbids it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from cairn.client.client import MAX_PAGE, Client
from cairn.client.handle import StepInfo
from cairn.errors import RunNotFound
from cairn.redaction import MASK, is_secret_key, redact
from cairn.serialization import loads
from cairn.transitions import RULES
from cairn.types import RunStatus
from cairn.web import views
from cairn.web.api import (
    QUEUES_NOTE,
    action_labels,
    client_of,
    known_query,
    list_queues,
    list_schedules,
    list_workers,
    list_workflows,
    unserved,
    workflow_names,
)
from cairn.web.edge import JSON, public_message
from cairn.web.models import ID_MAX, RunSummary
from cairn.web.security import SESSION_COOKIE, SESSION_TTL, Guard, safe_next

router = APIRouter(include_in_schema=False)

SINCE = {"15m": 900, "1h": 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400}
"""The creation-time filters the runs page offers (seconds back from now)."""
STEPS_PER_PAGE = 200
"""Step details shown per page of a run."""
TIMELINE_ALL = 2_000
"""The timeline draws a run's every step up to this many; a longer run's draws the steps its page
lists (drawing every step reads them all: 30 ms a thousand steps)."""
LATEST_EVENTS = 200
LATEST_SNAPSHOTS = 100
"""Events and property snapshots shown on a run page (the newest); the API has them all."""
MEMORY_SHOWN = 200
"""Memory entries a run page lists (the first, in the order the store gives them); the API has them all."""
CELL_WIDTH = 200
"""Characters of one memory entry or property a table cell shows (a longer one links to all of it)."""


def _pre(text: str) -> Markup:
    """Text escaped for the content of a `<pre>` element: `&`, `<` and `>`. Quotes need no escaping
    outside attribute values, and indented JSON is full of them: escaped, as autoescape does
    (`&#34;`), a page's JSON grew by half again. Never used inside an attribute."""
    return Markup(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


_env = Environment(
    loader=FileSystemLoader(str(resources.files("cairn.web").joinpath("templates"))),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(
    pretty=views.pretty,
    compact=views.compact,
    when=views.fmt_time,
    duration=views.fmt_duration,
    error_text=views.error_text,
    segment=lambda v: quote(str(v), safe=""),
    pre=_pre,
    cut=_cut,
    kb=views.kb,
)


_SURROGATE = re.compile("[\ud800-\udfff]")


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    guard: Guard = request.app.state.guard
    client: Client = request.app.state.client
    base = request.scope.get("root_path", "")
    state = request.scope.get("state", {})
    authenticated = bool(state.get("authenticated", False))
    html = _env.get_template(template).render(
        base=base,
        csrf=state.get("csrf", ""),
        logged_in=guard.enabled and authenticated,
        # The client prints its URL without the password; still, user, host and database name are
        # not for whoever reaches the login page.
        database=str(client) if authenticated else "",
        statuses=[s.value for s in RunStatus],
        **context,
    )
    html = _SURROGATE.sub("\ufffd", html)  # a lone surrogate in run data has no UTF-8 form: shown as �
    return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})


# --- runs ------------------------------------------------------------------------------------------


def _runs_filters(request: Request) -> tuple[dict[str, str], list[str]]:
    """The runs page's query, kept only where valid (problems are shown, not raised)."""
    q = request.query_params
    problems = []
    f = {k: q.get(k, "").strip() for k in ("status", "workflow", "q", "since", "sort", "cursor")}
    if f["status"] and f["status"] not in {s.value for s in RunStatus}:
        problems.append(f"unknown status {f['status']!r}")
        f["status"] = ""
    if f["since"] and f["since"] not in SINCE:
        problems.append(f"unknown time range {f['since']!r}")
        f["since"] = ""
    if f["sort"] not in ("", "created_at", "-created_at"):
        problems.append(f"unknown order {f['sort']!r}")
        f["sort"] = ""
    for key in ("workflow", "q", "cursor"):
        if len(f[key]) > (1024 if key == "cursor" else ID_MAX) or "\x00" in f[key]:
            problems.append(f"{key} is too long")
            f[key] = ""
    return f, problems


async def _runs_context(request: Request) -> dict[str, Any]:
    client = client_of(request)
    f, problems = _runs_filters(request)
    now = await client.now()
    query: dict[str, Any] = {
        "status": f["status"] or None,
        "workflow": f["workflow"] or None,
        "id_prefix": f["q"] or None,
        "since": now - SINCE[f["since"]] if f["since"] else None,
        "sort": f["sort"] or "-created_at",
        "limit": 50,
    }
    try:
        page = await client.runs_page(**query, cursor=f["cursor"] or None)
    except ValueError as exc:  # a stale or edited cursor: the first page of the same query, and why
        problems.append(str(exc))
        f["cursor"] = ""
        page = await client.runs_page(**query)
    workflows = await workflow_names(client)
    if f["workflow"] and f["workflow"] not in workflows and not page.runs:
        problems.append(f"no workflow named {f['workflow']!r} is known")
    current = await client.current_steps([r.id for r in page.runs])
    kept = {k: v for k, v in f.items() if v and k != "cursor"}
    return {
        "f": f,
        "problems": problems,
        "runs": [RunSummary.of(r, now) for r in page.runs],
        "current": current,
        "counts": await client.count_runs(query["workflow"], id_prefix=query["id_prefix"], since=query["since"]),
        "workflows": workflows,
        "query": urlencode({**kept, **({"cursor": f["cursor"]} if f["cursor"] else {})}),
        "filters_query": urlencode(kept),
        # The count links keep every filter but the status (which they set): they kept only the
        # workflow, and "all" kept the status.
        "others_query": urlencode({k: v for k, v in kept.items() if k != "status"}),
        "next_query": urlencode({**kept, "cursor": page.next_cursor}) if page.next_cursor else None,
        "first_query": urlencode(kept) if f["cursor"] else None,
        "since_choices": list(SINCE),
        "max_page": MAX_PAGE,
    }


@router.get("/", response_class=HTMLResponse)
async def runs_page(request: Request) -> HTMLResponse:
    return render(request, "runs.html", nav="runs", **await _runs_context(request))


@router.get("/partials/runs", response_class=HTMLResponse)
async def runs_partial(request: Request) -> HTMLResponse:
    """The live part of the runs page (counts and table), fetched again by app.js every few seconds."""
    return render(request, "_runs.html", **await _runs_context(request))


# --- one run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepView:
    """A step as the run page lists it: its values cut to the page's budget, each linking to all of it."""

    step: StepInfo
    args: views.Shown
    result: views.Shown | None
    traceback: views.Clipped
    logs: views.Clipped


def value_href(base: str, run_id: str, part: str, **where: int | str | None) -> str:
    """The URL of the whole of one value of a run, as JSON (the `/value` route)."""
    query = {"run": run_id, "part": part, **{k: v for k, v in where.items() if v is not None}}
    return f"{base}/value?{urlencode(query)}"


def _linked(shown: views.Shown, href: str) -> views.Shown:
    return replace(shown, href=href) if shown.truncated else shown


def step_views(steps: list[StepInfo], base: str, run_id: str) -> list[StepView]:
    """The steps' values within STEP_SHOWN_MAX each and STEPS_SHOWN_BUDGET in all."""
    room = views.Room(views.STEPS_SHOWN_BUDGET)
    out = []
    for s in steps:
        args = _linked(
            room.preview(views.step_args(s), views.STEP_SHOWN_MAX), value_href(base, run_id, "args", step=s.seq)
        )
        result = None
        if s.status.value == "completed":
            shown = room.preview(views.step_result(s), views.STEP_SHOWN_MAX)
            result = _linked(shown, value_href(base, run_id, "result", step=s.seq))
        traceback = room.clip(views.error_traceback(s.error), views.STEP_SHOWN_MAX)
        logs = room.clip("".join(f"{line}\n" for line in s.logs), views.STEP_SHOWN_MAX)
        out.append(StepView(s, args, result, traceback, logs))
    return out


@router.get("/runs/{run_id:cairn_text}", response_class=HTMLResponse)
async def run_page(
    request: Request, run_id: Annotated[str, Path(min_length=1, max_length=ID_MAX)], steps_from: str = "0"
) -> HTMLResponse:
    client = client_of(request)
    base = request.scope.get("root_path", "")
    problems = []
    try:  # a page's parameter: a bad value is said on the page, not answered with JSON
        first = int(steps_from.strip() or 0)
    except ValueError:
        problems.append(f"steps_from must be a step number, not {steps_from[:40]!r}: showing the first steps")
        first = 0
    handle = client.get(run_id)
    try:
        row = await handle.describe()
    except RunNotFound as exc:
        return render(request, "error.html", status=404, title="Run not found", message=public_message(request, exc))
    now = await client.now()
    # What the page shows is read, not the whole journal: a run of 50,000 steps and 100,000 events
    # took 1.7 s a page when every step and event was read.
    sizes = await handle.sizes()
    start = max(0, min(first, max(0, sizes.steps - 1)))  # steps are numbered 1, 2, ...: step start + 1 first
    partial = sizes.steps > TIMELINE_ALL
    if partial:
        steps = shown = await handle.steps(after=start, limit=STEPS_PER_PAGE)
    else:
        steps = await handle.steps()
        shown = steps[start : start + STEPS_PER_PAGE]
    events = await handle.events(last=LATEST_EVENTS)
    # One more than shown: the oldest shown is compared with the one before it (else every
    # property of it read as "added").
    history = await handle.properties(history=True, last=LATEST_SNAPSHOTS + 1)
    memory = await handle.memory()
    error = loads(row.error)
    diverged = views.divergence(error)
    attempts: dict[int, list[Any]] = {}
    for e in await handle.events(steps=range(shown[0].seq, shown[-1].seq + 1)) if shown else []:
        if e.step is not None and e.kind.startswith("step."):
            attempts.setdefault(e.step, []).append(e)
    recorded_step = None
    if diverged:
        recorded_step = next(
            (s for s in await handle.steps(after=diverged[0] - 1, limit=1) if s.seq == diverged[0]), None
        )
    actions = await action_labels(client, {s.name for s in shown if s.kind.value == "action"})
    # Every value is encoded (and redacted) here once, and only as far as it is shown.
    result = None
    if row.status == RunStatus.COMPLETED:
        result = _linked(views.preview(loads(row.result)), value_href(base, row.id, "result"))
    memory_rows = []
    for key, value in list(memory.items())[:MEMORY_SHOWN]:
        text, cut = (MASK, False) if is_secret_key(key) else views.cell(value, CELL_WIDTH)
        memory_rows.append((key, text, value_href(base, row.id, "memory", key=key) if cut else ""))
    return render(
        request,
        "run.html",
        nav="runs",
        problems=problems,
        now=now,
        run=RunSummary.of(row, now),
        row=row,
        input=_linked(views.preview(loads(row.input)), value_href(base, row.id, "input")),
        result=result,
        error=error,
        traceback=views.clip(views.error_traceback(error), views.SHOWN_MAX),
        children=await handle.children(),
        allowed={op: row.status in rule.allowed for op, rule in RULES.items()},
        # Of all the steps, from the run's creation; of a page's, from its first step.
        timeline=views.timeline(steps, None if partial else row.created_at, now),
        timeline_of_page=partial,
        steps=step_views(shown, base, row.id),
        step_count=sizes.steps,
        steps_from=start,
        steps_per_page=STEPS_PER_PAGE,
        steps_budget=views.STEPS_SHOWN_BUDGET,
        actions=actions,
        attempts=attempts,
        history=views.property_changes(history, CELL_WIDTH)[-LATEST_SNAPSHOTS:],
        history_count=sizes.snapshots,
        properties_href=value_href(base, row.id, "properties"),
        memory=memory_rows,
        memory_count=len(memory),
        events=events,
        event_count=sizes.events,
        diverged=diverged,
        recorded_step=recorded_step,
        width=views.TIMELINE_WIDTH,
        lane_height=views.LANE_HEIGHT,
    )


Part = Literal["input", "result", "args", "properties", "memory"]


@router.get("/value", dependencies=[Depends(known_query)])
async def run_value(
    request: Request,
    run: Annotated[str, Query(min_length=1, max_length=ID_MAX, description="The run's id.")],
    part: Annotated[Part, Query(description="Which of the run's values.")],
    step: Annotated[int | None, Query(ge=0, description="A step's seq (with args or result).")] = None,
    key: Annotated[str | None, Query(min_length=1, max_length=ID_MAX, description="A memory key.")] = None,
    activation: Annotated[int | None, Query(ge=0, description="Properties after this activation.")] = None,
) -> Response:
    """The whole of one value a run page shows (and cuts when large), as JSON, redacted as the page
    shows it: the run's input or result, a step's arguments or result (`step`), a memory entry
    (`key`; without it, all of memory) or the properties (after `activation`; without it, now).
    The JSON API (`/api/runs/...`) gives the same data as stored, to those holding the token."""
    if step is not None and part not in ("args", "result"):
        raise ValueError(f"step goes with part=args or part=result, not part={part}")
    if key is not None and part != "memory":
        raise ValueError(f"key goes with part=memory, not part={part}")
    if activation is not None and part != "properties":
        raise ValueError(f"activation goes with part=properties, not part={part}")
    if part == "args" and step is None:
        raise ValueError("part=args needs step (the step's seq)")
    handle = client_of(request).get(run)
    row = await handle.describe()  # RunNotFound: a 404
    value: Any
    if step is not None:
        found = next((s for s in await handle.steps() if s.seq == step), None)
        if found is None:
            raise HTTPException(404, f"run {run!r} has no step {step}")
        value = views.step_args(found) if part == "args" else views.step_result(found)
    elif part in ("input", "result"):
        value = loads(row.input if part == "input" else row.result)
    elif part == "memory":
        memory = await handle.memory()
        if key is not None and key not in memory:
            raise HTTPException(404, f"run {run!r} has no memory entry {key!r}")
        value = memory if key is None else (MASK if is_secret_key(key) else memory[key])
    elif activation is None:
        value = loads(row.properties)
    else:
        snapshot = next((h for h in await handle.properties(history=True) if h["activation"] == activation), None)
        if snapshot is None:
            raise HTTPException(404, f"run {run!r} recorded no properties after activation {activation}")
        value = snapshot["properties"]
    return JSON(redact(value), headers={"cache-control": "no-store"})


# --- workflows, workers, queues, schedules ---------------------------------------------------------


@router.get("/workflows", response_class=HTMLResponse)
async def workflows_page(request: Request) -> HTMLResponse:
    found = await list_workflows(client_of(request))
    forms = {w.name: views.form_fields(w.input_schema) for w in found}
    return render(request, "workflows.html", nav="workflows", workflows=found, forms=forms)


@router.get("/workers", response_class=HTMLResponse)
async def workers_page(request: Request) -> HTMLResponse:
    client = client_of(request)
    found, _ = await list_workers(client)
    return render(
        request,
        "workers.html",
        nav="workers",
        workers=found,
        unserved=await unserved(client),
        unserved_checked=hasattr(client, "unserved"),
        now=time.time(),
    )


@router.get("/queues", response_class=HTMLResponse)
async def queues_page(request: Request) -> HTMLResponse:
    found = await list_queues(client_of(request))
    return render(request, "queues.html", nav="queues", queues=found, note=QUEUES_NOTE)


@router.get("/schedules", response_class=HTMLResponse)
async def schedules_page(request: Request) -> HTMLResponse:
    found = await list_schedules(client_of(request))
    return render(request, "schedules.html", nav="schedules", schedules=found)


@router.get("/api/docs", response_class=HTMLResponse)
async def api_docs(request: Request) -> HTMLResponse:
    """Swagger UI, vendored (no CDN), started by static/docs.js (no inline script)."""
    return render(request, "docs.html", nav="api")


# --- login -----------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "") -> Response:
    guard: Guard = request.app.state.guard
    base = request.scope.get("root_path", "")
    if not guard.enabled:
        return RedirectResponse(base + "/", status_code=303)
    return render(request, "login.html", next=safe_next(next, base), failed=False)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the token once and hand the browser a session cookie (HttpOnly, SameSite=Strict)."""
    guard: Guard = request.app.state.guard
    base = request.scope.get("root_path", "")
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    given, target = form.get("token", [""])[0], safe_next(form.get("next", [""])[0], base)
    if not guard.enabled:
        return RedirectResponse(target, status_code=303)
    if not guard.token_ok(given):
        return render(request, "login.html", status=401, next=target, failed=True)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        guard.new_session(),
        max_age=SESSION_TTL,
        path=base + "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    base = request.scope.get("root_path", "")
    response = RedirectResponse(base + "/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=base + "/", httponly=True, samesite="strict")
    return response
