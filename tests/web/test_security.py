"""SPEC section 6 at the HTTP edge: token on every route (listed from the app itself), sessions,
CSRF, host and origin checks, escaping, CSP, secrets masked, and limits."""

from __future__ import annotations

import hashlib
import hmac
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

import cairn
from cairn.redaction import redact
from cairn.store.open import redact_url
from cairn.web import create_app, serve
from cairn.web.edge import PUBLIC
from tests.web import webflows
from tests.web.conftest import TOKEN

pytestmark = pytest.mark.timeout(60)

BEARER = {"Authorization": f"Bearer {TOKEN}"}
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
"""What a browser sends when it navigates to a page."""


def _flatten(routes: list[Any], prefix: str = "") -> list[Any]:
    """The app's routes with included routers opened (newer FastAPI keeps them as one entry)."""
    out = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            out += _flatten(list(inner.routes), prefix + route.include_context.prefix)
        else:
            out.append((prefix, route))
    return out


def _every_route(client: cairn.Client) -> list[tuple[str, str]]:
    """(method, concrete path) for every route the app serves, from its own route table."""
    out = []
    for prefix, route in _flatten(create_app(client, token=TOKEN).routes):
        if isinstance(route, Mount):
            out.append(("GET", f"{prefix}{route.path}/app.css"))
            continue
        assert isinstance(route, APIRoute | Route), route
        path = prefix + re.sub(r"\{(\w+)(:\w+)?\}", "x", route.path)
        out += [(m, path) for m in sorted(route.methods or ()) if m != "HEAD"]
    return out


def _public(path: str) -> bool:
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in PUBLIC)


async def test_every_route_but_the_public_ones_needs_the_token(authed: httpx.AsyncClient, client: cairn.Client) -> None:
    routes = _every_route(client)
    assert len(routes) > 25  # the enumeration found the app's routes
    assert {p for _, p in routes if _public(p)} == {"/healthz", "/login", "/static/app.css"}
    for method, path in routes:
        if _public(path):
            continue
        r = await authed.request(method, path)
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.json()["error"] == "unauthorized"
        if not path.startswith("/api/") and method == "GET":  # a browser opening a page logs in first
            page = await authed.request(method, path, headers=HTML)
            assert page.status_code == 303 and page.headers["location"].startswith("/login?next="), (method, path)
        wrong = await authed.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, (method, path)
        ok = await authed.request(method, path, headers=BEARER)
        assert ok.status_code not in (401, 403, 500), (method, path, ok.status_code, ok.text[:200])
        assert not ok.headers.get("location", "").startswith("/login?next="), (method, path)


async def test_the_public_routes_hold_no_data(authed: httpx.AsyncClient) -> None:
    assert (await authed.get("/healthz")).status_code == 200
    assert (await authed.get("/static/app.css")).status_code == 200
    login = await authed.get("/login")
    assert login.status_code == 200 and 'name="token"' in login.text


