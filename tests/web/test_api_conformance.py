"""The HTTP API against SPEC section 5 ("HTTP API") and 6 (bad input), on both backends: each test
is one discrepancy an audit found by driving a real app over a real database."""

from __future__ import annotations

import json

import httpx
import pytest

import cairn
from cairn import workflow
from cairn.web import create_app
from tests.conftest import eventually
from tests.web import webflows

pytestmark = pytest.mark.timeout(60)

QUICK = "tests.web.webflows.quick"
GREETING = "tests.web.webflows.Greeting"
JSON_HEADERS = {"content-type": "application/json"}


@workflow
async def no_input() -> str:
    return "done"


async def _total_runs(client: cairn.Client) -> int:
    return sum((await client.count_runs()).values())


@pytest.mark.parametrize("host", ["test", "testserver", "test:8000"])
async def test_a_tokenless_app_answers_an_in_process_test_client(client: cairn.Client, host: str) -> None:
    """`create_app(client)` driven as FastAPI's and Starlette's docs drive an app (base_url
    http://test, TestClient's http://testserver) was refused with 403 on every route."""
    transport = httpx.ASGITransport(app=create_app(client))
    async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as h:
        assert (await h.get("/api/runs")).status_code == 200
        started = await h.post(f"/api/workflows/{QUICK}/runs", json={"args": ["ada"], "id": "t-1"})
        assert started.status_code == 201, started.text


async def test_a_tokenless_app_still_refuses_what_dns_rebinding_sends(client: cairn.Client) -> None:
    """A rebinding page has a public, dotted name, and its requests come from a browser."""
    transport = httpx.ASGITransport(app=create_app(client))
    for host, headers in [
        ("evil.example", {}),
        ("10.0.0.7:8700", {}),
        ("[fe80::1]:8700", {}),
        ("intranet", {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}),
    ]:
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as h:
            r = await h.get("/api/runs", headers=headers)
            assert r.status_code == 403 and r.json()["error"] == "forbidden", host


async def test_with_a_token_a_page_answers_an_api_client_401(authed: httpx.AsyncClient) -> None:
    """SPEC: the token is needed on every route but /healthz; a client that is not a browser
    navigating got a 303 to the login form from the pages, not a 401 with a JSON error."""
    for path in ("/", "/workflows", "/workers", "/runs/x"):
        r = await authed.get(path)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized", path
        assert r.headers["www-authenticate"] == "Bearer"
        browser = await authed.get(path, headers={"Accept": "text/html,*/*;q=0.8"})
        assert browser.status_code == 303 and browser.headers["location"].startswith("/login?next="), path


@pytest.mark.usefixtures("worker")
async def test_a_run_has_its_output_and_timings(http: httpx.AsyncClient) -> None:
    """SPEC: GET /api/runs/{id} gives "status, input, output, error, timings"; it had no `output`."""
    started = await http.post(f"/api/workflows/{QUICK}/runs?wait=20", json={"args": ["ada"], "id": "o-1"})
    assert started.status_code == 201 and started.json()["output"] == "hello ada"
    run = (await http.get("/api/runs/o-1")).json()
    assert run["status"] == "completed" and run["input"] == {"name": "ada"}
    assert run["output"] == run["result"] == "hello ada" and run["error"] is None
    timings = run["timings"]
    assert set(timings) == {"created_at", "started_at", "completed_at", "updated_at", "duration"}
    assert timings["created_at"] <= timings["started_at"] <= timings["completed_at"]
    assert timings["duration"] == run["duration"] >= 0
    assert (await http.get("/api/runs/o-1/result")).json()["output"] == "hello ada"


async def test_a_run_not_finished_has_no_output_yet(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.start(webflows.Greeting, "x", id="o-2")
    run = (await http.get("/api/runs/o-2")).json()
    assert run["output"] is None and run["timings"]["completed_at"] is None


@pytest.mark.usefixtures("worker")
@pytest.mark.parametrize("from_step", ["1", 1.0, True, "0"])
async def test_fork_from_step_must_be_an_integer(
    http: httpx.AsyncClient, client: cairn.Client, from_step: object
) -> None:
    """A string, a float or a boolean for `from_step` was coerced and a fork started."""
    assert await client.run(webflows.quick, "a", id="src-1", timeout=20) == "hello a"
    r = await http.post("/api/runs/src-1/fork", json={"from_step": from_step})
    assert r.status_code == 422 and r.json()["error"] == "invalid", r.text
    assert "from_step" in r.json()["message"] and "integer" in r.json()["message"]
    assert await _total_runs(client) == 1  # nothing was started
    forked = await http.post("/api/runs/src-1/fork", json={"from_step": 1})
    assert forked.status_code == 201, forked.text


async def test_a_start_needs_no_body_when_the_workflow_takes_no_arguments(
    http: httpx.AsyncClient, client: cairn.Client
) -> None:
    """POST /api/workflows/{name}/runs with no body was a 422 ("body: Field required")."""
    assert no_input  # registered here
    r = await http.post(f"/api/workflows/{__name__}.no_input/runs")
    assert r.status_code == 201 and r.json()["status"] == "pending", r.text
    missing = await http.post(f"/api/workflows/{QUICK}/runs")
    assert missing.status_code == 422 and "name" in missing.json()["message"]
    assert await _total_runs(client) == 1


@pytest.mark.usefixtures("worker")
async def test_a_lone_surrogate_round_trips_exactly(http: httpx.AsyncClient) -> None:
    """JSON may escape a lone surrogate ("\\ud800"); Python and both stores keep it, but the API
    could not write it back as UTF-8: the start with ?wait= answered 422 after the run was made,
    and the run, its result and its page stayed unreadable (422) for good."""
    body = b'{"args": ["\\ud800x"], "id": "sur-1"}'
    started = await http.post(f"/api/workflows/{QUICK}/runs?wait=20", content=body, headers=JSON_HEADERS)
    assert started.status_code == 201, started.text
    assert json.loads(started.content)["result"] == "hello \ud800x"
    run = await http.get("/api/runs/sur-1")
    assert run.status_code == 200 and json.loads(run.content)["input"] == {"name": "\ud800x"}
    steps = await http.get("/api/runs/sur-1/steps")
    assert steps.status_code == 200 and json.loads(steps.content)[0]["args"] == {"name": "\ud800x"}
    page = await http.get("/runs/sur-1")
    assert page.status_code == 200 and "hello \ufffdx" in page.text


@pytest.mark.usefixtures("worker")
async def test_a_signal_payload_with_a_lone_surrogate_round_trips(http: httpx.AsyncClient) -> None:
    started = await http.post(f"/api/workflows/{GREETING}/runs", json={"args": ["ada"], "id": "sur-2"})
    assert started.status_code == 201

    async def waiting() -> bool:
        return bool((await http.get("/api/runs/sur-2")).json()["status"] == "waiting")

    await eventually(waiting, what="the run to wait for its signal")
    sent = await http.post("/api/runs/sur-2/signals/approve", content=b'"\\udc00"', headers=JSON_HEADERS)
    assert sent.status_code == 200, sent.text
    done = await http.get("/api/runs/sur-2/result", params={"wait": 20})
    assert done.status_code == 200 and json.loads(done.content)["result"] == "hello ada / \udc00"
