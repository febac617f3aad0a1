"""Names that go into the database as text (run ids, signal names, memory keys, queue names, ids of
actions and workflows): checked where they enter, so that a value a database cannot store (a NUL
byte, which PostgreSQL's text refuses) is a clear error at the door, never a failed commit."""

from __future__ import annotations

from typing import Any

MAX_NAME = 255


def check_name(value: Any, what: str, limit: int = MAX_NAME) -> str:
    """`value` if it is a usable name, else ValueError saying which rule it broke."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise ValueError(f"{what} {value!r} contains a NUL byte, which cannot be stored; remove it")
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters long; at most {limit} are allowed: {value[:40]!r}...")
    return value


def storable(value: str) -> bool:
    """Whether a name could have been stored at all: a lookup of one that could not finds nothing."""
    return "\x00" not in value
