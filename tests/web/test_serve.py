"""The served app stopping and its clients hanging up, on a real uvicorn server and a real port:
`?wait=` requests end with them instead of holding the server for up to 300 s."""

from __future__ import annotations

import asyncio
import time

import httpx

import cairn
from cairn.web import create_app, serve
from tests.conftest import eventually
from tests.helpers import holds
from tests.web import webflows


async def test_a_stopping_server_answers_the_waits_for_runs_in_flight_at_once(client: cairn.Client) -> None:
    """Ctrl-C on `cairn dashboard` or `cairn dev` waited for every open `?wait=60` to time out
    (a second Ctrl-C did not help). The waits now answer what they have: not done yet."""
    handle = await client.start(webflows.quick, "Ada")  # no worker: it will not end
    srv = serve.server(create_app(client), "127.0.0.1", 0)
    task, url = await serve.start(srv)
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        waits = [
            asyncio.ensure_future(http.get(f"/api/runs/{handle.id}/result", params={"wait": 60})),
            asyncio.ensure_future(
                http.post("/api/workflows/tests.web.webflows.quick/runs?wait=60", json={"args": ["Bo"]})
            ),
        ]
        await eventually(lambda: holds(len(srv.server_state.tasks) == 2), what="both requests in the server")
        began = time.monotonic()
        await serve.stop(srv, task)
        stopped = time.monotonic() - began
        result, started = await asyncio.gather(*waits)
    assert stopped < serve.GRACE  # not cancelled at the grace's end either: answered
    assert result.status_code == 200 and result.json()["done"] is False, result.text
    assert started.status_code == 201 and started.json()["done"] is False, started.text
    assert await handle.status() == cairn.RunStatus.PENDING


async def test_a_client_that_hangs_up_ends_its_wait_on_the_server(client: cairn.Client) -> None:
    """Each abandoned wait held a request task and a result waiter on the server until its timeout."""
    handle = await client.start(webflows.quick, "Ada")
    srv = serve.server(create_app(client), "127.0.0.1", 0)
    task, url = await serve.start(srv)
    try:
        http = httpx.AsyncClient(base_url=url, timeout=120)
        waiting = asyncio.ensure_future(http.get(f"/api/runs/{handle.id}/result", params={"wait": 60}))
        await eventually(lambda: holds(len(srv.server_state.tasks) == 1), what="the request in the server")
        waiting.cancel()
        await http.aclose()  # the connection closes: the user gave up
        await eventually(lambda: holds(not srv.server_state.tasks), timeout=5, what="the wait to end")
    finally:
        await serve.stop(srv, task)
