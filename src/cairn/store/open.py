"""Pick a backend from the URL, importing it lazily so the unused one is never loaded."""

from __future__ import annotations

import os

from cairn.store.sql_store import SqlStore

DEFAULT_URL = "sqlite:///./cairn.db"


def resolve_url(url: str | None) -> str:
    """An explicit URL, else CAIRN_DATABASE_URL, else the embedded SQLite default."""
    return url or os.environ.get("CAIRN_DATABASE_URL") or DEFAULT_URL


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
    raise ValueError(
        f"unsupported database URL scheme {scheme!r}: use sqlite:///path/to/file.db or "
        "postgresql://user@host:5432/dbname"
    )
