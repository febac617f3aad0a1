"""A worker's defaults, importable without the worker (the CLI's `--help` stays light)."""

from __future__ import annotations

DEFAULT_CONCURRENCY = 100
"""Workflow activations and action attempts a worker runs at once (each), by default. An idle slot
costs nothing and a busy one about 18 KB; with a small default, code that starts runs in a loop
and gathers their results waits on slots, not on the database (3x slower with 16 here). Temporal's
workers default to 100 as well."""

DEFAULT_GRACE = 30.0
"""Seconds a stopping worker lets running work finish and record its result (`cairn worker --grace`)."""

DEFAULT_DEADLOCK_TIMEOUT = 2.0
"""Seconds an async workflow's code may run without awaiting before the worker interrupts it and
pauses the run with WorkflowDeadlock (`cairn worker --deadlock-timeout`): such code blocks every
other run of its worker meanwhile. Temporal's deadlock detector allows 2 s as well."""
