"""A real dashboard in a real browser: uvicorn (with an embedded worker) on a free port in a
background thread, and one headless Chromium session per module (Debian's /usr/bin/chromium,
driven by Playwright; never a downloaded browser)."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

import cairn
from cairn.web import create_app, serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def dashboard(db_url: str, token: str | None = None, port: int = 0) -> Iterator[str]:
    """Serve the app and a worker on `db_url` until the block ends; yields the base URL."""
    ready: queue.Queue[str | BaseException] = queue.Queue()
    stop = threading.Event()

    async def main() -> None:
        client = cairn.Client(db_url)
        try:
            await client.store.open()
            async with cairn.Worker(client, poll_interval=0.1, lease=5.0):
                srv = serve.server(create_app(client, token=token), "127.0.0.1", port)
                task, url = await serve.start(srv)
                ready.put(url)
                await asyncio.to_thread(stop.wait)
                await serve.stop(srv, task)
        except BaseException as exc:
            ready.put(exc)
            raise
        finally:
            await client.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="cairn-dashboard", daemon=True)
    thread.start()
    got = ready.get(timeout=30)
    if isinstance(got, BaseException):
        raise got
    try:
        yield got.rstrip("/")
    finally:
        stop.set()
        thread.join(timeout=30)


def launch(playwright: object) -> Browser:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install -y chromium` (.ci/run installs it)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("browser") / "dash.db"
    with dashboard(f"sqlite:///{db}") as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def page(browser: Browser) -> Iterator[Page]:
    """One page for the module; every test checks no dialog opened and the CSP was never broken."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    p = context.new_page()
    p.set_default_timeout(15_000)
    dialogs: list[str] = []
    problems: list[str] = []
    p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    p.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    p.on("pageerror", lambda e: problems.append(str(e)))
    p.dialogs = dialogs  # type: ignore[attr-defined]
    p.problems = problems  # type: ignore[attr-defined]
    yield p
    context.close()


@pytest.fixture(scope="module")
def api(base_url: str) -> Iterator[httpx.Client]:
    """The dashboard's JSON API, to set up what a page then shows."""
    with httpx.Client(base_url=base_url, timeout=30) as h:
        yield h


@pytest.fixture
def clean_page(page: Page) -> Iterator[None]:
    """After the test: no dialog opened, no script error, the CSP never broken."""
    yield
    assert page.dialogs == []  # type: ignore[attr-defined]
    assert page.problems == []  # type: ignore[attr-defined]
