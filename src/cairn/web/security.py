"""Who may use the web app, and what of the data a page may show.

Two modes. With a token, every route but `/healthz`, `/login` and the static assets needs it: an
API client sends `Authorization: Bearer <token>`; a browser logs in once and gets a signed,
expiring session cookie (HttpOnly, SameSite=Strict), and each of its state-changing requests
carries a CSRF token derived from that session. A visitor with no session is given nothing derived
from the token (see `Guard.csrf_for`); the login form is kept from other sites by the Origin and
`Sec-Fetch-Site` checks instead. Without a token (the default, for a dashboard on 127.0.0.1)
requests over a socket must name a loopback host, so a DNS-rebinding page cannot reach the app (a
single-label name such as an in-process test client's `testserver` is also answered, but only
in-process: see `served_without_token`), and a browser's state-changing requests still carry the
CSRF token, which only the app's own pages know.
Tokens and signatures are compared with `hmac.compare_digest`.

Sessions are stateless (nonce, expiry and an HMAC keyed by the token), so several app processes
behind one token accept each other's cookies and a new token logs everyone out. Rejected: a
server-side session table (state to keep, in a database the web layer must not write to). The key
is the token stretched by scrypt (once, at start-up), so a cookie is no fast check of token guesses.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

SESSION_COOKIE = "cairn_session"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL = 12 * 3600
"""Seconds a browser login lasts."""


SCRYPT = {"n": 2**14, "r": 8, "p": 1}
"""scrypt's cost for the session key: about 50 ms and 16 MiB, paid once per app."""


def check_token(token: str | None) -> None:
    """ValueError, saying why, for a token no client could send."""
    if token is None:
        return
    if not token.strip():
        raise ValueError(
            "the API token must not be empty; omit it (and unset CAIRN_API_TOKEN) to serve without one on 127.0.0.1"
        )
    if token != token.strip():
        # HTTP drops the spaces around a header's value: `Bearer <token>` could never match.
        raise ValueError("the API token begins or ends with whitespace, which no client can send: remove it")


def session_key(token: str) -> bytes:
    """The key that signs sessions and CSRF tokens. A fixed salt, so that every app process
    behind one token derives the same key; scrypt, so that a cookie (an HMAC under this key) is
    no fast offline check of guessed tokens, as a SHA-256 of the token was."""
    return hashlib.scrypt(token.encode(), salt=b"cairn-web-v2", dklen=32, **SCRYPT)


class Guard:
    """The app's token (or none) and everything derived from it."""

    def __init__(self, token: str | None) -> None:
        check_token(token)
        self.token = token
        # Without a token, a random key per app: CSRF tokens are only known to pages it served.
        self._key = session_key(token) if token is not None else secrets.token_bytes(32)

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def _sign(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def bearer_ok(self, header: str | None) -> bool:
        """Whether an Authorization header (its bytes as Latin-1, as the edge reads headers) holds
        the token. Compared as bytes, the header's as sent with the token's UTF-8: a token with
        `ä` never matched, its header's bytes being re-encoded as UTF-8 a second time."""
        if self.token is None or not header:
            return False
        scheme, _, value = header.partition(" ")
        try:
            sent = value.encode("latin-1")
        except UnicodeEncodeError:  # not a header's bytes
            return False
        # ASCII whitespace only: str.strip() also ate a UTF-8 byte read as Latin-1 (`à` ends in 0xA0).
        return scheme.lower() == "bearer" and hmac.compare_digest(sent.strip(), self.token.encode())

    def token_ok(self, given: str) -> bool:
        """Whether the login form's token (decoded text) is the token; spaces around it are a
        paste's, never the token's (`check_token`)."""
        return self.token is not None and hmac.compare_digest(given.strip().encode(), self.token.encode())

    def new_session(self) -> str:
        nonce, expires = secrets.token_urlsafe(16), int(time.time()) + SESSION_TTL
        return f"{nonce}.{expires}.{self._sign(f'session.{nonce}.{expires}')}"

    def session_nonce(self, cookie: str | None) -> str | None:
        """The nonce of a valid, unexpired session cookie, else None."""
        if self.token is None or not cookie or cookie.count(".") != 2:
            return None
        nonce, expires, signature = cookie.split(".")
        if not hmac.compare_digest(signature.encode(), self._sign(f"session.{nonce}.{expires}").encode()):
            return None
        if not expires.isdigit() or int(expires) < time.time():
            return None
        return nonce

    def csrf_for(self, nonce: str | None) -> str:
        """The CSRF token of a session, or of the tokenless app when `nonce` is None; with a token
        and no session, none (""). That one was a fixed HMAC keyed by the token, on the public
        login page: anyone could test token guesses against it offline."""
        if nonce is None and self.token is not None:
            return ""
        return self._sign(f"csrf.{nonce or 'anonymous'}")

    def csrf_ok(self, nonce: str | None, given: str | None) -> bool:
        expected = self.csrf_for(nonce)
        return bool(given) and bool(expected) and hmac.compare_digest((given or "").encode(), expected.encode())


def is_loopback_host(host: str) -> bool:
    """Whether a Host header (or bind address) names this machine only."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8700
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name in ("localhost", "localhost.") or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_local_peer(peer: str | None) -> bool:
    """Whether a request's client address (the ASGI scope's `client`) is on this machine: a loopback
    address, or no IP address at all (an in-process test client names itself, e.g. `testclient`)."""
    if not peer:
        return True
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return True  # not an address: a transport that names itself, not a socket peer
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 on a dual-stack socket
    return address.is_loopback


def in_process(server: Sequence[object] | None) -> bool:
    """Whether a request came from an in-process client (httpx's `ASGITransport`, Starlette's
    `TestClient`), not over a socket, judged by the ASGI scope's `server`: such a client fills it
    from the URL (`("testserver", 80)`), a server with the address it listens on (an IP address;
    None on a Unix socket). Not by `client`: httpx's transport says it is 127.0.0.1."""
    if not server or not isinstance(server[0], str):
        return False
    try:
        ipaddress.ip_address(server[0].split("%", 1)[0])
    except ValueError:
        return True  # a name where a socket has an address
    return False


def served_without_token(host: str, headers: Mapping[str, str], server: Sequence[object] | None) -> bool:
    """Whether an app with no token answers a request sent to `host` (its Host header), which
    came to the server listening at `server` (the ASGI scope's).

    The check stops DNS rebinding: a page whose name the attacker's DNS points at 127.0.0.1, read
    by the victim's browser, which then sends that name as the Host. Over a socket only loopback
    names are answered: a single-label name was answered too unless the request carried
    `Sec-Fetch-*` headers, and Chromium sends none to a plain-http origin that is not localhost, so
    `http://intranet:8700` rebound to 127.0.0.1 read and steered every run. An in-process test
    client (`test`, `testserver`) is no browser and reaches no socket: its single-label name is
    answered."""
    if is_loopback_host(host):
        return True
    if not in_process(server) or any(key.startswith("sec-fetch-") for key in headers):
        return False
    name = host.strip()
    if name.count(":") == 1:  # name:port
        name = name.split(":", 1)[0]
    return bool(name) and not any(c in name for c in ".:[")  # one DNS label: no domain, no IP address


def same_origin(origin: str, host: str) -> bool:
    """Whether an Origin header names the host the request was sent to."""
    if origin == "null":
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


def safe_next(target: str | None, base: str) -> str:
    """A post-login redirect that stays on this app (a path, never `//host` or a URL)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return base + "/"
    return target
