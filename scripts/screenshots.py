"""Take the README's dashboard screenshots: docs/img/runs.png and docs/img/run.png.

    .venv/bin/python scripts/screenshots.py

Runs every example (`examples.run_all`) on a fresh SQLite file, adds a few runs left waiting or
paused, serves the dashboard beside a worker, and photographs it in Debian's headless Chromium
(Playwright, /usr/bin/chromium). Light theme, 1366x900, as on a laptop.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples import approval, run_all  # noqa: E402

import cairn  # noqa: E402
from cairn.web import create_app, serve  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


async def main() -> None:
    url = f"sqlite:///{tempfile.mkdtemp(prefix='cairn-shots-')}/shots.db"
    with contextlib.redirect_stdout(io.StringIO()):
        assert await run_all.main(url) == 0
    client = cairn.Client(url)
    async with cairn.Worker(client, poll_interval=0.1):
        for order in ("order-8", "order-9"):
            await client.start(approval.OrderApproval, order, id=f"approval-{order}")
        paused = await client.start(approval.OrderApproval, "order-10", id="approval-order-10")
        await approval.wait_for_status(paused, "waiting")
        await paused.pause()
        richest = next(r for r in await client.list_runs(workflow=approval.OrderApproval) if r.status == "completed")
        srv = serve.server(create_app(client), "127.0.0.1", 0)
        task, base = await serve.start(srv)
        try:
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = await browser.new_page(viewport={"width": 1366, "height": 900}, color_scheme="light")
                await page.goto(base)
                await page.screenshot(path=str(ROOT / "docs/img/runs.png"))
                await page.goto(f"{base}runs/{richest.id}")
                await page.locator("details.step").nth(1).locator("summary").click()
                await page.screenshot(path=str(ROOT / "docs/img/run.png"), full_page=True)
                await browser.close()
        finally:
            await serve.stop(srv, task)
    await client.close()
    print("wrote docs/img/runs.png and docs/img/run.png")


if __name__ == "__main__":
    asyncio.run(main())
