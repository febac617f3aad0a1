"""The HTTP API, route by route, on both backends: happy paths and every error status SPEC names."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

import cairn
from cairn.web import create_app
from cairn.web.models import ID_MAX
from tests.conftest import eventually
from tests.helpers import sql_row
from tests.web import webflows
from tests.web.conftest import TOKEN

pytestmark = pytest.mark.timeout(60)

GREETING = "tests.web.webflows.Greeting"
QUICK = "tests.web.webflows.quick"
DEEP = "tests.web.webflows.takes_anything"


async def _status(http: httpx.AsyncClient, run_id: str, want: str) -> bool:
    r = await http.get(f"/api/runs/{run_id}")
    return r.status_code == 200 and r.json()["status"] == want


async def test_healthz_names_only_the_kind_of_database(http: httpx.AsyncClient, client: cairn.Client) -> None:
    r = await http.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "database": client.url.split(":")[0]}


@pytest.mark.timeout(60)
async def test_healthz_answers_503_at_once_when_the_database_does_not_answer() -> None:
    """It waited for the store's retries (about a minute): a probe timed out instead of hearing
    "unavailable". A server that accepts connections and never answers, as a hung one does."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    client = cairn.Client(f"postgresql://cairn@127.0.0.1:{silent.getsockname()[1]}/nothing")
    try:
        transport = httpx.ASGITransport(app=create_app(client))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8700") as http:
            began = time.monotonic()
            r = await http.get("/healthz")
            took = time.monotonic() - began
    finally:
        silent.close()
        with contextlib.suppress(Exception):
            await client.close()
    assert r.status_code == 503 and r.json() == {
        "error": "unavailable",
        "message": "database unreachable: no answer within 3s",
    }, r.text
    assert took < 10, f"healthz took {took:.1f}s"


async def test_a_database_that_stays_locked_is_a_503_that_says_so(tmp_path: Path) -> None:
    """DatabaseLocked (another process holding SQLite's write lock past the busy timeout) was a 500
    "internal error (DatabaseLocked)", saying nothing of what to do."""
    path = tmp_path / "locked.db"
    client = cairn.Client(f"sqlite:///{path}?busy_timeout=0.3")
    await client.store.open()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        transport = httpx.ASGITransport(app=create_app(client))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8700") as http:
            r = await http.post(f"/api/workflows/{GREETING}/runs", json={"args": ["x"]})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await client.close()
    assert r.status_code == 503 and r.json()["error"] == "unavailable", r.text
    assert "is locked" in r.json()["message"] and "busy_timeout" in r.json()["message"], r.text


