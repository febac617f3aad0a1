"""The dashboard against SPEC section 5 ("Web dashboard") and 6 (pages escape user data, send a
CSP, take filters from allow-lists, never show fields named like secrets), in headless Chromium on
a real SQLite file with an embedded worker. Each test is one discrepancy found by using the pages
as a person would; every page must leave the browser console free of errors."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page, expect

import cairn
from cairn import Workflow, action, workflow
from tests.web.browser.conftest import dashboard

pytestmark = pytest.mark.timeout(120)
MODULE = __name__
SECRETS = ("sk-default-secret-1", "mem-secret-2", "sig-secret-3")


@action
async def shout(word: str) -> str:
    return word.upper()


@workflow
async def keyed(user: str, api_key: str = "sk-default-secret-1") -> str:
    """Keeps a secret in memory, then waits for a secret-named signal."""
    cairn.memory.add(key="api_key", value="mem-secret-2")
    await shout(user)
    await cairn.wait_for_signal("client_secret")
    return user


@workflow
async def grows(word: str) -> str:
    """Takes more steps once signalled: the fork form's last step must follow."""
    await shout(word)
    await cairn.wait_for_signal("more")
    return await shout(word + "!")


@workflow
async def nap(seconds: float) -> str:
    await cairn.sleep(seconds)
    return "awake"


@workflow
class Tally(Workflow):
    async def run(self, word: str) -> str:
        self.stage = "shouting"
        loud = await shout(word)
        self.stage = "done"
        return loud


# --- fixtures: one dashboard and one browser for the module ------------------------------------------


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('conformance') / 'dash.db'}"


@pytest.fixture(scope="module")
def base_url(db_url: str) -> Iterator[str]:
    with dashboard(db_url) as url:
        yield url


def _watched(browser: Browser) -> tuple[Page, list[str]]:
    """A page in a new browser context, and the list its console errors, page errors and dialogs go to."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    p = context.new_page()
    p.set_default_timeout(15_000)
    problems: list[str] = []

    def on_console(m: ConsoleMessage) -> None:
        if m.type == "error":
            problems.append(f"console: {m.text} ({m.location.get('url')})")

    def on_dialog(d: Dialog) -> None:
        problems.append(f"dialog: {d.message}")
        d.dismiss()

    p.on("console", on_console)
    p.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    p.on("dialog", on_dialog)
    return p, problems


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh page per test; the test fails if the console logged any error or a dialog opened."""
    p, problems = _watched(browser)
    yield p
    p.wait_for_load_state("networkidle")
    p.context.close()
    assert problems == []


def _start(api: httpx.Client, wf: str, *args: object, id: str, wait: float | None = None) -> None:
    params = {"wait": wait} if wait else {}
    r = api.post(f"/api/workflows/{MODULE}.{wf}/runs", json={"args": list(args), "id": id}, params=params)
    assert r.status_code in (200, 201), r.text


# --- tests -------------------------------------------------------------------------------------------


def test_pages_load_without_console_errors(browser: Browser, base_url: str) -> None:
    """SPEC 5 (tested in a real browser): the first page a browser opens asked for /favicon.ico,
    which the app did not have: a 404 in the console of every fresh session."""
    p, problems = _watched(browser)
    try:
        for path in ("/", "/workflows", "/workers", "/queues", "/schedules"):
            response = p.goto(base_url + path)
            assert response is not None and response.status == 200
            assert response.headers.get("content-security-policy")
            p.wait_for_load_state("networkidle")
        icon = p.locator('link[rel="icon"]').get_attribute("href")
        assert icon and p.request.get(base_url + icon).status == 200
    finally:
        p.context.close()
    assert problems == []


