"""Scenario 7: the bad-input table of SPEC 6, through the client and the CLI, against a live database
with a worker process serving it. Each bad input gets a clear error (or round-trips exactly through
the worker), and nothing else changes: the run counts stay as they were and a run in flight
finishes untouched. (tests/behaviour/test_client.py, test_poison.py and tests/test_cli.py check the
messages in-process, without workers; this is the same table with the whole system running.)"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import cairn
from tests.chaos import flows
from tests.chaos.harness import Figures, Workers, record
from tests.conftest import eventually
from tests.helpers import cli_in_thread, registered

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

LIMIT = 2 * 1024 * 1024  # SPEC 6: the default payload limit
ECHO = "tests.chaos.flows.echo"
FIVE = "tests.chaos.flows.five_steps"

Case = tuple[str, Callable[[cairn.Client, str], Awaitable[None]]]


async def _raises(
    call: Awaitable[Any], errors: type[BaseException] | tuple[type[BaseException], ...], match: str
) -> None:
    with pytest.raises(errors, match=match):
        await call


async def _cli(url: str, args: list[str], exit_code: int, *needles: str) -> None:
    result = await cli_in_thread([*args, "--db", url])
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == exit_code, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in {out!r}"


REFUSED: list[Case] = [
    (
        "client: unknown workflow",
        lambda c, u: _raises(c.start("tests.chaos.flows.nope", 1), cairn.UnknownWorkflowError, "no workflow named"),
    ),
    (
        "client: wrong argument type",
        lambda c, u: _raises(c.start(flows.five_steps, "seven"), TypeError, "argument 'n'"),
    ),
    ("client: wrong type by name", lambda c, u: _raises(c.start(FIVE, "seven"), TypeError, "'n'")),
    (
        "client: missing argument",
        lambda c, u: _raises(c.start(flows.five_steps), TypeError, "missing a required argument"),
    ),
    (
        "client: oversized payload",
        lambda c, u: _raises(c.start(flows.echo, "x" * (LIMIT + 1)), cairn.PayloadTooLarge, "payload limit"),
    ),
    (
        "client: NaN",
        lambda c, u: _raises(c.start(flows.echo, float("nan")), (ValueError, cairn.SerializationError), "NaN|nan"),
    ),
    (
        "client: infinity",
        lambda c, u: _raises(c.start(flows.echo, float("inf")), (ValueError, cairn.SerializationError), "inf|Infinity"),
    ),
    ("client: NUL in run id", lambda c, u: _raises(c.start(flows.echo, 1, id="a\x00b"), ValueError, "run id")),
    ("client: NUL in workflow name", lambda c, u: _raises(c.start(ECHO + "\x00", 1), ValueError, "workflow name")),
    (
        "client: not JSON-serializable",
        lambda c, u: _raises(c.start(flows.echo, object()), (TypeError, cairn.SerializationError), "JSON"),
    ),
    ("cli: unknown workflow", lambda c, u: _cli(u, ["start", "tests.chaos.flows.nope"], 2, "no workflow named")),
    ("cli: malformed JSON", lambda c, u: _cli(u, ["start", ECHO, "--input", "[1,"], 2, "not valid JSON")),
    ("cli: JSON neither array nor object", lambda c, u: _cli(u, ["start", ECHO, "--input", "5"], 2, "JSON array")),
    ("cli: wrong argument type", lambda c, u: _cli(u, ["start", FIVE, "--input", '["seven"]'], 2, "'n'")),
    (
        "cli: oversized payload",
        lambda c, u: _cli(u, ["start", ECHO, "--input", json.dumps(["x" * (LIMIT + 1)])], 2, "payload limit"),
    ),
    ("cli: NaN", lambda c, u: _cli(u, ["start", ECHO, "--input", "[NaN]"], 2, "contains nan")),
    ("cli: NUL in run id", lambda c, u: _cli(u, ["start", ECHO, "--input", "[1]", "--id", "a\x00b"], 2, "run id")),
]
"""Each input refused with a clear error; the run counts must not move."""

ROUND_TRIPS: list[Any] = [
    "nul\x00byte ✓ zoë",
    {"k\x00ey": ["\x00", "\u2028", "\U0001f600"], "n": -0.0, "big": 10**30, "small": 5e-324},
    "y" * (LIMIT - 1024),  # just under the limit
]
"""Each input round-trips exactly through a worker process (as input, through the journal, as result)."""


def _exact(value: Any) -> str:
    return json.dumps(value, sort_keys=True)  # JSON objects are unordered: keys come back sorted


async def test_bad_input_table_against_live_workers(db_url: str, tmp_path: Path) -> None:
    began = time.monotonic()
    workers = Workers(db_url, tmp_path, lease=5, poll=0.2, concurrency=8)
    figures = Figures("bad_input", "postgres" if db_url.startswith("postgres") else "sqlite")
    client = cairn.Client(db_url)
    try:
        workers.start()
        await eventually(lambda: registered(client, ".echo"), timeout=30, what="worker registered")
        in_flight = await client.start(flows.five_steps, 7)  # must finish untouched by all that follows
        failures = []
        for name, case in REFUSED:
            before = await client.count_runs()
            try:
                await case(client, db_url)
            except AssertionError as exc:
                failures.append(f"{name}: {str(exc)[:300]}")
            after = await client.count_runs()
            if sum(after.values()) != sum(before.values()):
                failures.append(f"{name}: the run counts moved, {before} -> {after}")
        for value in ROUND_TRIPS:
            got = await client.run(flows.echo, value, timeout=30)
            if got != value or _exact(got) != _exact(value):  # equal, and -0.0 stays -0.0
                failures.append(f"round trip of {str(value)[:60]!r} gave {str(got)[:60]!r}")
        cli = await cli_in_thread(["start", ECHO, "--input", json.dumps(["a\x00b"]), "--wait", "30", "--db", db_url])
        if cli.exit_code != 0 or json.loads(cli.stdout.splitlines()[-1]) != "a\x00b":
            failures.append(f"cli round trip of a NUL byte: exit {cli.exit_code}, {cli.output!r}")
        assert await in_flight.result(timeout=30) == flows.expected_five_steps(7)
        counts = await client.count_runs()
        figures.runs = sum(counts.values())
        figures.lost = figures.runs - counts["completed"]
        figures.notes.update(refused=len(REFUSED), round_trips=len(ROUND_TRIPS) + 1, failed_cases=len(failures))
        record(figures, began)
        assert figures.runs == 1 + len(ROUND_TRIPS) + 1, counts
        assert not failures, "\n".join(failures)
    finally:
        workers.close()
        await client.close()
