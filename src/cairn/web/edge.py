"""The checks every request meets before any route runs: host, auth, CSRF, body size and depth.

One pure ASGI middleware rather than several Starlette `BaseHTTPMiddleware`s: it reads the body
once (so the size limit holds for chunked uploads too, not only for honest Content-Length), refuses
with a clear 4xx before the app does any work, and adds the security headers (CSP with no inline
script, no framing, no sniffing) to every response, errors included.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from cairn.serialization import MAX_NESTING
from cairn.web.security import CSRF_HEADER, SESSION_COOKIE, Guard, is_local_peer, same_origin, served_without_token

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY = 2 * 1024 * 1024
"""Bytes of request body accepted (SPEC's default payload limit); more is a 413."""
MAX_DEPTH = MAX_NESTING + 2
"""Nesting of JSON arrays and objects accepted in a request body; deeper is a 422. A payload may
nest as deeply over HTTP as from Python: Cairn's limit, inside a start's body object and its args."""
PUBLIC = ("/healthz", "/login", "/static/")
"""The only paths served without the token when one is set (assets hold no data)."""
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
"""Swagger UI (vendored, at /api/docs) sets inline styles; its script is still only our files."""
HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # no-referrer made a form post send `Origin: null`, refused
    (b"cross-origin-opener-policy", b"same-origin"),
]


class JSON(JSONResponse):
    """The app's JSON responses. A string holding a lone surrogate (which JSON may carry as an
    escape, so a run's input, output or signal payload can hold one) cannot be written as UTF-8:
    such a body goes out with every non-ASCII character escaped, so it round-trips exactly
    instead of the run becoming unreadable."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode("ascii")


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSON({"error": code, "message": message}, status_code=status)


def json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_KEPT = {b"2f", b"2F", b"25"}  # `/` and `%`: a slash inside a run id or a name, and `%` itself


def routed_path(scope: Scope) -> str:
    """The path to route on: decoded as the server decodes it, but for an escaped `/` (and `%`)
    inside a segment, left escaped for `AnyText` to decode. On the decoded path, run `a/steps`
    (`/api/runs/a%2Fsteps`) was the steps of run `a`, and `POST /api/runs/x%2Fcancel` cancelled `x`."""
    path: str = scope["path"]
    raw = scope.get("raw_path")
    if not raw or b"%2" not in raw.upper():  # the common case: nothing kept escaped (no %2F, no %25)
        return path
    decoded = unquote(raw.decode("latin-1"))
    if not path.endswith(decoded):  # not the path the server decoded (a proxy's root path before it)
        return path
    kept = _ESCAPE.sub(lambda m: m[0].upper() if m[1] in _KEPT else bytes([int(m[1], 16)]), raw)
    return path[: len(path) - len(decoded)] + kept.decode("utf-8", "replace")


def _without_body(send: Send) -> Send:
    """`send` for a HEAD request: the GET's status and headers (its Content-Length too), no body."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            message = {"type": "http.response.body", "body": b"", "more_body": False}
        await send(message)

    return sending