async def test_workflows_have_description_schema_and_counts(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.start(webflows.quick, "a", id="q-1")
    found = {w["name"]: w for w in (await http.get("/api/workflows")).json()}
    greeting = found[GREETING]
    assert greeting["description"] == "Greets someone, then waits for the `approve` signal."
    assert greeting["input_schema"]["required"] == ["name"]
    assert set(greeting["input_schema"]["properties"]) == {"name", "times"}
    assert found[QUICK]["counts"] == {"pending": 1}
    assert found[QUICK]["registered_here"] is True


@pytest.mark.usefixtures("worker")
async def test_a_workflow_is_an_endpoint(http: httpx.AsyncClient) -> None:
    r = await http.post(f"/api/workflows/{QUICK}/runs?wait=20", json={"args": ["ada"], "id": "ep-1"})
    assert r.status_code == 201, r.text
    assert r.json() == {
        "id": "ep-1",
        "status": "completed",
        "created": True,
        "done": True,
        "result": "hello ada",
        "output": "hello ada",
        "error": None,
    }
    again = await http.post(f"/api/workflows/{QUICK}/runs", json={"args": ["bob"], "id": "ep-1"})
    assert again.status_code == 200
    assert again.json()["created"] is False and again.json()["result"] == "hello ada"
    started = await http.post(f"/api/workflows/{GREETING}/runs", json={"kwargs": {"name": "cy", "times": 2}})
    assert started.status_code == 201
    assert started.json()["done"] is False and started.json()["id"]


@pytest.mark.usefixtures("worker")
async def test_wait_returns_the_error_of_a_failed_run(http: httpx.AsyncClient) -> None:
    r = await http.post("/api/workflows/tests.web.webflows.broken/runs?wait=20", json={"args": ["kaput"]})
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "failed" and body["done"] is True
    assert body["error"]["type"] == "RuntimeError" and body["error"]["message"] == "kaput"


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        (f"/api/workflows/{QUICK}/runs", {"args": [1]}, 422, "invalid"),  # wrong type for name: str
        (f"/api/workflows/{QUICK}/runs", {"args": ["a", "b"]}, 422, "invalid"),  # too many arguments
        (f"/api/workflows/{QUICK}/runs", {"kwargs": {"nope": 1}}, 422, "invalid"),
        (f"/api/workflows/{QUICK}/runs", {"args": ["a"], "surprise": 1}, 422, "invalid"),
        (f"/api/workflows/{QUICK}/runs", {"args": ["a"], "id": "x" * (ID_MAX + 1)}, 422, "invalid"),
        # Strings a float would take in lax validation, as no step of the run could record them:
        ("/api/workflows/tests.web.webflows.sleeps/runs", {"args": ["NaN"]}, 422, "invalid"),
        ("/api/workflows/tests.web.webflows.sleeps/runs", {"kwargs": {"seconds": "-Infinity"}}, 422, "invalid"),
        (f"/api/workflows/{QUICK}/runs", {"args": ["a\x00b"]}, 201, None),  # NUL round-trips
        ("/api/workflows/no.such.Workflow/runs", {"args": []}, 404, "not_found"),
    ],
)
async def test_start_refuses_bad_input_before_writing(
    http: httpx.AsyncClient, client: cairn.Client, path: str, body: dict[str, object], status: int, code: str | None
) -> None:
    r = await http.post(path, json=body)
    assert r.status_code == status, r.text
    if code is not None:
        assert r.json()["error"] == code and r.json()["message"]
        assert (await client.count_runs()) == dict.fromkeys(s.value for s in cairn.RunStatus) | {
            s.value: 0 for s in cairn.RunStatus
        }


