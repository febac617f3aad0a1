"""`cairn runs` a page at a time and within a time window, on both backends: `--limit`, `--cursor`
(and the hint naming the next page's command), `--since`/`--until`, `--id-prefix`, `--counts`,
`--oldest-first`, `--json-page`; the same runs as `GET /api/runs` with the same filters; a running
run timed by the database's clock; bad values refused by click (exit 2) before anything is opened."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import cairn
from cairn import RunStatus
from cairn.cli.main import cli
from cairn.web import create_app
from tests.conftest import eventually
from tests.helpers import FixedClock, cli_in_thread, raw_sql
from tests.web import webflows

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def http(client: cairn.Client) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(client))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8700") as h:
        yield h


async def _runs_created(client: cairn.Client, ages: dict[str, float]) -> float:
    """Runs (pending: no worker) created `ages[id]` seconds before the database's now; that now."""
    now = await client.now()
    for run_id, age in ages.items():
        await client.start(webflows.quick, run_id, id=run_id)
        raw_sql(client.url, "UPDATE cairn_runs SET created_at = ? WHERE id = ?", now - age, run_id)
    return now


async def _cairn(*args: str) -> Any:
    result = await cli_in_thread(list(args))
    assert result.exit_code == 0, result.output
    return result


async def _page(client: cairn.Client, *args: str) -> dict[str, Any]:
    page: dict[str, Any] = json.loads((await _cairn("runs", *args, "--json-page", "--db", client.url)).stdout)
    return page


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


async def test_limit_and_cursor_list_every_run_once_newest_first(client: cairn.Client) -> None:
    await _runs_created(client, {f"p-{i}": 60.0 * i for i in range(7)})
    seen: list[str] = []
    cursor: list[str] = []
    while True:
        page = await _page(client, "--limit", "3", *cursor)
        seen += [r["id"] for r in page["runs"]]
        assert set(page) == {"runs", "next_cursor", "counts"} and page["counts"] is None
        if page["next_cursor"] is None:
            break
        assert len(page["runs"]) == 3
        cursor = ["--cursor", page["next_cursor"]]
    assert seen == [f"p-{i}" for i in range(7)]  # p-0 is the newest
    oldest = await _page(client, "--limit", "4", "--oldest-first")
    assert [r["id"] for r in oldest["runs"]] == ["p-6", "p-5", "p-4", "p-3"]
    rest = await _page(client, "--limit", "4", "--oldest-first", "--cursor", oldest["next_cursor"])
    assert [r["id"] for r in rest["runs"]] == ["p-2", "p-1", "p-0"] and rest["next_cursor"] is None


async def test_the_hint_is_the_next_pages_command(client: cairn.Client) -> None:
    """A table (or `--json`, still a plain list) that did not hold every run ends with the command
    listing the next ones, on stderr; run as printed, it lists them, and the last page has no hint."""
    await _runs_created(client, {f"h-{i}": 60.0 * i for i in range(5)})
    first = await _cairn("runs", "--limit", "2", "--db", client.url)
    assert "h-0" in first.stdout and "h-1" in first.stdout and "h-2" not in first.stdout
    hint = first.stderr.strip().splitlines()[-1]
    assert hint.startswith("more runs: list the next ones with: cairn runs --limit 2 --db ")
    command = shlex.split(hint.split(": ", 2)[-1])
    assert command[:2] == ["cairn", "runs"] and command[-2] == "--cursor"
    second = await _cairn(*command[1:])
    assert "h-2" in second.stdout and "h-3" in second.stdout and "h-1" not in second.stdout
    last = await _cairn(*shlex.split(second.stderr.strip().splitlines()[-1].split(": ", 2)[-1])[1:])
    assert "h-4" in last.stdout and "more runs" not in last.stderr
    listed = await _cairn("runs", "--limit", "2", "--json", "--db", client.url)
    assert [r["id"] for r in json.loads(listed.stdout)] == ["h-0", "h-1"]  # --json stays a list
    assert "--json --db" in listed.stderr and "--cursor" in listed.stderr


