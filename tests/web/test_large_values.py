"""A run page stays light whatever its run carries: a value over the page's limit is shown cut, with
how much of it is shown and a link to all of it as JSON (`/value`), redacted as the page is; the
steps' values share one budget per page. On both backends, over HTTP."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import httpx
import pytest

import cairn
from cairn.redaction import redact
from cairn.web import views
from tests.web import webflows
from tests.web.conftest import TOKEN

pytestmark = pytest.mark.timeout(60)

ROWS = [
    {"id": i, "name": f"customer {i}", "email": f"c{i}@example.com", "api_token": f"tok-SECRET-{i}"}
    for i in range(11_000)
]
"""About 1 MB of JSON, each row with a secret-looking key."""


def _links(page: str) -> list[str]:
    return [href.replace("&amp;", "&") for href in re.findall(r'<a href="(/value\?[^"]+)">Full value as JSON', page)]


@pytest.mark.usefixtures("worker")
async def test_a_run_with_megabytes_of_values_has_a_light_page(http: httpx.AsyncClient, client: cairn.Client) -> None:
    handle = await client.start(webflows.Bulk, ROWS, id="bulk/1")  # a slash in the id, as ids may have
    assert len(json.dumps(ROWS)) > 1_000_000
    await handle.result(timeout=30)
    response = await http.get("/runs/bulk/1")
    page = response.text
    assert response.status_code == 200 and len(response.content) < 300_000, len(response.content)
    # Input, result, the step's arguments and its result: each shown once, cut, with its size.
    assert page.count("<pre>") == 4 and page.count('<p class="clipped">Showing the first ') == 4
    assert re.search(r"Showing the first \d+ KB of 1,\d{3} KB\. <a href=", page)
    assert page.count("\n…</pre>") == 4
    assert "tok-SECRET" not in page and '"api_token": "***"' in page  # quotes left unescaped in <pre>
    links = _links(page)
    assert links == [
        "/value?run=bulk%2F1&part=input",
        "/value?run=bulk%2F1&part=result",
        "/value?run=bulk%2F1&part=args&step=1",
        "/value?run=bulk%2F1&part=result&step=1",
    ]
    masked = [{**row, "api_token": "***"} for row in ROWS]
    done = [{**row, "done": True} for row in masked]
    expected: list[Any] = [{"rows": masked}, done, {"rows": masked}, done]
    for link, want in zip(links, expected, strict=True):
        whole = await http.get(link)
        assert whole.status_code == 200 and whole.headers["content-type"] == "application/json"
        assert "tok-SECRET" not in whole.text and whole.json() == want
    memory = await http.get("/value", params={"run": "bulk/1", "part": "memory", "key": "last_rows"})
    assert memory.json() == masked[-50:]


@pytest.mark.usefixtures("worker")
async def test_many_large_steps_share_one_budget(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.run(webflows.many_large, 24, 40_000, id="many", timeout=30)
    response = await http.get("/runs/many")
    page = response.text
    assert response.status_code == 200 and len(response.content) < 300_000, len(response.content)
    # STEP_SHOWN_MAX of each step's arguments until the budget is spent, then SHOWN_MIN.
    assert page.count('<p class="clipped">Showing the first ') == 24
    assert page.count("Showing the first 16 KB of 39 KB. <a") == 9
    squeezed = "Showing the first 0.2 KB of 39 KB (this page already shows 160 KB of step values)"
    assert page.count(squeezed) == 14
    links = _links(page)
    assert len(links) == 24 and links[-1] == "/value?run=many&part=args&step=24"
    assert (await http.get(links[-1])).json() == {"label": "s23", "text": "x" * 40_000}
    assert page.count("<pre>40000</pre>") == 24 and "<pre>960000</pre>" in page  # small values: whole


async def test_the_value_route_answers_json_errors(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.start(webflows.quick, "q", id="small")
    ok = await http.get("/value", params={"run": "small", "part": "input"})
    assert ok.status_code == 200 and ok.json() == {"name": "q"}
    for params, status, says in [
        ({"run": "nope", "part": "input"}, 404, "no run with id 'nope'"),
        ({"run": "small", "part": "args", "step": "3"}, 404, "has no step 3"),
        ({"run": "small", "part": "args"}, 422, "part=args needs step"),
        ({"run": "small", "part": "input", "step": "0"}, 422, "step goes with part=args or part=result"),
        ({"run": "small", "part": "secrets"}, 422, "query.part"),
        ({"run": "small", "part": "input", "extra": "1"}, 422, "unknown query parameter 'extra'"),
        ({"run": "small", "part": "memory", "key": "none"}, 404, "no memory entry 'none'"),
    ]:
        r = await http.get("/value", params=params)
        assert r.status_code == status and says in r.json()["message"], (params, r.text)


async def test_the_value_route_needs_the_token(authed: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.start(webflows.quick, "q", id="guarded")
    where = {"run": "guarded", "part": "input"}
    assert (await authed.get("/value", params=where)).status_code == 401
    browser = await authed.get("/value", params=where, headers={"accept": "text/html"})
    assert browser.status_code == 303 and browser.headers["location"].startswith("/login?next=")
    allowed = await authed.get("/value", params=where, headers={"authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200 and allowed.json() == {"name": "q"}


def test_previews_are_the_json_a_page_showed_before_only_cut() -> None:
    """`preview` and `compact` encode lazily what `json.dumps(redact(value))` gave in full."""
    rng = random.Random(7)

    def value(depth: int = 0) -> Any:
        roll = rng.random()
        if depth > 4 or roll < 0.4:
            return rng.choice([1, -2.5, None, True, False, 'a "q" <b> & é', "", 10**20, float("nan")])
        if roll < 0.7:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {rng.choice(["a", "b", "api_key", "Password", "é"]): value(depth + 1) for _ in range(rng.randint(0, 4))}

    for _ in range(2000):
        v = value()
        indented = json.dumps(redact(v), indent=2, ensure_ascii=False)
        flat = json.dumps(redact(v), separators=(",", ":"), ensure_ascii=False)
        whole = views.preview(v, 10**9)
        assert (whole.text, whole.truncated, whole.size) == (indented, False, len(flat.encode()))
        cut = views.preview(v, 30)
        assert indented.startswith(cut.text) and cut.truncated == (len(indented) > 30)
        for width in (5, 40):
            assert views.compact(v, width) == (flat if len(flat) <= width else flat[: width - 1] + "…")


def test_a_property_changing_between_values_python_calls_equal_is_shown_changed() -> None:
    """1 == True == 1.0 in Python: a property going from 1 to true, or 2 to 2.0, was shown unchanged."""
    from cairn.web.views import property_changes

    history = [
        {"activation": 1, "properties": {"flag": 1, "count": 2, "name": "x", "tags": {"a": 1, "b": 2}}},
        {"activation": 2, "properties": {"flag": True, "count": 2.0, "name": "x", "tags": {"b": 2, "a": 1}}},
    ]
    (_, first), (_, second) = property_changes(history)
    assert {r.key: r.change for r in first} == dict.fromkeys(("count", "flag", "name", "tags"), "added")
    assert {r.key: r.change for r in second} == {"count": "changed", "flag": "changed", "name": "", "tags": ""}
