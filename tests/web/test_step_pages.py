"""A long run's steps a page at a time, on both backends: `handle.steps(after=, limit=)` and
`steps(last=)`, `GET /api/runs/{id}/steps?after=&limit=` (a full page links the next one) and
`?last=`, and `cairn show`, which lists a run's latest steps (all of a 10,000-step run took 6 s to
draw). Every page agrees with the whole journal; a bad bound is refused by name and reads nothing."""

from __future__ import annotations

import json
import re

import httpx
import pytest

import cairn
from tests.helpers import cli_in_thread
from tests.web import webflows

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(120)]

STEPS = 130


@pytest.fixture
async def long_run(client: cairn.Client) -> cairn.RunHandle:
    handle = await client.start(webflows.counts_up, STEPS, id="long-1")
    assert await handle.result(timeout=60) == STEPS
    return handle


async def test_pages_of_steps_make_up_the_whole_journal(long_run: cairn.RunHandle) -> None:
    every = await long_run.steps()
    assert [s.seq for s in every] == list(range(1, STEPS + 1))
    paged: list[int] = []
    after = 0
    while page := await long_run.steps(after=after, limit=50):
        assert len(page) <= 50
        paged += [s.seq for s in page]
        after = page[-1].seq
    assert paged == [s.seq for s in every]
    assert [s.result for s in await long_run.steps(after=10, limit=3)] == [11, 12, 13]
    assert [s.seq for s in await long_run.steps(after=120)] == list(range(121, STEPS + 1))
    tail = await long_run.steps(last=4)
    assert [s.seq for s in tail] == list(range(STEPS - 3, STEPS + 1))  # oldest first
    assert tail == every[-4:]
    assert [s.seq for s in await long_run.steps(last=10_000)] == [s.seq for s in every]


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"after": -1}, "after"),
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
        ({"last": 0}, "last"),
        ({"after": "3"}, "after"),
        ({"last": 3, "after": 1}, "last"),
        ({"last": 3, "limit": 1}, "last"),
    ],
)
async def test_a_bad_bound_is_refused_by_name(long_run: cairn.RunHandle, kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=f"steps\\({named}="):
        await long_run.steps(**kwargs)  # type: ignore[arg-type]


async def test_the_api_pages_by_link_and_gives_the_tail(http: httpx.AsyncClient, long_run: cairn.RunHandle) -> None:
    whole = (await http.get("/api/runs/long-1/steps")).json()
    assert len(whole) == STEPS
    seen: list[dict[str, object]] = []
    url: str | None = "/api/runs/long-1/steps?limit=40"
    while url is not None:
        r = await http.get(url)
        assert r.status_code == 200, r.text
        seen += r.json()
        link = r.headers.get("link")
        url = re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1) if link else None  # type: ignore[union-attr]
        if len(r.json()) < 40:
            assert link is None  # a short page is the last one
    assert seen == whole
    assert (await http.get("/api/runs/long-1/steps?last=2")).json() == whole[-2:]
    assert (await http.get("/api/runs/long-1/steps?after=128")).json() == whole[-2:]
    for query, named in [("limit=0", "limit"), ("after=-1", "after"), ("last=3&after=2", "last"), ("limit=x", "limit")]:
        r = await http.get(f"/api/runs/long-1/steps?{query}")
        assert r.status_code == 422, (query, r.text)
        assert r.json()["error"] == "invalid" and named in r.json()["message"], r.text
    assert (await http.get("/api/runs/nope/steps?limit=5")).status_code == 404


async def test_cairn_show_lists_the_latest_steps_and_says_how_to_see_all(
    client: cairn.Client, long_run: cairn.RunHandle
) -> None:
    shown = await cli_in_thread(["show", "long-1", "--db", client.url])
    assert shown.exit_code == 0, shown.output
    assert "steps before step 31 are not shown (the run's last 100 are): --steps all" in shown.stdout
    seqs = [int(m) for m in re.findall(r"^\s*(\d+)\s+action\s", shown.stdout, re.MULTILINE)]
    assert seqs == list(range(31, STEPS + 1))
    every = await cli_in_thread(["show", "long-1", "--steps", "all", "--db", client.url])
    assert [int(m) for m in re.findall(r"^\s*(\d+)\s+action\s", every.stdout, re.MULTILINE)] == list(
        range(1, STEPS + 1)
    )
    assert "not shown" not in every.stdout
    few = await cli_in_thread(["show", "long-1", "--steps", "5", "--json", "--db", client.url])
    assert [s["seq"] for s in json.loads(few.stdout)["steps"]] == list(range(STEPS - 4, STEPS + 1))
    whole = json.loads((await cli_in_thread(["show", "long-1", "--json", "--db", client.url])).stdout)
    assert len(whole["steps"]) == STEPS  # scripts get every step unless they ask for fewer
    bad = await cli_in_thread(["show", "long-1", "--steps", "0", "--db", client.url])
    assert bad.exit_code == 2 and "give a number of steps (at least 1) or 'all', not '0'" in bad.output