class Edge:
    def __init__(self, app: ASGIApp, guard: Guard, max_body: int = MAX_BODY, max_depth: int = MAX_DEPTH) -> None:
        self.app = app
        self.guard = guard
        self.max_body = max_body
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "HEAD":  # a GET without its body (health probes, link checkers, curl -I)
            scope, send = {**scope, "method": "GET"}, _without_body(send)
        path = scope["path"] = routed_path(scope)
        root = scope.get("root_path", "")
        rel = path[len(root) :] if root and path.startswith(root) else path
        send = _with_headers(send, DOCS_CSP if rel == "/api/docs" else CSP)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if "\x00" in path or b"%00" in scope["query_string"]:
            await error(400, "bad_request", "NUL bytes are not accepted in URLs")(scope, receive, send)
            return
        refused, nonce = self._admit(scope, rel, headers)
        if refused is None:
            state = scope.setdefault("state", {})
            state["csrf"] = self.guard.csrf_for(nonce)
            # Who may see more than a public page holds (the header's database URL, the logout button).
            state["authenticated"] = (
                not self.guard.enabled or nonce is not None or self.guard.bearer_ok(headers.get("authorization"))
            )
            refused, receive = await self._read_body(scope, receive, headers, rel)
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _admit(self, scope: Scope, rel: str, headers: dict[str, str]) -> tuple[Response | None, str | None]:
        """(a refusal, or None; the session nonce of a browser logged in with a cookie)."""
        host = headers.get("host", "")
        method = scope["method"]
        if not self.guard.enabled and not served_without_token(host, headers, scope.get("server")):
            return error(
                403,
                "forbidden",
                f"this app has no API token, so it answers only requests sent to localhost, not to {host!r}; "
                "start it with a token (--token or CAIRN_API_TOKEN) to serve other hosts",
            ), None
        peer = (scope.get("client") or (None,))[0]
        if not self.guard.enabled and not is_local_peer(peer):
            # The Host header is the client's to write: without a token, what decides is where the
            # request came from (an app mounted in a server listening beyond loopback).
            return error(
                403,
                "forbidden",
                f"this app has no API token, so it answers only clients on this machine, not {peer}; "
                "give it a token (--token, CAIRN_API_TOKEN or create_app(client, token=...)) to serve other machines",
            ), None
        origin = headers.get("origin")
        cross = headers.get("sec-fetch-site") in ("cross-site", "same-site")
        if method in UNSAFE and ((origin is not None and not same_origin(origin, host)) or cross):
            return error(403, "forbidden", "cross-origin requests that change state are refused"), None
        public = any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in PUBLIC)
        if self.guard.bearer_ok(headers.get("authorization")):
            return None, None  # an API client: not ambient, so no CSRF token is needed
        nonce = self.guard.session_nonce(_cookie(headers.get("cookie", ""), SESSION_COOKIE))
        if self.guard.enabled and nonce is None and not public:
            if rel.startswith("/api/") or rel == "/api" or method != "GET" or not _wants_html(headers):
                refused = error(401, "unauthorized", "send the API token as `Authorization: Bearer <token>`")
                refused.headers["www-authenticate"] = "Bearer"  # RFC 9110: a 401 names its scheme
                return refused, None
            root = scope.get("root_path", "")
            query = scope["query_string"].decode("latin-1")
            target = quote(root + rel + (f"?{query}" if query else ""))
            return RedirectResponse(f"{root}/login?next={target}", status_code=303), None
        browser = nonce is not None or origin is not None or "sec-fetch-site" in headers
        if method in UNSAFE and browser and rel != "/login" and not self.guard.csrf_ok(nonce, headers.get(CSRF_HEADER)):
            message = "missing or wrong CSRF token (X-CSRF-Token): reload the page and try again"
            return error(403, "csrf", message), nonce
        return None, nonce

    async def _read_body(
        self, scope: Scope, receive: Receive, headers: dict[str, str], rel: str = ""
    ) -> tuple[Response | None, Receive]:
        """Read the whole body (bounded), check its size, type and JSON depth, and replay it to the app."""
        if scope["method"] not in UNSAFE:
            return None, receive
        too_large = error(
            413, "payload_too_large", f"the request body is over the {self.max_body}-byte limit; send less"
        )
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            return too_large, receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return Response(status_code=400), receive
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return too_large, receive
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        kind = headers.get("content-type", "")
        if body and rel.startswith("/api/") and not (kind and is_json_type(kind)):
            # FastAPI hands such a body to the route as bytes: a form-encoded `curl -d` became
            # "not a valid JSON value" (422) or, where any value is accepted, the wrong payload;
            # one sent with no Content-Type at all was "not a valid JSON value" too, even valid JSON.
            given = f"not {kind.split(';')[0]!r}" if kind else "and none was given"
            return error(
                400,
                "bad_request",
                f"the body must be JSON sent with `Content-Type: application/json`, {given} "
                "(curl -d sends a form: add -H 'content-type: application/json')",
            ), receive
        if body and "json" in kind:
            too_deep = error(
                422,
                "too_deep",
                f"the JSON body nests deeper than {self.max_depth} levels (a payload may nest {MAX_NESTING}, "
                "Cairn's nesting limit); flatten it, or store it elsewhere and pass a reference",
            )
            try:
                parsed = json.loads(body)
            except RecursionError:
                return too_deep, receive
            except ValueError:
                parsed = None  # malformed: the route's parser answers that
            if json_depth(parsed) > self.max_depth:
                return too_deep, receive
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, replay


def is_json_type(content_type: str) -> bool:
    """`application/json`, or any `application/*+json`, whatever its parameters."""
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


def _wants_html(headers: dict[str, str]) -> bool:
    """A browser navigating to a page (sent to the login form); any other client gets a 401."""
    return "text/html" in headers.get("accept", "")


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _with_headers(send: Send, csp: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            extra = [(k, v) for k, v in [(b"content-security-policy", csp.encode()), *HEADERS] if k not in present]
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return wrapped


def public_message(request: Request, exc: Exception) -> str:
    """What an HTTP client is told of an error: its message, less the server's database (a
    RunNotFound names it for the CLI's user: which database was looked in)."""
    where = f" in {request.app.state.client}"  # str(client): the URL, its password hidden
    return str(exc).replace(where, "") or type(exc).__name__