def test_fork_form_starts_the_new_run_and_opens_it(page: Page, api: httpx.Client, base_url: str) -> None:
    """The run page's fork form: `form.id` is shadowed by its input named "id", so the submit went
    to the start-a-workflow branch and failed with "Cannot read properties of null"."""
    _start(api, "Tally", "fork me", id="to-fork", wait=20)
    page.goto(base_url + "/runs/to-fork")
    expect(page.locator("#run-status")).to_have_text("completed")
    page.fill('#fork-form input[name="from_step"]', "1")
    page.fill('#fork-form input[name="id"]', "forked <b>1</b>")
    page.click('#fork-form button[type="submit"]')
    page.wait_for_url(re.compile(r".*/runs/forked%20%3Cb%3E1%3C%2Fb%3E$"))
    expect(page.locator("h1 .id")).to_have_text("forked <b>1</b>")
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("#flash")).to_be_empty()


def test_secret_named_fields_never_reach_the_page(page: Page, base_url: str) -> None:
    """SPEC 6: fields named like secrets never appear in pages. The start form wrote the default of
    a parameter named `api_key` into its input; the step list showed the value of a memory write
    under the key `api_key`, and the payload of a signal named `client_secret`."""
    page.goto(base_url + "/workflows")
    form = page.locator(f'form.start[data-workflow="{MODULE}.keyed"]')
    secret_input = form.locator('[data-param="api_key"]')
    expect(secret_input).to_have_value("")
    expect(secret_input).to_have_attribute("type", "password")
    form.locator('[data-param="user"]').fill("ada")
    form.locator("[data-run-id]").fill("keyed-1")
    form.locator('button[type="submit"]').click()
    page.wait_for_url(re.compile(r".*/runs/keyed-1$"))
    expect(page.locator("#run-status")).to_have_text("waiting")
    page.fill('#signal-form input[name="name"]', "client_secret")
    page.fill('#signal-form textarea[name="payload"]', '"sig-secret-3"')
    page.click('#signal-form button[type="submit"]')
    expect(page.locator("#run-status")).to_have_text("completed")
    for details in page.locator("details.step").all():
        details.locator("summary").click()
    expect(page.locator("ol.steps")).to_contain_text('"***"')
    html = page.content()
    leaked = [s for s in SECRETS if s in html]
    assert leaked == []
    page.goto(base_url + "/workflows")
    assert [s for s in SECRETS if s in page.content()] == []


def test_signal_form_follows_the_run_once_it_finishes(page: Page, api: httpx.Client, base_url: str) -> None:
    """A finished run takes no signals: the form stayed enabled, and sending gave a 409 (a console
    error) after the page had already shown the run as completed."""
    _start(api, "keyed", "bo", id="keyed-2")
    page.goto(base_url + "/runs/keyed-2")
    expect(page.locator("#run-status")).to_have_text("waiting")
    send = page.locator('#signal-form button[type="submit"]')
    expect(send).to_be_enabled()
    r = api.post("/api/runs/keyed-2/signals/client_secret", json="x")  # from elsewhere: the page follows
    assert r.status_code == 200, r.text
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(send).to_be_disabled()
    page.reload()
    expect(page.locator('#signal-form button[type="submit"]')).to_be_disabled()


def test_a_sleeping_run_says_when_it_wakes(page: Page, api: httpx.Client, base_url: str) -> None:
    """SPEC 5 (timeline timings): a run in a durable sleep showed only "waiting" and a timer step
    "scheduled", nowhere when it would wake."""
    _start(api, "nap", 7200.0, id="napping")
    page.goto(base_url + "/runs/napping")
    expect(page.locator("#run-status")).to_have_text("waiting")
    step = page.locator("#step-1")
    step.locator("summary").click()
    expect(step).to_contain_text(re.compile(r"wakes \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(in 1 h 59 m\)"))


def test_a_bad_cursor_keeps_the_order_and_range_asked_for(page: Page, api: httpx.Client, base_url: str) -> None:
    """SPEC 6 (filters from allow-lists, bad values said clearly): with a stale cursor the page said
    so but showed the first page newest first and over all time, while its form said "oldest first"."""
    for i in range(3):
        _start(api, "Tally", f"w{i}", id=f"order-{i}", wait=20)
    page.goto(base_url + "/?sort=created_at&since=24h")
    shown = page.locator("table.runs td.id").all_inner_texts()
    page.goto(base_url + "/?sort=created_at&since=24h&cursor=not-a-cursor")
    expect(page.locator("p.problem")).to_contain_text("invalid cursor")
    expect(page.locator('select[name="sort"]')).to_have_value("created_at")
    # Read at once, not waited for: the live refresh (every 3 s) used to put the order right later.
    assert page.locator("table.runs td.id").all_inner_texts() == shown


