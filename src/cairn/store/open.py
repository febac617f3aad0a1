"""Pick a backend from the URL, importing it lazily so the unused one is never loaded."""

from __future__ import annotations

import os
import re
from urllib.parse import unquote

from cairn.store.sql_store import SqlStore

DEFAULT_URL = "sqlite:///./cairn.db"


def resolve_url(url: str | None) -> str:
    """An explicit URL, else CAIRN_DATABASE_URL, else the embedded SQLite default."""
    return url or os.environ.get("CAIRN_DATABASE_URL") or DEFAULT_URL


_PARAMETER = re.compile(r"(?<![a-z_])((?:[a-z_]|%[0-9a-f]{2})+)(\s*=\s*)('[^']*'|[^&\s]*)", re.IGNORECASE)
# A `key=value` of a URL's query or of a libpq keyword string; libpq decodes an escaped key, so
# `passwor%64=` is a password too. A key starts where a word does: tried at every letter of a long
# word with no `=`, the search took quadratic time (20,000 letters quoted in an error: 11 s).
# A URL's password: from the colon after the user to the last @ of the URL, which need not parse
# (a malformed URL, or one quoted inside libpq's error text, is shown as it was written).
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s\"']*):[^\s]*@", re.IGNORECASE)
# A URL alone (a worker's --db, a client's URL): its password runs to the last @, whatever it holds.
# libpq takes a quote or a space in a password as it is, where text that quotes a URL ends it.
_ONE_URL = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s\"']*):(.*)@(?=[^@]*$)", re.IGNORECASE | re.DOTALL)


def redact_url(url: str) -> str:
    """A database URL, or text that quotes one (libpq's errors do), fit to print, log or show: its
    password (in the URL's user part, as a `password=` parameter or in a libpq keyword string)
    replaced by ***."""
    whole = _ONE_URL.match(url)
    if whole is not None and "\n" not in url:
        url = f"{whole[1]}:***@{url[whole.end() :]}"
    return _PARAMETER.sub(_hidden, _URL_PASSWORD.sub(r"\1:***@", url))


def secrets_of(url: str) -> list[str]:
    """The passwords a database URL holds (as written and percent-decoded), longest first: what to
    hide wherever the driver quotes them alone, not as part of the URL. libpq's message on a bad
    password says `invalid percent-encoded token: "Kx9%Rt"`, which no pattern for URLs finds."""
    found: set[str] = set()
    whole = _ONE_URL.match(url)
    if whole is not None:
        found.add(whole[2])
    for key, _, value in _PARAMETER.findall(url):
        if unquote(key).lower().endswith("password"):
            found.add(value[1:-1] if value.startswith("'") and value.endswith("'") else value)
    for secret in list(found):
        found.add(unquote(secret))
    # A password of one or two characters would hide every such letter of the message: it is
    # short enough to be shown no sooner than guessed.
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


def _hidden(parameter: re.Match[str]) -> str:
    key, equals, _ = parameter.groups()
    secret = unquote(key).lower().endswith("password")  # `password`, `sslpassword`
    return f"{key}{equals}***" if secret else parameter[0]


def open_store(url: str | None = None) -> SqlStore:
    """A store for the URL (not yet connected: `await store.open()` or use it, it opens lazily)."""
    resolved = resolve_url(url)
    scheme = resolved.split(":", 1)[0].lower()
    if scheme == "sqlite":
        from cairn.store.sqlite import SqliteDatabase

        return SqlStore(SqliteDatabase(resolved))
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        from cairn.store.postgres import PostgresDatabase

        return SqlStore(PostgresDatabase(resolved.replace("postgresql+psycopg://", "postgresql://", 1)))
    if re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) and "://" in resolved:
        wrong = f"unsupported database URL scheme {scheme!r}"
    else:  # not a URL (a libpq keyword string, a path): shown without any password it holds
        wrong = f"not a database URL: {redact_url(resolved)!r}"
    raise ValueError(f"{wrong}: use sqlite:///path/to/file.db or postgresql://user@host:5432/dbname")
