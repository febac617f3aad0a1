"""Load the named queries and migrations once; a backend's file overrides shared queries by name."""

from __future__ import annotations

import functools
import re
from importlib import resources

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.M)
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def _parse(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        out[name] = "\n".join(lines).strip()
    return out


@functools.cache
def queries(dialect: str) -> dict[str, str]:
    """Query name → SQL in the backend's parameter style (:name for sqlite3, %(name)s for psycopg)."""
    base = resources.files(__package__)
    merged = _parse(base.joinpath("queries.sql").read_text())
    merged.update(_parse(base.joinpath(f"{dialect}.sql").read_text()))
    if dialect == "postgres":
        merged = {k: _PARAM.sub(r"%(\1)s", v.replace("%", "%%")) for k, v in merged.items()}
    return dict(merged)  # fixed text from our own files, never built from values


@functools.cache
def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, file name, SQL script) in order."""
    folder = resources.files(__package__).joinpath(dialect, "migrations")
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return sorted(out)
