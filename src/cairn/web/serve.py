"""Serving the app with uvicorn, for `cairn dashboard` and `cairn dev` (same process, same loop).

The caller owns the process's signals (the worker's graceful stop in `cairn dev`), so uvicorn's
own signal capture is switched off and the caller sets `should_exit`. Binding beyond loopback
without a token is refused here, before anything listens.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from cairn.web.api import stopping
from cairn.web.security import is_loopback_host


def check_bind(host: str, token: str | None) -> None:
    """ValueError when `host` is reachable from other machines and no token protects the app."""
    if token is None and not is_loopback_host(host):
        raise ValueError(
            f"refusing to serve the dashboard on {host} without a token: anyone who can reach it could "
            "read and control every run. Set --token (or CAIRN_API_TOKEN), or bind to 127.0.0.1"
        )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the command's own handlers stop us (should_exit)

    def install_signal_handlers(self) -> None:  # uvicorn before 0.29
        return


GRACE = 5
"""Seconds a stopping server lets requests in flight finish before it cancels them. A wait for a
run (`?wait=`) answers at once when the server stops; this bounds whatever else is slow."""


def server(app: FastAPI, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_graceful_shutdown=GRACE,
    )
    return _Server(config)


async def start(srv: uvicorn.Server) -> tuple[asyncio.Task[None], str]:
    """Start serving in a task; (the task, the URL it answers on) once it listens."""
    task = asyncio.create_task(_serve(srv))
    while not srv.started:
        if task.done():
            task.result()  # raises why it could not start (port taken...)
            raise OSError(f"the dashboard could not listen on {srv.config.host}:{srv.config.port}")
        await asyncio.sleep(0.02)
    sock = srv.servers[0].sockets[0].getsockname()
    host = srv.config.host
    shown = f"[{host}]" if ":" in host else host
    return task, f"http://{shown}:{sock[1]}/"


async def _serve(srv: uvicorn.Server) -> None:
    """`srv.serve()`, with a start that fails (a port taken, a host that does not resolve) an
    OSError saying why: uvicorn exits the process (SystemExit), which leaves the event loop itself,
    as two tracebacks under "Task exception was never retrieved"."""
    try:
        await srv.serve()
    except SystemExit as exc:
        why = exc.__context__ or "uvicorn could not start"
        raise OSError(f"the dashboard could not listen on {srv.config.host}:{srv.config.port}: {why}") from None


async def stop(srv: uvicorn.Server, task: asyncio.Task[None]) -> None:
    """Stop serving: waits for runs answer now (a server stopping waited for each `?wait=` request
    in flight to time out, up to 300 s), then uvicorn drains the rest within `GRACE`."""
    stopping(srv.config.app).set()
    srv.should_exit = True
    with contextlib.suppress(asyncio.CancelledError, SystemExit):
        await task