async def test_more_runs_than_a_store_page_are_read_page_by_page(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--limit` beyond the client's page size (500) reads several keyset pages, and hands on the
    cursor after the last run shown (the page size made 2 here, so that 7 runs are enough)."""
    monkeypatch.setattr("cairn.client.client.MAX_PAGE", 2)
    await _runs_created(client, {f"m-{i}": 60.0 * i for i in range(7)})
    page = await _page(client, "--limit", "5")
    assert [r["id"] for r in page["runs"]] == [f"m-{i}" for i in range(5)]
    rest = await _page(client, "--limit", "5", "--cursor", page["next_cursor"])
    assert [r["id"] for r in rest["runs"]] == ["m-5", "m-6"] and rest["next_cursor"] is None


async def test_since_and_until_bound_the_creation_time(client: cairn.Client) -> None:
    now = await _runs_created(client, {"t-10m": 600, "t-2h": 7200, "t-3d": 3 * 86400})

    async def ids(*args: str) -> list[str]:
        return [r["id"] for r in (await _page(client, *args))["runs"]]

    assert await ids("--since", "1h") == ["t-10m"]
    assert await ids("--since", "3h", "--until", "1h") == ["t-2h"]
    assert await ids("--since", "2h30m") == ["t-10m", "t-2h"]
    assert await ids("--until", "1d") == ["t-3d"]
    assert await ids("--since", "1w", "--oldest-first") == ["t-3d", "t-2h", "t-10m"]
    assert await ids("--since", _iso(now - 3 * 3600), "--until", _iso(now - 3600)) == ["t-2h"]
    assert await ids("--since", f"@{now - 700}") == ["t-10m"]
    assert await ids("--since", f"@{now - 7200}") == ["t-10m", "t-2h"]  # --since is inclusive
    assert await ids("--until", f"@{now - 7200}") == ["t-3d"]  # --until is not
    # A duration is resolved once: the next page's command carries the time it meant.
    paged = await _cairn("runs", "--since", "1w", "--limit", "1", "--db", client.url)
    command = shlex.split(paged.stderr.strip().splitlines()[-1].split(": ", 2)[-1])
    since = command[command.index("--since") + 1]
    assert abs(datetime.fromisoformat(since).timestamp() - (now - 7 * 86400)) < 60
    typed = _iso(now - 7 * 86400)
    paged = await _cairn("runs", "--since", typed, "--limit", "1", "--db", client.url)
    assert f"--since {typed} --limit 1 --db" in paged.stderr  # a time is repeated as typed


async def test_filters_and_counts_match_the_http_api(client: cairn.Client, http: httpx.AsyncClient) -> None:
    await _runs_created(client, {"a-1": 30, "a-2": 20, "b-1": 10})
    await client.get("a-1").cancel()
    api = (await http.get("/api/runs", params={"id_prefix": "a-", "status": "pending", "counts": "true"})).json()
    page = await _page(client, "--id-prefix", "a-", "--status", "pending", "--counts")
    assert [r["id"] for r in page["runs"]] == [r["id"] for r in api["runs"]] == ["a-2"]
    # Counted by every filter but the status (the id prefix too): a-2 pending, a-1 cancelled.
    assert page["counts"] == api["counts"] and (page["counts"]["pending"], page["counts"]["cancelled"]) == (1, 1)
    # A short name, as the API takes it ("quick" is the human name of several test workflows,
    # whichever test modules are imported; "Greeting" of one).
    await client.start(webflows.Greeting, "g", id="g-1")
    by_name = await _page(client, "--workflow", "Greeting", "--counts")
    api = (await http.get("/api/runs", params={"workflow": "Greeting", "counts": "true"})).json()
    assert [r["id"] for r in by_name["runs"]] == [r["id"] for r in api["runs"]] == ["g-1"]
    assert by_name["counts"] == api["counts"] and sum(by_name["counts"].values()) == 1
    table = await _cairn("runs", "--counts", "--db", client.url)
    assert table.stdout.splitlines()[0] == "4 runs: 3 pending, 1 cancelled"


@pytest.mark.usefixtures("worker")
async def test_a_running_run_is_timed_by_the_databases_clock(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `cairn show`, the API and the dashboard time it: `runs` timed it by this host's clock, and
    with the host an hour behind the database said 12ms… where `show` said 1h00m…."""
    run = await client.start(webflows.sleeps, 7200, id="napping")

    async def asleep() -> bool:
        return await run.status() == RunStatus.WAITING

    await eventually(asleep, what="asleep")
    started = (await run.describe()).started_at
    assert started is not None
    # The database the command opens is an hour ahead of this host (and of the run's start).
    monkeypatch.setattr("cairn.store.base.SYSTEM", FixedClock(started + 3600))
    listed = (await _cairn("runs", "--db", client.url)).stdout
    shown = (await _cairn("show", "napping", "--db", client.url)).stdout
    assert re.search(r"^duration +1h00m…", shown, re.MULTILINE), shown
    assert re.search(r"napping .* 1h00m…", listed), listed


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--since", "yesterday"], ["Invalid value for '--since'", "'yesterday' is not a time", "ISO 8601", "15m"]),
        (["--until", "3600"], ["Invalid value for '--until'", "a bare number is ambiguous", "@1714566600"]),
        (["--since", "15x"], ["Invalid value for '--since'", "2h", "3d"]),
        (["--since", "@soon"], ["Invalid value for '--since'", "not epoch seconds"]),
        (["--since", "99999999999d"], ["Invalid value for '--since'", "shorter duration"]),
        (["--since", "1h", "--until", "2h"], ["--since 1h is not before --until 2h"]),
        (["--since", "2024-05-02", "--until", "2024-05-01"], ["is not before --until 2024-05-01"]),
        (["--cursor", "bogus"], ["Invalid value for '--cursor'", "invalid cursor"]),
        (["--id-prefix", " "], ["Invalid value for '--id-prefix'", "blank"]),
        (["--limit", "0"], ["Invalid value for '--limit'"]),
        (["--json", "--json-page"], ["not both"]),
        (["--json", "--counts"], ["--json-page"]),
    ],
)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_bad_values_are_refused_before_anything_is_opened(
    args: list[str], says: list[str], backend: str, tmp_path: Path
) -> None:
    """Exit 2 with click's error naming the option (and the forms a time takes); nothing is opened:
    no SQLite file appears, and a PostgreSQL server that is not there is never tried."""
    db = f"sqlite:///{tmp_path}/none.db" if backend == "sqlite" else "postgresql://nobody@127.0.0.1:9/none"
    result = CliRunner().invoke(cli, ["runs", *args, "--db", db])
    assert result.exit_code == 2, result.output
    for text in says:
        assert text in result.stderr, result.stderr
    assert result.stdout == "" and not (tmp_path / "none.db").exists()


async def test_a_cursor_of_the_other_order_is_refused(client: cairn.Client) -> None:
    await _runs_created(client, {"o-1": 20, "o-2": 10})
    page = await _page(client, "--limit", "1")
    result = await cli_in_thread(["runs", "--oldest-first", "--cursor", page["next_cursor"], "--db", client.url])
    assert result.exit_code == 2 and "this cursor belongs to sort '-created_at'" in result.stderr