async def test_browser_login_session_and_csrf(authed: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.start(webflows.Greeting, "x", id="sess-1")
    wrong = await authed.post("/login", data={"token": "nope", "next": "/"})
    assert wrong.status_code == 401 and "cairn_session" not in wrong.headers.get("set-cookie", "")
    ok = await authed.post("/login", data={"token": TOKEN, "next": "//evil.example/x"})
    assert ok.status_code == 303 and ok.headers["location"] == "/"  # never off-site
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = await authed.get("/runs/sess-1")  # the cookie jar carries the session now
    assert page.status_code == 200
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert csrf is not None
    origin = {"Origin": "http://dash.example:8700"}
    refused = await authed.post("/api/runs/sess-1/pause", headers=origin)
    assert refused.status_code == 403 and refused.json()["error"] == "csrf"
    forged = await authed.post("/api/runs/sess-1/pause", headers={**origin, "X-CSRF-Token": "0" * 64})
    assert forged.status_code == 403
    done = await authed.post("/api/runs/sess-1/pause", headers={**origin, "X-CSRF-Token": csrf.group(1)})
    assert done.status_code == 200 and done.json()["status"] == "paused"
    good = authed.cookies["cairn_session"]
    authed.cookies.clear()
    authed.cookies.set("cairn_session", good[:-1] + ("0" if good[-1] != "0" else "1"))
    assert (await authed.get("/api/runs")).status_code == 401


def _sha256_keyed(token: str, message: str) -> str:
    """An HMAC as the app keyed it before: by one SHA-256 of the token, a check of guesses at hash speed."""
    key = hashlib.sha256(b"cairn-web-v1:" + token.encode()).digest()
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


async def test_a_visitor_without_the_token_is_shown_nothing_derived_from_it(authed: httpx.AsyncClient) -> None:
    """The public login page's CSRF meta tag was HMAC(SHA-256(token), "csrf.anonymous"): anyone
    could test token guesses against it offline, with no request to the server and no limit."""
    verifier = _sha256_keyed(TOKEN, "csrf.anonymous")
    for method, path, headers in [
        ("GET", "/login", HTML),
        ("GET", "/login?next=/workflows", HTML),
        ("GET", "/", HTML),
        ("GET", "/api/runs", {}),
        ("GET", "/healthz", {}),
        ("GET", "/static/app.css", {}),
        ("GET", "/api/runs", {"Authorization": "Bearer nope"}),
    ]:
        r = await authed.request(method, path, headers=headers)
        assert verifier not in r.text and verifier not in str(r.headers), path
        assert re.search(r'name="csrf-token" content="[^"]', r.text) is None, path  # no CSRF token at all
    wrong = await authed.post("/login", data={"token": "nope", "next": "/"})
    assert wrong.status_code == 401 and verifier not in wrong.text
    assert re.search(r'name="csrf-token" content="[^"]', wrong.text) is None
    # The login form is still kept from other sites, by where the request comes from.
    for foreign in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
        forged = await authed.post("/login", data={"token": TOKEN, "next": "/"}, headers=foreign)
        assert forged.status_code == 403 and "cairn_session" not in forged.headers.get("set-cookie", ""), foreign
    ok = await authed.post("/login", data={"token": TOKEN, "next": "/"}, headers={"Origin": "http://dash.example:8700"})
    assert ok.status_code == 303 and (await authed.get("/api/runs")).status_code == 200
    nonce, expires, signature = authed.cookies["cairn_session"].split(".")
    assert signature != _sha256_keyed(TOKEN, f"session.{nonce}.{expires}")  # a cookie is no fast check either
    page = await authed.get("/")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert csrf is not None and csrf.group(1) != _sha256_keyed(TOKEN, f"csrf.{nonce}")


async def test_without_a_token_a_rebound_host_name_is_refused_over_a_socket(client: cairn.Client) -> None:
    """A page at http://intranet:PORT, the name rebound to 127.0.0.1, read and steered every run:
    a single-label Host was answered unless the request carried Sec-Fetch-* headers, which Chromium
    does not send to a plain-http origin other than localhost."""
    await client.start(webflows.Greeting, "x", id="rebound-1")
    srv = serve.server(create_app(client), "127.0.0.1", 0)
    task, url = await serve.start(srv)
    port = urlsplit(url).port
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as h:
            for host in (f"intranet:{port}", "intranet", "testserver", f"evil.example:{port}"):
                for method, path in [("GET", "/api/runs"), ("GET", "/"), ("POST", "/api/runs/rebound-1/cancel")]:
                    r = await h.request(method, path, headers={"Host": host})
                    assert r.status_code == 403 and r.json()["error"] == "forbidden", (host, path, r.text)
                    message = r.json()["message"]
                    assert "only requests sent to localhost" in message and repr(host) in message
            for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
                assert (await h.get("/api/runs", headers={"Host": host})).status_code == 200, host
    finally:
        await serve.stop(srv, task)
    assert await client.get("rebound-1").status() == cairn.RunStatus.PENDING


async def test_without_a_token_only_localhost_is_served(client: cairn.Client) -> None:
    app = create_app(client)
    for host, status in [("127.0.0.1:8700", 200), ("localhost:8700", 200), ("[::1]:8700", 200), ("evil.example", 403)]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=f"http://{host}") as h:
            r = await h.get("/api/runs")
            assert r.status_code == status, host