async def test_pages_of_events_and_the_tail_of_properties(http: httpx.AsyncClient, long_run: cairn.RunHandle) -> None:
    every = await long_run.events()
    sizes = await long_run.sizes()
    assert (sizes.steps, sizes.events) == (STEPS, len(every))
    assert sizes.snapshots == len(await long_run.properties(history=True))
    paged: list[int] = []
    after = 0
    while page := await long_run.events(after=after, limit=64):
        paged += [e.id for e in page]
        after = page[-1].id
    assert paged == [e.id for e in every]
    assert await long_run.events(last=5) == every[-5:]
    of_steps = await long_run.events(steps=range(101, 104))
    assert of_steps == [e for e in every if e.step in (101, 102, 103)] and {e.step for e in of_steps} == {101, 102, 103}
    assert await long_run.events(steps=range(5, 5)) == []
    with pytest.raises(ValueError, match=r"events\(steps=\.\.\.\) takes a range"):
        await long_run.events(steps=(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"events\(last=\.\.\.\) takes no steps="):
        await long_run.events(last=3, steps=range(1, 3))
    with pytest.raises(ValueError, match=r"properties\(last=\.\.\.\)"):
        await long_run.properties(history=True, last=0)
    api = (await http.get("/api/runs/long-1/events")).json()
    assert [e["id"] for e in api] == [e.id for e in every]
    first = await http.get("/api/runs/long-1/events?limit=10")
    assert [e["id"] for e in first.json()] == [e.id for e in every[:10]]
    assert first.headers["link"] == f'</api/runs/long-1/events?after={every[9].id}&limit=10>; rel="next"'
    assert (await http.get("/api/runs/long-1/events?last=2")).json() == api[-2:]
    assert (await http.get("/api/runs/long-1/events?last=2&limit=3")).status_code == 422


async def test_a_long_runs_page_reads_only_what_it_shows(
    http: httpx.AsyncClient, long_run: cairn.RunHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past TIMELINE_ALL steps, the page reads its own steps, their events, the latest events and
    snapshots, and the counts: it says what the timeline draws and how many there are of each."""
    from cairn.web import pages

    whole = (await http.get("/runs/long-1?steps_from=100")).text  # under the threshold: all read
    monkeypatch.setattr(pages, "TIMELINE_ALL", 50)
    monkeypatch.setattr(pages, "LATEST_EVENTS", 7)
    page = (await http.get("/runs/long-1?steps_from=100")).text
    listed = [int(n) for n in re.findall(r'id="step-(\d+)"', page)]
    assert listed == [int(n) for n in re.findall(r'id="step-(\d+)"', whole)] == list(range(101, STEPS + 1))
    assert f"The timeline draws the {STEPS - 100} steps listed below, of the run's {STEPS}." in page
    assert f"Timeline <small>steps 101\u2013{STEPS} of {STEPS}," in page
    monkeypatch.setattr(pages, "STEPS_PER_PAGE", 20)
    middle = (await http.get("/runs/long-1?steps_from=40")).text  # numbered as listed, both ways linked
    links = r'<a href="\?steps_from=20">earlier</a> · \s*<a href="\?steps_from=60">later</a>'
    assert re.search(r"Steps 41\u201360 of 130\.\s*" + links, middle)
    assert "The timeline draws" not in whole
    assert re.findall(r'data-step="(\d+)"', page) and all(
        101 <= int(n) <= STEPS for n in re.findall(r'data-step="(\d+)"', page)
    )
    assert page.count("<h3>Attempts</h3>") == whole.count("<h3>Attempts</h3>") == STEPS - 100
    sizes = await long_run.sizes()
    assert f"The latest 7 of {sizes.events}" in page
