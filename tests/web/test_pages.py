"""The dashboard's pages over HTTP on both backends: what each shows, and what it shows when input
is wrong (the browser tests drive the same pages in Chromium)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import httpx
import pytest

import cairn
from cairn import RunStatus
from cairn.web import views
from tests import control_flows as cf
from tests.conftest import eventually
from tests.web import webflows

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def versioned() -> Iterator[None]:
    cf.make_versioned(1)
    yield
    cf.make_versioned(1)


async def _is(handle: cairn.RunHandle, status: RunStatus) -> bool:
    return await handle.status() == status


async def _past_step_3(handle: cairn.RunHandle) -> bool:
    return len(await handle.steps()) >= 4


@pytest.mark.usefixtures("versioned", "worker")
async def test_a_run_paused_on_divergence_shows_both_calls(http: httpx.AsyncClient, client: cairn.Client) -> None:
    run = await client.start("tests.versioned", 1, id="diverged")
    await eventually(lambda: _is(run, RunStatus.WAITING), what="waiting for go")
    await run.signal("go")
    await eventually(lambda: _past_step_3(run), what="past the point the new code changes")
    cf.make_versioned(2)  # deployed without a guard
    await run.signal("go2")
    await eventually(lambda: _is(run, RunStatus.PAUSED), what="paused on the divergence")
    page = (await http.get("/runs/diverged")).text
    assert "The code diverged from the journal at step 3" in page
    panel = page.split('class="diverged"')[1].split("</section>")[0]
    recorded, new = panel.split("<h3>New call</h3>")
    assert "tests.flows.add_one" in recorded and "tests.flows.double" in new
    assert 'data-action="resume"' in page and 'data-action="cancel"' in page


@pytest.mark.usefixtures("worker")
async def test_run_page_shows_its_parts(http: httpx.AsyncClient, client: cairn.Client) -> None:
    handle = await client.start(webflows.Greeting, "ada", 2, id="parts")
    await eventually(lambda: _is(handle, RunStatus.WAITING), what="waiting for approve")
    await client.run(webflows.parent, "kid", id="with-child", timeout=20)
    page = (await http.get("/runs/parts")).text
    assert len(re.findall(r'<rect class="bar k-action', page)) == 2
    assert re.search(r'<rect class="bar k-signal st-scheduled"', page)
    assert "Say hello" in page and "Greets someone by name." in page
    assert "INFO greeting ada" in page  # the step's log lines
    assert 'class="ch-changed"' in page and 'class="ch-added"' in page  # properties step by step
    assert "tok-123" not in page and "***" in page  # api_token masked
    assert '<button type="button" data-action="pause" data-run="parts">' in page
    assert 'data-action="resume" data-run="parts" disabled' in page
    parent = (await http.get("/runs/with-child")).text
    child = (await client.get("with-child").children())[0]
    assert f'href="/runs/{child.id.replace(":", "%3A")}"' in parent
    assert "/runs/with-child" in (await http.get(f"/runs/{child.id}")).text


@pytest.mark.usefixtures("worker")
async def test_a_forks_timeline_draws_its_copied_steps_when_they_ran(
    http: httpx.AsyncClient, client: cairn.Client
) -> None:
    """A fork's copied steps keep the times they ran, before the fork was created: the timeline
    starts at the first of them. It started at the fork's creation and moved only their starts up
    to it: every copied step was drawn at 0 with a negative duration ("-5029 ms")."""
    source = await client.start(webflows.naps_then_greets, 0.3, "ada", id="napped")
    await source.result(timeout=20)
    fork = await source.fork(from_step=1, id="napped-fork")  # keeps the nap, greets again
    await fork.result(timeout=20)
    nap, greet = await fork.steps()
    assert nap.completed_at is not None and nap.completed_at < (await fork.describe()).created_at
    page = html.unescape((await http.get("/runs/napped-fork")).text)
    bars = {
        int(seq): (float(x), float(width), title)
        for seq, x, width, title in re.findall(
            r'data-step="(\d+)"><rect class="bar [^"]*" x="([\d.]+)" y="\d+" width="([\d.]+)"[^>]*><title>([^<]*)<',
            page,
        )
    }
    assert bars[1][2] == f"#1 sleep (timer, completed, {views.fmt_duration(nap.completed_at - nap.created_at)})"
    assert bars[1][0] == 0 and bars[greet.seq][0] >= bars[1][1]  # the nap first, the greeting after it ended
    assert not any(re.search(r"[ (]-\d", title) for _, _, title in bars.values())


async def test_runs_page_pages_and_says_what_was_wrong(http: httpx.AsyncClient, client: cairn.Client) -> None:
    for i in range(52):
        await client.start(webflows.quick, f"n{i}", id=f"r-{i:02d}")
    first = (await http.get("/")).text
    assert first.count('class="pick"') == 50 and 'data-count="pending">52<' in first
    next_link = re.search(r'rel="next" href="([^"]+)"', first)
    assert next_link is not None
    second = (await http.get(next_link.group(1).replace("&amp;", "&"))).text
    assert second.count('class="pick"') == 2 and "r-01" in second and "r-00" in second
    wrong = (await http.get("/?status=sleeping&cursor=bogus&since=forever")).text
    assert "unknown status &#39;sleeping&#39;" in wrong and "invalid cursor" in wrong
    assert "unknown time range" in wrong and wrong.count('class="pick"') == 50
    partial = await http.get("/partials/runs?q=r-5")
    assert partial.status_code == 200 and partial.text.count('class="pick"') == 2 and "<html" not in partial.text
    # The count links keep the other filters (they kept only the workflow, and "all" the status).
    filtered = (await http.get("/?status=pending&q=r-5&since=1h")).text
    links = dict(re.findall(r'<a (?:class="s-(\w+)" )?href="/\?([^"]*)"', filtered))
    assert links[""] == "q=r-5&amp;since=1h", links
    assert links["failed"] == "status=failed&amp;q=r-5&amp;since=1h", links


async def test_workflows_workers_queues_and_schedules_pages(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.start(webflows.quick, "x", id="wf-1")
    workflows = (await http.get("/workflows")).text
    form = workflows.split('data-workflow="tests.web.webflows.Greeting"')[1].split("</form>")[0]
    assert 'data-param="name" data-kind="string"' in form and 'data-param="times" data-kind="integer"' in form
    assert 'value="1"' in form  # the default of `times`
    assert "Greets someone, then waits for the" in workflows
    workers = (await http.get("/workers")).text
    assert "No worker has heartbeated" in workers
    # Runs no live worker can serve: checked once the engine's Client.unserved exists (issue 14).
    assert ("Not checked" in workers) != hasattr(client, "unserved")
    queues = (await http.get("/queues")).text
    assert "Not yet available" not in queues and "<td>default</td>" in queues
    assert "No schedules" in (await http.get("/schedules")).text
    missing = await http.get("/runs/nope")
    assert missing.status_code == 404 and "no run with id" in missing.text


async def test_mounted_inside_another_app(client: cairn.Client) -> None:
    """README's example: the app under a prefix of the user's own FastAPI app; links follow it."""
    from fastapi import FastAPI

    from cairn.web import create_app

    outer = FastAPI()
    outer.mount("/cairn", create_app(client))
    await client.start(webflows.quick, "m", id="mounted-1")
    transport = httpx.ASGITransport(app=outer)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as h:
        page = await h.get("/cairn/")
        assert page.status_code == 200
        assert 'href="/cairn/static/app.css"' in page.text and 'href="/cairn/runs/mounted-1"' in page.text
        assert (await h.get("/cairn/static/app.js")).status_code == 200
        assert (await h.get("/cairn/api/runs/mounted-1")).json()["id"] == "mounted-1"
        assert (await h.get("/cairn/runs/mounted-1")).status_code == 200
        assert (await h.get("/cairn/api/openapi.json")).status_code == 200


def test_divergence_is_read_from_the_error_record() -> None:
    from cairn.errors import NonDeterminismError
    from cairn.serialization import error_to_json
    from cairn.web.views import divergence

    record = error_to_json(NonDeterminismError("r", 3, "a(x=1)", "b(x=1)"))
    assert divergence(record) == (3, "a(x=1)", "b(x=1)")
    assert divergence({**record, "args": ["r", 4, "c()", "d()"]}) == (4, "c()", "d()")
    assert divergence({"type": "RuntimeError", "message": "at step 3: ..."}) is None


@pytest.mark.usefixtures("worker")
async def test_the_oldest_snapshot_shown_compares_with_the_one_before_it(
    http: httpx.AsyncClient, client: cairn.Client
) -> None:
    """With more snapshots than the page shows (100), the oldest shown was compared with nothing:
    `i`, set since the first activation, was marked "added" there."""
    handle = await client.start(webflows.Counter, 105)
    assert await handle.result(timeout=60) == 105
    page = await http.get(f"/runs/{handle.id}")
    assert page.status_code == 200
    rows = re.findall(r'<tr class="([^"]*)"><th scope="rowgroup"[^>]*>(\d+)</th><td>i', page.text)
    assert len(rows) == 100, rows[:3]
    assert not any(change == "ch-added" for change, _ in rows), [r for r in rows if r[0] == "ch-added"]
