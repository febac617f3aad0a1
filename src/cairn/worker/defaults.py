"""A worker's defaults, importable without the worker (the CLI's `--help` stays light)."""

from __future__ import annotations

DEFAULT_CONCURRENCY = 100
"""Workflow activations and action attempts a worker runs at once (each), by default. An idle slot
costs nothing and a busy one about 18 KB; with a small default, code that starts runs in a loop
and gathers their results waits on slots, not on the database (3x slower with 16 here). Temporal's
workers default to 100 as well."""

DEFAULT_GRACE = 30.0
"""Seconds a stopping worker lets running work finish and record its result (`cairn worker --grace`)."""
