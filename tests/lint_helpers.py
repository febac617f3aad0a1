"""Helpers in another module of the tests package, for the transitive check of tests/unit/test_lint.py."""

from __future__ import annotations

import datetime


def stamp() -> str:
    return datetime.datetime.now().isoformat()


def label(n: int) -> str:
    return f"#{n}"
