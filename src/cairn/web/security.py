"""Who may use the web app, and what of the data a page may show.

Two modes. With a token, every route but `/healthz`, `/login` and the static assets needs it: an
API client sends `Authorization: Bearer <token>`; a browser logs in once and gets a signed,
expiring session cookie (HttpOnly, SameSite=Strict), and each of its state-changing requests
carries a CSRF token derived from that session. Without a token (the default, for a dashboard on
127.0.0.1) requests must name a loopback host, so a DNS-rebinding page cannot reach the app (a
single-label name such as an in-process test client's `testserver` is also answered, but not from
a browser: see `served_without_token`), and a browser's state-changing requests still carry the
CSRF token, which only the app's own pages know.
Tokens and signatures are compared with `hmac.compare_digest`.

Sessions are stateless (nonce, expiry and an HMAC keyed by the token), so several app processes
behind one token accept each other's cookies and a new token logs everyone out. Rejected: a
server-side session table (state to keep, in a database the web layer must not write to).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

SESSION_COOKIE = "cairn_session"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL = 12 * 3600
"""Seconds a browser login lasts."""


class Guard:
    """The app's token (or none) and everything derived from it."""

    def __init__(self, token: str | None) -> None:
        if token is not None and not token.strip():
            raise ValueError("the API token must not be empty; omit it to serve without one on 127.0.0.1")
        self.token = token
        # Without a token, a random key per app: CSRF tokens are only known to pages it served.
        seed = token.encode() if token is not None else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"cairn-web-v1:" + seed).digest()

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def _sign(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def bearer_ok(self, header: str | None) -> bool:
        if self.token is None or not header:
            return False
        scheme, _, value = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    def token_ok(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

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
        """The CSRF token of a session (or of the tokenless app when `nonce` is None)."""
        return self._sign(f"csrf.{nonce or 'anonymous'}")

    def csrf_ok(self, nonce: str | None, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest((given or "").encode(), self.csrf_for(nonce).encode())


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


def served_without_token(host: str, headers: Mapping[str, str]) -> bool:
    """Whether an app with no token answers a request sent to `host` (its Host header).

    The check stops DNS rebinding: a page whose name the attacker's DNS points at 127.0.0.1, read
    by the victim's browser. Such a name has a dot (it is in public DNS) and the request comes from
    a browser, which marks every request with `Sec-Fetch-*` headers a page cannot forge. Any other
    client can send whatever Host it likes, so refusing it protects nothing: a single-label name
    (`test`, `testserver`, as in-process test clients send) is answered unless a browser sent it."""
    if is_loopback_host(host):
        return True
    if any(key.startswith("sec-fetch-") for key in headers):
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
