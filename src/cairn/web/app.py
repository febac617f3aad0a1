"""`create_app(client, token=None)`: the HTTP API and the dashboard as one ASGI app.

Users mount it in their own FastAPI/Starlette app (`app.mount("/cairn", create_app(client))`) or
serve it alone (`cairn dashboard`, `cairn dev`). Everything goes through the `Client` it is given.
Errors of every kind leave as JSON `{"error": code, "message": ...}` with the status SPEC names:
the client's exceptions are mapped here once, so no route catches them itself.
"""

from __future__ import annotations

import asyncio
import os
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

import cairn.errors
from cairn.client.client import Client
from cairn.errors import (
    IllegalTransition,
    PayloadTooLarge,
    RunIdConflict,
    RunIdTaken,
    RunNotFound,
    SerializationError,
    StoreError,
    UnknownWorkflowError,
)
from cairn.web import api, pages
from cairn.web.edge import JSON, MAX_BODY, Edge, error, public_message
from cairn.web.security import Guard

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid",
    501: "not_implemented",
    503: "unavailable",
}


def create_app(client: Client, token: str | None = None, *, max_body: int = MAX_BODY) -> FastAPI:
    """The ASGI app serving the HTTP API under `/api`, the dashboard pages and `/healthz`.

    With `token` (else CAIRN_API_TOKEN), every route but `/healthz` (and the login page and static
    assets) needs it; without one, only requests addressed to localhost are answered."""
    if token is None:  # a token set in the environment protects every app, mounted ones included
        token = os.environ.get("CAIRN_API_TOKEN")
    app = FastAPI(
        title="Cairn",
        version=cairn.__version__,
        description="Durable workflows: start runs by workflow name, read them step by step, steer them.",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
        default_response_class=JSON,
    )
    app.state.client = client
    app.state.guard = Guard(token)
    app.state.stopping = asyncio.Event()  # set by `serve.stop`: waits for runs answer at once
    app.include_router(api.health)
    app.include_router(api.router)
    app.include_router(pages.router)
    static = resources.files("cairn.web").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    _handle_errors(app)
    app.add_middleware(Edge, guard=app.state.guard, max_body=max_body)
    if app.state.guard.enabled:
        _describe_the_token(app)
    return app


def _describe_the_token(app: FastAPI) -> None:
    """The OpenAPI document says that every operation but /healthz takes the bearer token, so that
    generated clients send it and /api/docs offers to authorize with it."""
    made = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = made()
            schema.setdefault("components", {})["securitySchemes"] = {
                "token": {"type": "http", "scheme": "bearer", "description": "The API token (CAIRN_API_TOKEN)."}
            }
            for path, operations in schema.get("paths", {}).items():
                if path != "/healthz":
                    for operation in operations.values():
                        operation["security"] = [{"token": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _handle_errors(app: FastAPI) -> None:
    mapped: list[tuple[type[Exception], int, str]] = [
        (RunIdConflict, 409, "conflict"),  # an id held by a run of another workflow (SPEC 3)
        (RunIdTaken, 409, "conflict"),  # a fork's id held by a run
        (RunNotFound, 404, "not_found"),
        (UnknownWorkflowError, 404, "not_found"),
        (IllegalTransition, 409, "conflict"),
        (PayloadTooLarge, 413, "payload_too_large"),
        (SerializationError, 422, "invalid"),
        (StoreError, 503, "unavailable"),  # the database down or locked: its message says which (no password)
        (TypeError, 422, "invalid"),
        (ValueError, 422, "invalid"),
    ]
    for exc_type, status, code in mapped:
        app.add_exception_handler(exc_type, _mapper(status, code))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":  # no route: say which, and where the routes are
            detail = f"no route {request.method} {request.url.path}; the API's routes are listed at /api/docs"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow")
            detail = f"{request.method} is not allowed on {request.url.path}" + (f"; use {allowed}" if allowed else "")
        answer = error(exc.status_code, _CODES.get(exc.status_code, "error"), detail)
        answer.headers.update(exc.headers or {})
        return answer

    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # Still JSON, as every other answer; the traceback goes to the server's log (Starlette
        # re-raises after this), never to the client: it may quote data or configuration.
        message = f"internal error ({type(exc).__name__}); the server's log has the details"
        return error(500, "internal", message)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        if errors and errors[0].get("type") == "json_invalid":  # not JSON at all: a bad request
            return error(400, "bad_request", describe_invalid(errors))
        return error(422, "invalid", describe_invalid(errors))

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(Exception, internal)


def _mapper(status: int, code: str) -> Any:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error(status, code, public_message(request, exc))

    return handle


def describe_invalid(errors: Any) -> str:
    """One line per problem: `query.limit: Input should be less than or equal to 500`."""
    lines = []
    for e in list(errors)[:10]:
        where = ".".join(str(p) for p in e.get("loc", ()))
        lines.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    if errors and errors[0].get("type") == "json_invalid":
        return "the body is not valid JSON: " + "; ".join(lines)
    return "; ".join(lines) or "invalid request"
