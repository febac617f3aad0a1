"""The dashboard as a person uses it, in headless Chromium: filter runs, open one, read its
timeline and a step, pause and resume it, send a signal, start a workflow from its form, and an
input of `<script>alert(1)</script>` shown as text that never runs."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.web import webflows

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("clean_page")]
XSS = "<script>alert(1)</script>"


def _start(api: httpx.Client, workflow: str, *args: object, id: str, wait: float | None = None) -> dict[str, object]:
    params = {"wait": wait} if wait else {}
    r = api.post(f"/api/workflows/{workflow}/runs", json={"args": list(args), "id": id}, params=params)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def test_runs_page_filters(page: Page, api: httpx.Client, base_url: str) -> None:
    assert webflows.Greeting
    for i in range(3):
        _start(api, "tests.web.webflows.quick", f"q{i}", id=f"quick-{i}", wait=20)
    _start(api, "tests.web.webflows.Greeting", "ada", id="greet-ada")
    page.goto(base_url + "/")
    expect(page.locator("table.runs tbody tr")).to_have_count(4)
    expect(page.locator('[data-count="completed"]')).to_have_text("3")
    page.select_option('select[name="workflow"]', "tests.web.webflows.quick")
    page.click('form.filters button[type="submit"]')
    expect(page.locator("table.runs tbody tr")).to_have_count(3)
    page.fill('input[name="q"]', "quick-1")
    page.click('form.filters button[type="submit"]')
    expect(page.locator("table.runs tbody tr")).to_have_count(1)
    expect(page.locator("table.runs tbody td.id")).to_have_text("quick-1")
    page.get_by_role("link", name="Clear").click()
    expect(page.locator("table.runs tbody tr")).to_have_count(4)


def test_live_updates_and_bulk_cancel(page: Page, api: httpx.Client, base_url: str) -> None:
    page.goto(base_url + "/")
    _start(api, "tests.web.webflows.Greeting", "bo", id="greet-bo")  # appears without a reload
    expect(page.locator('tr[data-run="greet-bo"]')).to_be_visible()
    page.check('input.pick[value="greet-bo"]')
    expect(page.locator("#bulk")).to_be_visible()
    page.click('button[data-bulk="cancel"]')
    expect(page.locator("#flash")).to_contain_text("cancel: 1 of 1 runs done")
    expect(page.locator('tr[data-run="greet-bo"] .badge')).to_have_text("cancelled")


def test_run_timeline_and_step_detail(page: Page, api: httpx.Client, base_url: str) -> None:
    _start(api, "tests.web.webflows.parallel", 3, id="par-1", wait=20)
    page.goto(base_url + "/")
    page.get_by_role("link", name="par-1").click()
    expect(page.locator("#run-status")).to_have_text("completed")
    bars = page.locator("svg.timeline rect.bar")
    expect(bars).to_have_count(3)
    lanes = {bars.nth(i).get_attribute("y") for i in range(3)}
    assert len(lanes) >= 2  # a gather draws side by side, in lanes
    expect(page.locator("svg.timeline title").first).to_contain_text("tests.web.webflows.say_hello")
    page.locator("svg.timeline a").first.click()  # a bar leads to its step
    step = page.locator("details.step").first
    step.locator("summary").click()
    expect(step).to_contain_text("Greets someone by name.")
    expect(step.locator("pre").nth(0)).to_contain_text('"name": "p0"')
    expect(step).to_contain_text('"hello p0"')
    expect(step.locator("pre.logs")).to_contain_text("greeting p0")


def test_pause_resume_and_signal(page: Page, api: httpx.Client, base_url: str) -> None:
    _start(api, "tests.web.webflows.Greeting", "cy", id="greet-cy")
    page.goto(base_url + "/runs/greet-cy")
    expect(page.locator("#run-status")).to_have_text("waiting")
    page.click('button[data-action="pause"]')
    expect(page.locator("#run-status")).to_have_text("paused")
    expect(page.locator('button[data-action="pause"]')).to_be_disabled()
    page.click('button[data-action="resume"]')
    expect(page.locator("#run-status")).not_to_have_text("paused")
    expect(page.locator("#run-status")).to_have_text("waiting")
    page.fill('#signal-form input[name="name"]', "approve")
    page.fill('#signal-form textarea[name="payload"]', '{"by": "dee"}')
    page.click('#signal-form button[type="submit"]')
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("section.io")).to_contain_text("hello cy / {'by': 'dee'}")
    expect(page.locator("table.props")).to_contain_text("stage")
    expect(page.locator("table.props")).not_to_contain_text("tok-123")  # api_token shown as ***


def test_start_from_the_form_shows_script_as_text(page: Page, base_url: str) -> None:
    page.goto(base_url + "/workflows")
    form = page.locator('form.start[data-workflow="tests.web.webflows.Greeting"]')
    form.locator('[data-param="name"]').fill(XSS)
    form.locator('[data-param="times"]').fill("2")
    form.locator("[data-run-id]").fill("from-form")
    form.locator('button[type="submit"]').click()
    page.wait_for_url(re.compile(r".*/runs/from-form$"))
    expect(page.locator("section.io pre").first).to_contain_text(XSS)
    expect(page.locator("#run-status")).to_have_text("waiting")
    assert page.evaluate("document.querySelectorAll('main script').length") == 0
    page.goto(base_url + "/")
    expect(page.locator('tr[data-run="from-form"]')).to_be_visible()


def test_api_docs_render_without_internet(page: Page, base_url: str) -> None:
    page.goto(base_url + "/api/docs")
    expect(page.locator("#swagger-ui")).to_contain_text("/api/workflows/{name}/runs")
