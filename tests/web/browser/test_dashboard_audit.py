"""The dashboard in headless Chromium where an audit found it fall short (the fixes land with it):
a signal whose name holds a slash, and a run whose id holds a line break, each driven through the
page's own forms and buttons."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.web import webflows

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("clean_page")]


def _start(api: httpx.Client, run_id: str) -> None:
    assert webflows.Greeting
    r = api.post("/api/workflows/tests.web.webflows.Greeting/runs", json={"args": ["ada"], "id": run_id})
    assert r.status_code == 201, r.text


def test_a_signal_whose_name_holds_a_slash_is_sent_from_the_run_page(
    page: Page, api: httpx.Client, base_url: str
) -> None:
    """The form flashed "Method Not Allowed" and sent nothing."""
    _start(api, "audit-sig-1")
    page.goto(base_url + "/runs/audit-sig-1")
    page.fill('#signal-form input[name="name"]', "orders/approved")
    page.fill('#signal-form textarea[name="payload"]', '{"by": "ada"}')
    page.click('#signal-form button[type="submit"]')
    expect(page.locator("#flash")).to_have_text("Signal orders/approved sent.")
    events = api.get("/api/runs/audit-sig-1/events").json()
    assert [e["detail"]["name"] for e in events if e["kind"] == "signal.received"] == ["orders/approved"]


def test_a_run_whose_id_holds_a_line_break_opens_and_pauses(page: Page, api: httpx.Client, base_url: str) -> None:
    """Its page was a 404, and the API looked up another run (the id less its final line break)."""
    _start(api, "audit\tline\n")
    page.goto(base_url + "/runs/" + quote("audit\tline\n", safe=""))
    expect(page.locator("#run-status")).to_have_text("waiting")  # for its `approve` signal
    page.click('button[data-action="pause"]')
    expect(page.locator("#flash")).to_contain_text("pause done, now paused")
    assert api.get("/api/runs/" + quote("audit\tline\n", safe="")).json()["status"] == "paused"


def _runs_of(api: httpx.Client, workflow: str) -> list[dict[str, object]]:
    return [r for r in api.get("/api/runs", params={"workflow": workflow, "limit": 100}).json()["runs"]]


def test_a_double_click_on_start_starts_one_run(page: Page, api: httpx.Client, base_url: str) -> None:
    """A double click on Start run started two runs (and on Fork run, two forks; on Send, two signals)."""
    before = len(_runs_of(api, "tests.web.webflows.quick"))
    page.goto(base_url + "/workflows")
    form = page.locator('form.start[data-workflow="tests.web.webflows.quick"]')
    form.locator('[data-param="name"]').fill("twice")
    form.locator('button[type="submit"]').dblclick()
    page.wait_for_url("**/runs/*")
    expect(page.locator("#run-status")).to_be_visible()
    assert len(_runs_of(api, "tests.web.webflows.quick")) == before + 1


def test_the_start_forms_values_reach_the_run_as_written(page: Page, api: httpx.Client, base_url: str) -> None:
    """Through JavaScript's numbers 9007199254740993 became 9007199254740992 (typed or a default,
    and inside a JSON default too), and a default with a line break lost it in an <input>."""
    page.goto(base_url + "/workflows")
    form = page.locator('form.start[data-workflow="tests.web.webflows.exact"]')
    form.locator("[data-run-id]").fill("exact-defaults")
    form.locator('button[type="submit"]').click()
    page.wait_for_url("**/runs/exact-defaults")
    assert api.get("/api/runs/exact-defaults").json()["input"] == {
        "limit": 9007199254740993,
        "note": "line1\nline2",
        "ids": [2**63 - 1],
    }
    page.goto(base_url + "/workflows")
    form = page.locator('form.start[data-workflow="tests.web.webflows.exact"]')
    form.locator('[data-param="limit"]').fill("12345678901234567891")
    form.locator("[data-run-id]").fill("exact-typed")
    form.locator('button[type="submit"]').click()
    page.wait_for_url("**/runs/exact-typed")
    assert api.get("/api/runs/exact-typed").json()["input"]["limit"] == 12345678901234567891


def test_numbers_typed_as_a_number_input_takes_them_start_the_run(page: Page, api: httpx.Client, base_url: str) -> None:
    """`007` and `.5` went into the body as typed, which is not JSON: "the body is not valid JSON"."""
    assert webflows.nums
    for n, x, run_id in [("007", ".5", "nums-typed"), ("-0012", "-00.250e1", "nums-signed")]:
        page.goto(base_url + "/workflows")
        form = page.locator('form.start[data-workflow="tests.web.webflows.nums"]')
        form.locator('[data-param="n"]').fill(n)
        form.locator('[data-param="x"]').fill(x)
        form.locator("[data-run-id]").fill(run_id)
        form.locator('button[type="submit"]').click()
        page.wait_for_url(f"**/runs/{run_id}")
    assert api.get("/api/runs/nums-typed").json()["input"] == {"n": 7, "x": 0.5}
    assert api.get("/api/runs/nums-signed").json()["input"] == {"n": -12, "x": -2.5}
