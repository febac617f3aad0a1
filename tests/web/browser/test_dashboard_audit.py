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
