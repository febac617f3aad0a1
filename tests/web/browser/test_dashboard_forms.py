"""The dashboard's forms in headless Chromium while a person uses them: a live update leaves the
keyboard focus and what was typed where they were, a refused start says why beside its form, and
workflows with positional-only parameters, *args and **kwargs start from their forms."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Page, expect

from cairn import workflow
from tests.web import webflows

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("clean_page")]
MODULE = __name__


@workflow
async def by_position(count: int, /, label: str = "x") -> str:
    return f"{label}{count}"


@workflow
async def summed(*numbers: int) -> int:
    return sum(numbers)


@workflow
async def tagged(prefix: str, *numbers: int, sep: str = "-", **tags: str) -> str:
    return prefix + sep.join(str(n) for n in numbers) + "".join(f" {k}={v}" for k, v in sorted(tags.items()))


@workflow
async def listed(ids: list[int]) -> int:
    return len(ids)


def _start_greeting(api: httpx.Client, run_id: str) -> None:
    assert webflows.Greeting
    r = api.post("/api/workflows/tests.web.webflows.Greeting/runs", json={"args": ["ada"], "id": run_id})
    assert r.status_code == 201, r.text


def _focused(page: Page) -> str:
    """The focused element as tag and naming attributes, to compare with where focus was put."""
    return str(
        page.evaluate(
            """() => { const el = document.activeElement;
            return `${el.tagName} ${el.getAttribute('href') || ''} ${el.dataset.action || ''} ${el.name || ''}`; }"""
        )
    )


def test_a_live_update_of_the_runs_page_keeps_the_focused_run_link(
    page: Page, api: httpx.Client, base_url: str
) -> None:
    """Every update of the list put the keyboard focus back at the page's start: a keyboard user
    could not stay on a run."""
    _start_greeting(api, "focus-list-1")
    page.goto(base_url + "/")
    link = page.locator('tr[data-run="focus-list-1"] td.id a')
    link.focus()
    before = _focused(page)
    assert before.startswith("A ")
    _start_greeting(api, "focus-list-2")  # the list updates to show it
    expect(page.locator('tr[data-run="focus-list-2"]')).to_be_visible()
    assert _focused(page) == before
    page.keyboard.press("Enter")  # the focus is usable: it opens that run
    page.wait_for_url(re.compile(r".*/runs/focus-list-1$"))


def test_a_live_update_of_a_run_page_keeps_focus_and_typing(page: Page, api: httpx.Client, base_url: str) -> None:
    """The run's controls were replaced under the focus at each change of the run; what is typed
    into its signal form meanwhile stays, and typing goes on where it was."""
    _start_greeting(api, "focus-run-1")
    page.goto(base_url + "/runs/focus-run-1")
    expect(page.locator("#run-status")).to_have_text("waiting")
    payload = page.locator('#signal-form textarea[name="payload"]')
    payload.fill("")
    payload.type('{"by": ')
    assert api.post("/api/runs/focus-run-1/pause").status_code == 200
    expect(page.locator("#run-status")).to_have_text("paused")
    page.keyboard.type('"ed"}')  # still typing into the payload, at its end
    expect(payload).to_have_value('{"by": "ed"}')
    expect(payload).to_be_focused()

    cancel = page.locator('button[data-action="cancel"]')
    cancel.focus()
    assert api.post("/api/runs/focus-run-1/resume").status_code == 200
    expect(page.locator("#run-status")).to_have_text("waiting")
    expect(cancel).to_be_focused()


def test_a_refused_start_says_why_beside_its_form(page: Page, base_url: str) -> None:
    """The refusal went to the top of the page, out of sight of a form further down, and named
    no field."""
    page.goto(base_url + "/workflows")
    form = page.locator(f'form.start[data-workflow="{MODULE}.listed"]')
    field = form.locator('[data-param="ids"]')
    field.fill('["one"]')
    form.locator('button[type="submit"]').click()
    error = form.locator("[data-form-error]")
    expect(error).to_be_visible()
    expect(error).to_contain_text("ids")
    expect(error).to_be_in_viewport()
    expect(field).to_be_focused()
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#flash")).to_have_text("")
    assert page.url.endswith("/workflows")  # nothing started


@pytest.mark.parametrize(
    ("workflow_name", "values", "expected"),
    [
        ("by_position", {"count": "5", "label": "n"}, "n5"),
        ("by_position", {"count": "7"}, "x7"),
        ("summed", {"numbers": "[1, 2, 30]"}, "33"),
        ("tagged", {"prefix": "p", "numbers": "[1, 2]", "tags": '{"b": "2", "a": "1"}'}, "p1-2 a=1 b=2"),
    ],
)
def test_workflows_taking_positional_only_and_star_args_start_from_the_form(
    page: Page, base_url: str, api: httpx.Client, workflow_name: str, values: dict[str, str], expected: str
) -> None:
    """Every field went by name: Python refuses a positional-only parameter or *args by name, so
    the start was refused ("got an unexpected argument")."""
    run_id = f"form-{workflow_name}-{len(values)}"
    page.goto(base_url + "/workflows")
    form = page.locator(f'form.start[data-workflow="{MODULE}.{workflow_name}"]')
    for name, text in values.items():
        form.locator(f'[data-param="{name}"]').fill(text)
    form.locator("[data-run-id]").fill(run_id)
    form.locator('button[type="submit"]').click()
    page.wait_for_url(re.compile(rf".*/runs/{run_id}$"))
    expect(page.locator("#run-status")).to_have_text("completed")
    assert str(api.get(f"/api/runs/{run_id}").json()["result"]) == expected