async def test_cross_origin_and_tokenless_browser_posts_are_refused(
    http: httpx.AsyncClient, client: cairn.Client
) -> None:
    await client.start(webflows.Greeting, "x", id="xo-1")
    cross = await http.post("/api/runs/xo-1/pause", headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403 and cross.json()["error"] == "forbidden"
    sneaky = await http.post("/api/runs/xo-1/pause", headers={"Sec-Fetch-Site": "cross-site"})
    assert sneaky.status_code == 403
    same = await http.post("/api/runs/xo-1/pause", headers={"Origin": "http://127.0.0.1:8700"})
    assert same.status_code == 403 and same.json()["error"] == "csrf"  # a browser must show the page's token
    page = await http.get("/")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert csrf is not None
    ok = await http.post(
        "/api/runs/xo-1/pause", headers={"Origin": "http://127.0.0.1:8700", "X-CSRF-Token": csrf.group(1)}
    )
    assert ok.status_code == 200
    script = await http.post("/api/runs/xo-1/resume")  # curl, a script: no Origin, no browser
    assert script.status_code == 200


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        self.handlers += [k for k in names if k.startswith("on")]
        if tag == "script":
            self.in_script = "src" not in names
        if tag == "a" and (names.get("href") or "").lower().startswith("javascript:"):
            self.handlers.append("javascript: href")

    def handle_data(self, data: str) -> None:
        if self.in_script and data.strip():
            self.inline.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self.in_script = False


XSS = "<script>alert(1)</script>"


async def test_pages_escape_user_data_carry_a_csp_and_no_inline_script(
    http: httpx.AsyncClient, client: cairn.Client
) -> None:
    await client.start(webflows.Greeting, XSS, id='x"><img src=x onerror=alert(1)>')
    await client.start(webflows.quick, XSS, id="plain")
    pages = [
        "/",
        "/?q=x",
        "/runs/plain",
        "/runs/x%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E",
        "/workflows",
        "/workers",
        "/queues",
        "/schedules",
        "/api/docs",
        "/partials/runs",
        "/runs/missing",
    ]
    for path in pages:
        r = await http.get(path)
        assert r.status_code in (200, 404), path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert r.headers["x-frame-options"] == "DENY"
        parser = _Scripts()
        parser.feed(r.text)
        assert parser.inline == [] and parser.handlers == [], path
        assert XSS not in r.text and "<img src=x" not in r.text, path
    run = await http.get("/runs/plain")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in run.text


async def test_secrets_and_passwords_never_shown(http: httpx.AsyncClient, client: cairn.Client) -> None:
    await client.start(webflows.Greeting, "x", id="sec-1")
    assert redact({"Password": 1, "n": {"API_KEY": 2, "l": [{"client_secret": 3}]}, "author": 4}) == {
        "Password": "***",
        "n": {"API_KEY": "***", "l": [{"client_secret": "***"}]},
        "author": 4,
    }
    assert redact({"Authorization": "Bearer x", "auth": 1, "basic_auth": 2, "authority": 3}) == {
        "Authorization": "***",
        "auth": "***",
        "basic_auth": "***",
        "authority": 3,
    }
    assert (
        redact_url("postgresql://u:hunter2@db:5432/x?password=hunter2") == "postgresql://u:***@db:5432/x?password=***"
    )
    assert redact_url("sqlite:///./cairn.db") == "sqlite:///./cairn.db"
    assert redact_url("host=db user=u password='hunter 2'") == "host=db user=u password=***"
    # libpq decodes a query's escaped key: `passwor%64=` sets the password too
    assert redact_url("postgresql://u@db/x?passwor%64=hunter2") == "postgresql://u@db/x?passwor%64=***"
    assert redact_url("postgresql://u@db/x?sslmode=require&%70assword=hunter2&PASSWORD=hunter2") == (
        "postgresql://u@db/x?sslmode=require&%70assword=***&PASSWORD=***"
    )
    assert redact_url("postgresql://u@db/x?sslpassword=hunter2&application_name=a") == (
        "postgresql://u@db/x?sslpassword=***&application_name=a"
    )
    assert str(cairn.Client("postgresql://u:hunter2@db:5432/x")) == "postgresql://u:***@db:5432/x"
    # libpq takes a quote or a space in a password as it is: such a password was printed in clear
    for password in ("s3cr'tPW", 's3cr"tPW', "my hunter2", "p@ss'wo rd"):
        assert redact_url(f"postgresql://u:{password}@db:5432/x") == "postgresql://u:***@db:5432/x"
        assert str(cairn.Client(f"postgresql://u:{password}@db/x")) == "postgresql://u:***@db/x"
    quoted = 'cannot connect to "postgresql://u:hunter2@db/x": refused; mail admin@example.com'
    assert redact_url(quoted) == 'cannot connect to "postgresql://u:***@db/x": refused; mail admin@example.com'
    page = await http.get("/")
    assert "hunter2" not in page.text


def test_an_empty_token_is_refused(client: cairn.Client) -> None:
    with pytest.raises(ValueError, match="empty"):
        create_app(client, token=" ")


@pytest.mark.parametrize("token", ["pässwörd-ü", "voilà", "トークン-0123"])
async def test_a_token_in_any_script_works_as_a_bearer_header_and_in_the_login_form(
    client: cairn.Client, token: str
) -> None:
    """A non-ASCII token logged in through the form but never matched a Bearer header: the header's
    bytes, read as Latin-1, were encoded as UTF-8 again before the comparison."""
    transport = httpx.ASGITransport(app=create_app(client, token=token))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.example") as h:
        for sent in (b"Bearer " + token.encode(), b"bearer  " + token.encode() + b" "):
            assert (await h.get("/api/runs", headers={"Authorization": sent})).status_code == 200, sent
        for wrong in (b"Bearer " + token.encode()[:-1], b"Bearer " + token.encode("utf-16-le")):
            assert (await h.get("/api/runs", headers={"Authorization": wrong})).status_code == 401, wrong
        assert (await h.post("/login", data={"token": f" {token}\n", "next": "/"})).status_code == 303  # pasted
        assert (await h.get("/api/runs")).status_code == 200


@pytest.mark.parametrize("token", [" tok-0123", "tok-0123\n", "\ttok-0123", "tok-0123\u00a0"])
def test_a_token_with_whitespace_around_it_is_refused(client: cairn.Client, token: str) -> None:
    """No client could send it: HTTP drops the spaces around a header's value, so `Bearer <token>`
    never matched and the app could only be used through the login form."""
    with pytest.raises(ValueError, match="begins or ends with whitespace"):
        create_app(client, token=token)
