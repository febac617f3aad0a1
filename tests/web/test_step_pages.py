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