def test_unknown_workflow_filter_is_said(page: Page, base_url: str) -> None:
    """A workflow filter naming no known workflow showed "No runs match." with no word why."""
    page.goto(base_url + "/?workflow=" + quote("no.such<wf>"))
    expect(page.locator("p.problem")).to_have_text("no workflow named 'no.such<wf>' is known")
    expect(page.locator("table.runs td.empty")).to_have_text("No runs match.")


def test_bad_step_offset_is_said_on_the_page(page: Page, api: httpx.Client, base_url: str) -> None:
    """A run page with `?steps_from=abc` answered raw JSON (a 422) instead of the page."""
    _start(api, "Tally", "steps", id="offsets", wait=20)
    response = page.goto(base_url + "/runs/offsets?steps_from=abc")
    assert response is not None and response.status == 200
    expect(page.locator("p.problem")).to_contain_text("steps_from must be a step number")
    expect(page.locator("#run-status")).to_have_text("completed")
    expect(page.locator("details.step")).to_have_count(1)


def test_queues_and_schedules_read_as_working_pages(page: Page, db_url: str, base_url: str) -> None:
    """SPEC 5 (queues and schedules): the menu marked both pages "soon" though they work; an active
    schedule's state was blank; the queues table had two columns headed "waiting"."""
    sync = cairn.connect_sync(db_url)
    try:
        sync.create_schedule("hourly-nap", nap, every=timedelta(hours=1), args=(1.0,))
        sync.create_schedule("paused-nap", nap, every=timedelta(hours=1), args=(1.0,))
        sync.pause_schedule("paused-nap")
    finally:
        sync.close()
    page.goto(base_url + "/")
    expect(page.locator("header.top nav")).not_to_contain_text("soon")
    page.get_by_role("link", name="Schedules", exact=True).click()
    expect(page.locator("tr", has_text="hourly-nap")).to_contain_text("active")
    expect(page.locator("tr", has_text="paused-nap")).to_contain_text("paused")
    expect(page.locator("tr", has_text="paused-nap")).not_to_contain_text("active")
    page.get_by_role("link", name="Queues", exact=True).click()
    expect(page.locator("table tbody tr").first).to_be_visible()
    headers = page.locator("table thead th").all_inner_texts()
    assert len(headers) == len(set(headers)), headers