async def test_a_start_takes_its_place_in_its_queue(http: httpx.AsyncClient, client: cairn.Client) -> None:
    """What `client.start` takes for queues, the endpoint takes too: a key, a priority (refused,
    writing nothing, where the queue does not rank), and a dedup_key that returns the unfinished run."""
    from tests import queueflows as qf

    def path(flow: str) -> str:
        assert hasattr(qf, flow)  # imported, so registered in this process
        return f"/api/workflows/tests.queueflows.{flow}/runs"

    ranked = await http.post(path("ranked"), json={"args": ["a"], "priority": 3, "key": "tenant-1"})
    assert ranked.status_code == 201, ranked.text
    stored = sql_row(client.url, "SELECT queue, priority, queue_key FROM cairn_runs WHERE id = ?", ranked.json()["id"])
    assert stored == ("q-ranked", -3, "tenant-1")  # stored negated: claims take the highest first
    refused = await http.post(path("serial"), json={"args": ["b"], "priority": 1})
    assert refused.status_code == 422 and "does not take priorities" in refused.json()["message"]
    for bad in ({"priority": "1"}, {"priority": 2**31}, {"key": ""}, {"dedup_key": "a\x00b"}):
        r = await http.post(path("gated"), json={"args": ["c"], **bad})
        assert r.status_code == 422 and r.json()["error"] == "invalid", (bad, r.text)
    assert len(await client.list_runs()) == 1  # only the ranked run was written
    first = await http.post(path("gated"), json={"args": ["d"], "dedup_key": "order-1"})
    again = await http.post(path("gated"), json={"args": ["e"], "dedup_key": "order-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["created"] is False


async def test_malformed_oversized_and_deep_bodies_are_4xx(http: httpx.AsyncClient) -> None:
    url = f"/api/workflows/{QUICK}/runs"
    headers = {"content-type": "application/json"}
    bad = await http.post(url, content=b'{"args": [', headers=headers)
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"  # not JSON at all
    big = await http.post(url, content=b'{"args": ["' + b"x" * (2 * 1024 * 1024) + b'"]}', headers=headers)
    assert big.status_code == 413 and big.json()["error"] == "payload_too_large"
    # A payload nests as deeply over HTTP as from Python (Cairn's limit, 128), and no deeper.
    quick_deep = f"/api/workflows/{DEEP}/runs"
    at_limit = await http.post(quick_deep, content=b'{"args": [' + b"[" * 128 + b"]" * 128 + b"]}", headers=headers)
    assert at_limit.status_code == 201, at_limit.text
    deep = await http.post(quick_deep, content=b'{"args": [' + b"[" * 129 + b"]" * 129 + b"]}", headers=headers)
    assert deep.status_code == 422 and deep.json()["error"] == "too_deep"
    assert "128" in deep.json()["message"]
    deeper = await http.post(url, content=b"[" * 100_000 + b"]" * 100_000, headers=headers)
    assert deeper.status_code in (413, 422)
    nan = await http.post(url, content=b'{"args": [NaN]}', headers=headers)
    assert nan.status_code == 422


async def _make_runs(client: cairn.Client, n: int) -> list[str]:
    ids = []
    for i in range(n):
        handle = await client.start(webflows.quick, f"n{i}", id=f"page-{i:02d}")
        ids.append(handle.id)
    await client.start(webflows.Greeting, "g", id="other-1")
    return ids


async def test_runs_page_by_cursor_through_every_run(http: httpx.AsyncClient, client: cairn.Client) -> None:
    ids = await _make_runs(client, 7)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        params: dict[str, str | int] = {"limit": 3, "workflow": QUICK}
        if cursor:
            params["cursor"] = cursor
        page = (await http.get("/api/runs", params=params)).json()
        seen += [r["id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))  # newest first, each run once
    oldest = (await http.get("/api/runs", params={"sort": "created_at", "limit": 2})).json()
    assert [r["id"] for r in oldest["runs"]] == ids[:2]


async def test_runs_filters_and_counts(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await _make_runs(client, 3)
    await client.get("page-01").cancel()
    by_prefix = (await http.get("/api/runs", params={"id_prefix": "oth"})).json()
    assert [r["id"] for r in by_prefix["runs"]] == ["other-1"]
    cancelled = (await http.get("/api/runs", params={"status": "cancelled", "counts": "true"})).json()
    assert [r["id"] for r in cancelled["runs"]] == ["page-01"]
    assert cancelled["counts"]["cancelled"] == 1 and cancelled["counts"]["pending"] == 3
    created = [r["created_at"] for r in (await http.get("/api/runs", params={"sort": "created_at"})).json()["runs"]]
    window = (await http.get("/api/runs", params={"since": created[1], "until": created[3]})).json()
    assert len(window["runs"]) == 2
    assert (await http.get("/api/runs", params={"since": created[-1] + 1000})).json()["runs"] == []
    # A workflow by its short name: the counts are of the runs listed, not of a name nothing matches.
    greetings = (await http.get("/api/runs", params={"workflow": "Greeting", "counts": "true"})).json()
    assert [r["id"] for r in greetings["runs"]] == ["other-1"]
    assert greetings["counts"]["pending"] == 1 and sum(greetings["counts"].values()) == 1
    # The counts are of every filter of the listing but the status (they counted all runs, or only
    # those of the workflow, whatever the id prefix and the window said): the page's counts too.
    prefixed = (await http.get("/api/runs", params={"id_prefix": "page-", "counts": "true"})).json()
    assert prefixed["counts"]["pending"] == 2 and prefixed["counts"]["cancelled"] == 1
    assert sum(prefixed["counts"].values()) == 3
    windowed = (await http.get("/api/runs", params={"since": created[1], "until": created[3], "counts": "true"})).json()
    assert sum(windowed["counts"].values()) == 2
    page = await http.get("/", params={"q": "oth"})
    assert "all <b>1</b>" in page.text and 'data-count="pending">1<' in page.text


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 501},
        {"limit": 0},
        {"status": "sleeping"},
        {"sort": "lease_owner"},
        {"sort": "created_at; DROP TABLE cairn_runs"},
        {"cursor": "not-a-cursor"},
        {"cursor": "W10"},
        {"id_prefix": "x" * (ID_MAX + 1)},
        {"since": "yesterday"},
        {"since": "nan"},
    ],
)
async def test_runs_refuses_bad_parameters(http: httpx.AsyncClient, params: dict[str, object]) -> None:
    r = await http.get("/api/runs", params=params)  # type: ignore[arg-type]
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "invalid"


def _crafted_cursor(created_at: object) -> str:
    raw = json.dumps([1, "-created_at", created_at, "x"]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "created_at", [10**400, -(10**400), 1e308, "1", None, True], ids=["huge", "-huge", "1e308", "text", "null", "bool"]
)
async def test_a_crafted_cursor_is_refused_by_the_api_and_ignored_by_the_pages(
    http: httpx.AsyncClient, client: cairn.Client, created_at: object
) -> None:
    """A cursor of the right shape holding an integer too big for a float answered 500 (an
    OverflowError) on the API and on both pages that list runs."""
    await _make_runs(client, 2)
    cursor = _crafted_cursor(created_at)
    r = await http.get("/api/runs", params={"cursor": cursor})
    if created_at == 1e308:  # newest first from a time after every run's: all of them
        assert r.status_code == 200 and len(r.json()["runs"]) == 3, r.text
    else:
        assert r.status_code == 422 and r.json()["error"] == "invalid", r.text
        assert "invalid cursor" in r.json()["message"]
    for page in ("/", "/partials/runs"):
        shown = await http.get(page, params={"cursor": cursor})
        assert shown.status_code == 200, (page, shown.text[:300])


async def test_a_cursor_of_another_sort_is_refused(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await _make_runs(client, 3)
    cursor = (await http.get("/api/runs", params={"limit": 1})).json()["next_cursor"]
    r = await http.get("/api/runs", params={"limit": 1, "cursor": cursor, "sort": "created_at"})
    assert r.status_code == 422 and "sort" in r.json()["message"]


@pytest.mark.usefixtures("worker")
async def test_a_run_and_everything_under_it(http: httpx.AsyncClient, client: cairn.Client) -> None:
    r = await http.post(f"/api/workflows/{GREETING}/runs", json={"args": ["ada"], "kwargs": {"times": 2}, "id": "g/1"})
    assert r.status_code == 201
    await eventually(lambda: _status(http, "g/1", "waiting"), what="the run to wait for its signal")
    run = (await http.get("/api/runs/g/1")).json()
    assert run["workflow"] == GREETING and run["input"] == {"name": "ada", "times": 2}
    assert run["properties"]["stage"] == "waiting" and run["children"] == []
    steps = (await http.get("/api/runs/g/1/steps")).json()
    hello = [s for s in steps if s["kind"] == "action"]
    assert [s["title"] for s in hello] == ["Say hello", "Say hello"]
    assert hello[0]["description"] == "Greets someone by name." and hello[0]["result"] == "hello ada"
    assert steps[-1]["kind"] == "signal" and steps[-1]["status"] == "scheduled"
    history = (await http.get("/api/runs/g/1/properties", params={"history": "true"})).json()
    assert [h["properties"]["stage"] for h in history][-1] == "waiting"
    assert (await http.get("/api/runs/g/1/properties")).json()["stage"] == "waiting"
    assert (await http.get("/api/runs/g/1/memory")).json() == {}
    logs = (await http.get("/api/runs/g/1/logs")).json()
    assert [entry["line"] for entry in logs] == ["INFO greeting ada", "INFO greeting ada"]
    by_step = [(s["seq"], s["name"], line) for s in steps for line in s["logs"]]  # as the steps carry them
    assert [(e["seq"], e["name"], e["line"]) for e in logs] == by_step == await client.get("g/1").logs()
    kinds = [e["kind"] for e in (await http.get("/api/runs/g/1/events")).json()]
    assert kinds[0] == "started" or "started" in kinds
    pending = (await http.get("/api/runs/g/1/result")).json()
    assert pending["done"] is False and pending["status"] == "waiting"
    sent = await http.post("/api/runs/g/1/signals/approve", json={"by": "alice"})
    assert sent.status_code == 200 and sent.json() == {"id": "g/1", "name": "approve", "sent": True}
    done = (await http.get("/api/runs/g/1/result", params={"wait": 20})).json()
    assert done["done"] is True and done["result"] == "hello ada / {'by': 'alice'}"


@pytest.mark.parametrize("sub", ["", "/steps", "/properties", "/memory", "/events", "/logs", "/result"])
async def test_reads_of_an_unknown_run_are_404(http: httpx.AsyncClient, client: cairn.Client, sub: str) -> None:
    r = await http.get(f"/api/runs/missing{sub}")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert "no run with id 'missing'" in r.text
    database = client.url.split("://", 1)[1].split("@")[-1].split("?")[0]  # a path or host/dbname
    assert database not in r.text and client.url not in r.text  # the server's database is its own


@pytest.mark.parametrize("op", ["pause", "resume", "cancel", "kill", "retry", "signals/hello", "fork"])
async def test_control_of_an_unknown_run_is_404(http: httpx.AsyncClient, op: str) -> None:
    r = await http.post(f"/api/runs/missing/{op}", json={"from_step": 0} if op == "fork" else None)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


async def test_control_follows_the_state_machine(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.start(webflows.Greeting, "p", id="c-1")
    assert (await http.post("/api/runs/c-1/pause")).json() == {"id": "c-1", "status": "paused"}
    assert (await http.post("/api/runs/c-1/pause")).json()["status"] == "paused"  # idempotent
    assert (await http.post("/api/runs/c-1/resume")).json()["status"] in ("pending", "running")
    assert (await http.post("/api/runs/c-1/kill")).json()["status"] == "cancelled"  # cancel's other name
    assert (await http.post("/api/runs/c-1/cancel")).json()["status"] == "cancelled"
    for op in ("resume", "pause", "retry"):
        r = await http.post(f"/api/runs/c-1/{op}")
        assert r.status_code == 409, (op, r.text)
        assert r.json()["error"] == "conflict" and "cancelled" in r.json()["message"]


async def test_a_signal_to_a_finished_run_is_409_and_resume_of_a_live_one_changes_nothing(
    http: httpx.AsyncClient, client: cairn.Client
) -> None:
    await client.start(webflows.Greeting, "p", id="c-2")
    r = await http.post("/api/runs/c-2/resume")
    assert r.status_code == 200 and r.json()["status"] == "pending"  # idempotent, as a second pause is
    await client.get("c-2").cancel()
    r = await http.post("/api/runs/c-2/signals/approve", json={"by": "late"})
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    assert r.json()["message"].startswith("cannot signal run 'c-2': it is cancelled; a finished run takes no signals")
    assert "signal.received" not in [e["kind"] for e in (await http.get("/api/runs/c-2/events")).json()]


@pytest.mark.usefixtures("worker")
async def test_fork_and_children(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.run(webflows.parent, "kid", id="parent-1", timeout=20)
    run = (await http.get("/api/runs/parent-1")).json()
    assert [c["workflow"] for c in run["children"]] == [QUICK]
    child = (await http.get(f"/api/runs/{run['children'][0]['id']}")).json()
    assert child["parent_id"] == "parent-1"
    forked = await http.post("/api/runs/parent-1/fork", json={"from_step": 0, "id": "parent-1-fork"})
    assert forked.status_code == 201 and forked.json()["id"] == "parent-1-fork"
    bad = await http.post("/api/runs/parent-1/fork", json={"from_step": -1})
    assert bad.status_code == 422
    taken = await http.post("/api/runs/parent-1/fork", json={"from_step": 0, "id": "parent-1-fork"})
    assert taken.status_code == 409 and "already exists" in taken.json()["message"], taken.text


async def test_signal_payloads_any_json_or_none(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.start(webflows.Greeting, "s", id="s-1")
    assert (await http.post("/api/runs/s-1/signals/approve")).status_code == 200
    assert (await http.post("/api/runs/s-1/signals/approve", json=[1, "two", None])).status_code == 200
    raw = await http.post(
        "/api/runs/s-1/signals/approve", content=b"{oops", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400 and raw.json()["error"] == "bad_request"


@pytest.mark.usefixtures("worker")
async def test_workers_queues_and_schedules(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.start(webflows.Greeting, "w", id="w-1")

    async def listed() -> list[dict[str, object]]:
        return [w for w in (await http.get("/api/workers")).json()["workers"] if w["alive"]]

    workers = await eventually(listed, what="the worker's first heartbeat")
    assert workers[0]["pid"] > 0 and workers[0]["heartbeat_age"] >= 0
    queues = (await http.get("/api/queues")).json()
    assert queues["queues"][0]["name"] == "default" and queues["queues"][0]["concurrency"] is None
    assert (await http.get("/api/schedules")).json() == {"schedules": []}
    nightly = cairn.Schedule(
        "nightly", webflows.quick, cron="0 2 * * *", tz="Europe/Paris", args=("n",), register=False
    )
    await client.create_schedule(nightly)
    (listed_schedule,) = (await http.get("/api/schedules")).json()["schedules"]
    assert listed_schedule["id"] == "nightly" and listed_schedule["expression"] == "0 2 * * *"
    assert listed_schedule["declared"] is True and listed_schedule["next_fire_at"] > 0


async def test_unknown_routes_and_methods_answer_json(http: httpx.AsyncClient) -> None:
    r = await http.get("/api/nothing-here")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await http.delete("/api/runs")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


async def test_an_id_of_another_workflow(http: httpx.AsyncClient, client: cairn.Client) -> None:
    """SPEC 3: an id held by another workflow's run is a RunIdConflict (409). Until the engine
    defines that error, the existing run is returned (200) and `created` says nothing started."""
    await client.start(webflows.quick, "a", id="shared")
    r = await http.post(f"/api/workflows/{GREETING}/runs", json={"args": ["b"], "id": "shared"})
    if getattr(cairn.errors, "RunIdConflict", None) is not None:
        assert r.status_code == 409 and r.json()["error"] == "conflict"
    else:
        assert r.status_code == 200 and r.json()["created"] is False


async def test_openapi_document_lists_every_route(http: httpx.AsyncClient) -> None:
    doc = (await http.get("/api/openapi.json")).json()
    paths = set(doc["paths"])
    for path in [
        "/api/workflows",
        "/api/workflows/{name}/runs",
        "/api/runs",
        "/api/runs/{run_id}",
        "/api/runs/{run_id}/steps",
        "/api/runs/{run_id}/properties",
        "/api/runs/{run_id}/memory",
        "/api/runs/{run_id}/events",
        "/api/runs/{run_id}/logs",
        "/api/runs/{run_id}/result",
        "/api/runs/{run_id}/pause",
        "/api/runs/{run_id}/resume",
        "/api/runs/{run_id}/cancel",
        "/api/runs/{run_id}/retry",
        "/api/runs/{run_id}/signals/{name}",
        "/api/runs/{run_id}/fork",
        "/api/workers",
        "/api/queues",
        "/api/schedules",
        "/healthz",
    ]:
        assert path in paths, path
    docs = await http.get("/api/docs")
    assert docs.status_code == 200 and "swagger-ui-bundle.js" in docs.text
    assert json.dumps(doc)  # serialisable as served


async def test_the_openapi_document_says_which_operations_take_the_token(
    http: httpx.AsyncClient, authed: httpx.AsyncClient
) -> None:
    """With a token, every operation but /healthz declares the bearer scheme (generated clients send
    it; /api/docs offers to authorize); without one, none does."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    doc = (await authed.get("/api/openapi.json", headers=headers)).json()
    assert doc["components"]["securitySchemes"]["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The API token (CAIRN_API_TOKEN).",
    }
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            want = None if path == "/healthz" else [{"token": []}]
            assert operation.get("security") == want, (method, path)
    plain = (await http.get("/api/openapi.json")).json()
    assert "securitySchemes" not in plain.get("components", {})
    assert not any("security" in op for ops in plain["paths"].values() for op in ops.values())


async def test_nul_bytes_are_refused_where_text_cannot_hold_them(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/runs/a%00b")).status_code == 400
    assert (await http.post("/api/runs/a%00b/signals/go")).status_code == 400
    assert (await http.get("/api/runs", params={"workflow": "a\x00"})).status_code == 400
    start = await http.post(f"/api/workflows/{QUICK}/runs", json={"args": ["a"], "queue": "q\x00"})
    assert start.status_code == 422
    fork = await http.post("/api/runs/x/fork", json={"from_step": 0, "id": "f\x00"})
    assert fork.status_code == 422
