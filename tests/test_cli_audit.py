"""The `cairn` command line beside the HTTP API, on both backends: each test is one shortfall an
audit found by running the CLI, a worker and `cairn dashboard` on SQLite and PostgreSQL (the fix
lands with it). Where both show a run, they must say the same thing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from click.testing import CliRunner

import cairn
from cairn import Workflow, action, workflow
from cairn.cli.main import cli
from cairn.web import create_app
from tests.conftest import eventually
from tests.helpers import cli_in_thread
from tests.web import webflows

pytestmark = pytest.mark.timeout(60)


@action(name="Remember it", description="Writes the value to the run's memory.")
async def cli_audit_remember(value: str) -> str:
    cairn.memory.add(key="last", value=value)
    return value


@workflow
class CliAuditNotes(Workflow):
    async def run(self, value: str) -> str:
        self.stage = "remembering"
        await cli_audit_remember(value)
        self.stage = "done"
        return value


@pytest.fixture
async def http(client: cairn.Client) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(client))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8700") as h:
        yield h


async def _status(client: cairn.Client, run_id: str, want: str) -> bool:
    return (await client.get(run_id).status()).value == want


def test_an_error_never_prints_a_database_password() -> None:
    """A libpq keyword string given as --db was echoed whole in the error, password included."""
    result = CliRunner().invoke(cli, ["runs", "--db", "host=127.0.0.1 password=Sekr1tPw dbname=x"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: not a database URL")
    assert "sekr1tpw" not in result.output.lower() and "password=***" in result.stderr


@pytest.mark.usefixtures("worker")
async def test_show_of_a_timer_due_beyond_the_calendar(client: cairn.Client, http: httpx.AsyncClient) -> None:
    """`await asyncio.sleep(1e300)`: `cairn show` died with an OverflowError traceback."""
    await client.start(webflows.sleeps, 1e300, id="far-1")
    await eventually(lambda: _status(client, "far-1", "waiting"), what="the run to sleep")
    shown = await cli_in_thread(["show", "far-1", "--db", client.url])
    assert shown.exit_code == 0, shown.output
    assert "due epoch 1e+300s (beyond the calendar)" in shown.stdout
    as_json = await cli_in_thread(["show", "far-1", "--json", "--db", client.url])
    api = (await http.get("/api/runs/far-1/steps")).json()
    assert (
        [s["due_at"] for s in json.loads(as_json.stdout)["steps"]]
        == [s["due_at"] for s in api]
        == [pytest.approx(1e300)]
    )


@pytest.mark.usefixtures("worker")
async def test_show_json_has_what_its_flags_add_as_the_api_gives_it(
    client: cairn.Client, http: httpx.AsyncClient
) -> None:
    """`cairn show RUN --json --events --properties` printed neither the events nor the
    properties; the CLI could not show a run's memory at all (the API and the page do)."""
    await client.run(CliAuditNotes, "kept", id="notes-1", timeout=20)
    args = ["show", "notes-1", "--db", client.url]
    shown = json.loads((await cli_in_thread([*args, "--json", "--events", "--properties", "--memory"])).stdout)
    assert shown["events"] == (await http.get("/api/runs/notes-1/events")).json()
    assert shown["properties_history"] == (await http.get("/api/runs/notes-1/properties?history=true")).json()
    assert shown["memory"] == (await http.get("/api/runs/notes-1/memory")).json() == {"last": "kept"}
    plain = json.loads((await cli_in_thread([*args, "--json"])).stdout)
    assert not {"events", "properties_history", "memory"} & set(plain)
    table = await cli_in_thread([*args, "--memory"])
    assert table.exit_code == 0 and "Memory" in table.stdout and '"kept"' in table.stdout
    empty = await client.start(webflows.sleeps, 3600, id="nomem-1")
    await eventually(lambda: _status(client, empty.id, "waiting"), what="the run to sleep")
    assert "no memory written" in (await cli_in_thread(["show", "nomem-1", "--memory", "--db", client.url])).stdout


async def test_queues_lists_the_queues_runs_use_as_the_api_does(client: cairn.Client, http: httpx.AsyncClient) -> None:
    """`cairn queues` said "no queues declared" while `GET /api/queues` and the dashboard listed
    `default` with its runs: it listed only queues a cairn.Queue declares."""
    await client.start(webflows.sleeps, 1, id="q-1")
    await client.start(webflows.sleeps, 1, id="q-2", queue="reports")
    listed = await cli_in_thread(["queues", "--json", "--db", client.url])
    assert listed.exit_code == 0, listed.output
    rows = {q["name"]: q for q in json.loads(listed.stdout)}
    api = {q["name"]: q for q in (await http.get("/api/queues")).json()["queues"]}
    assert set(rows) == set(api) == {"default", "reports"}
    assert rows["default"]["counts"] == api["default"]["counts"] == {"pending": 1}
    assert rows["reports"]["concurrency"] is None and rows["reports"]["declared_by"] is None
    table = await cli_in_thread(["queues", "--db", client.url])
    assert "reports" in table.stdout and "none (not declared)" in table.stdout and "pending 1" in table.stdout


@pytest.mark.usefixtures("worker")
async def test_a_run_paused_on_an_error_says_so_in_every_view(client: cairn.Client, http: httpx.AsyncClient) -> None:
    """The dashboard shows `paused (error)`; `cairn runs` showed `paused` alone, `cairn runs --json`
    had no pause reason, and `cairn result` said only "did not finish (status: paused)"."""
    await client.start(webflows.pauses_on_error, "kaput", id="pz-1")
    await client.start(webflows.sleeps, 3600, id="pz-2")
    await eventually(lambda: _status(client, "pz-1", "paused"), what="the run to pause on its error")
    await eventually(lambda: _status(client, "pz-2", "waiting"), what="the run to sleep")
    await client.get("pz-2").pause()
    listed = {r["id"]: r for r in json.loads((await cli_in_thread(["runs", "--json", "--db", client.url])).stdout)}
    api = {r["id"]: r for r in (await http.get("/api/runs")).json()["runs"]}
    assert listed["pz-1"]["pause_reason"] == api["pz-1"]["pause_reason"] == "error"
    assert listed["pz-2"]["pause_reason"] == api["pz-2"]["pause_reason"] == "user"
    table = (await cli_in_thread(["runs", "--db", client.url])).stdout
    line = {row.split()[0]: row for row in table.splitlines() if row.startswith("pz-")}
    assert "paused (error)" in line["pz-1"] and "(user)" not in line["pz-2"] and "paused" in line["pz-2"]
    result = await cli_in_thread(["result", "pz-1", "--db", client.url])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: run pz-1 did not finish (status: paused)",
        "it is paused on RuntimeError: step 1 (tests.web.webflows.boom) failed: kaput; after a fix: cairn retry pz-1",
    ]
    user = await cli_in_thread(["result", "pz-2", "--db", client.url])
    assert user.stderr.splitlines() == ["error: run pz-2 did not finish (status: paused)"]