def test_a_dashboard_with_a_token_lets_a_browser_log_in_through_its_form(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every response said `Referrer-Policy: no-referrer`, under which a browser's form post sends
    `Origin: null`: the login was refused as cross-origin (403), whatever the token."""
    with dashboard(f"sqlite:///{tmp_path_factory.mktemp('login') / 'dash.db'}", token="tok-login-1") as url:
        p, problems = _watched(browser)
        try:
            p.goto(url + "/")
            p.fill("input[name=token]", "wrong")
            p.click("button[type=submit]")
            expect(p.locator("body")).to_contain_text("token")  # refused, still the login form
            assert p.locator("input[name=token]").count() == 1
            p.fill("input[name=token]", "tok-login-1")
            p.click("button[type=submit]")
            p.wait_for_url(url + "/")
            expect(p.locator("input[name=token]")).to_have_count(0)
            expect(p.locator("body")).to_contain_text("Workflow")  # the runs page, with its filters
        finally:
            p.context.close()
        assert [x for x in problems if "401" not in x] == [], problems


def test_a_page_whose_session_ended_says_to_log_in_again(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A click on Pause said "send the API token as `Authorization: Bearer <token>`", advice for an
    API client, not for a person whose session ended, and the live updates stopped without a word."""
    with dashboard(f"sqlite:///{tmp_path_factory.mktemp('ended') / 'dash.db'}", token="tok-ended-1") as url:
        p, _ = _watched(browser)
        try:
            p.goto(url + "/")
            p.fill("input[name=token]", "tok-ended-1")
            p.click("button[type=submit]")
            p.wait_for_url(url + "/")
            started = httpx.post(
                url + "/api/workflows/tests.flows.Approval/runs",
                json={"args": ["o-1"]},
                headers={"Authorization": "Bearer tok-ended-1"},
            )
            assert started.status_code == 201, started.text
            run_id = started.json()["id"]
            p.goto(f"{url}/runs/{run_id}")
            expect(p.locator("#run-status")).to_be_visible()
            p.context.clear_cookies()  # the session ends: logged out in another tab, or a new token
            p.click('button[data-action="pause"]')
            expect(p.locator("#flash")).to_contain_text("your session has ended: log in again at")
            expect(p.locator("#flash")).to_contain_text("/login")
            expect(p.locator("#flash")).not_to_contain_text("Bearer")
        finally:
            p.context.close()


def test_the_buttons_of_an_open_page_work_after_the_server_restarts(browser: Browser, db_url: str) -> None:
    """Served without a token, the dashboard signs CSRF tokens with a key of its own process: after
    a restart (`cairn dev` restarts on every code change) every button of a page open since failed
    ("missing or wrong CSRF token"), while the page went on updating as if all were well. The
    fork form's last step also stayed as it was when the page was served."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    p, problems = _watched(browser)
    try:
        with dashboard(db_url, port=port) as url:
            with httpx.Client(base_url=url, timeout=30) as api:
                _start(api, "keyed", "restart-user", id="across-restart")
            p.goto(f"{url}/runs/across-restart")
            expect(p.locator("#run")).to_have_attribute("data-status", "waiting")
        with dashboard(db_url, port=port) as url:  # the same address, a new process's key
            p.click("button[data-action=pause]")
            expect(p.locator("#run")).to_have_attribute("data-status", "paused")
            expect(p.locator("#flash")).not_to_have_class("error")
            p.click("button[data-action=resume]")
            expect(p.locator("#run")).to_have_attribute("data-status", "waiting")
            with httpx.Client(base_url=url, timeout=30) as api:
                assert api.get("/api/runs/across-restart").json()["status"] == "waiting"
    finally:
        p.context.close()
    # The first click is refused (403, which the console notes), the page takes the new token, and
    # the click goes through.
    assert [x for x in problems if "403 (Forbidden)" not in x] == [], problems


def test_the_fork_forms_last_step_follows_the_run(page: Page, base_url: str, api: httpx.Client) -> None:
    """It kept the count of steps the page was served with: forking from a step taken since was
    refused by the browser ("Value must be less than or equal to ...") until a reload."""
    _start(api, "grows", "fork-max", id="fork-max")
    page.goto(f"{base_url}/runs/fork-max")
    expect(page.locator("#run")).to_have_attribute("data-status", "waiting")
    before = int(page.locator("input[name=from_step]").get_attribute("max") or 0)
    assert api.post("/api/runs/fork-max/signals/more", json=None).status_code == 200
    expect(page.locator("#run")).to_have_attribute("data-status", "completed", timeout=20_000)
    expect(page.locator("input[name=from_step]")).to_have_attribute("max", str(before + 1))


def test_a_start_whose_id_names_an_existing_run_says_nothing_was_started(
    page: Page, base_url: str, api: httpx.Client
) -> None:
    """SPEC 3: a start that finds its id returns that run and starts nothing, and says so; the form
    went to the existing run as if it had started it."""
    _start(api, "Tally", "first", id="taken-id")
    page.goto(base_url + "/workflows")
    form = page.locator(f'form.start[data-workflow="{MODULE}.Tally"]')
    form.locator('[data-param="word"]').fill("second")
    form.locator("[data-run-id]").fill("taken-id")
    form.locator('button[type="submit"]').click()
    page.wait_for_url(re.compile(r".*/runs/taken-id$"))
    expect(page.locator("#flash")).to_have_text("Run taken-id existed already: nothing was started; this is that run.")
    page.reload()
    expect(page.locator("#flash")).to_have_text("")  # said once
