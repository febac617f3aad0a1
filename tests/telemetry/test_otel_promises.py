"""SPEC 5's observability, as a user checks it: a span for each run from its start to its end (an
ERROR one when the run fails), beside the spans of its steps, in the starter's trace; and log
records that carry the run id, from workflow code and from the worker's own lines about a run,
with a run's failure logged (it was silent)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cairn
from cairn.testing import environment

ROOT = Path(__file__).resolve().parents[2]

TRACED = """
import asyncio, json, sys
from opentelemetry import trace
import cairn
from cairn.testing import environment
from tests.telemetry import otelapp


class Declined(Exception):
    pass


@cairn.action
async def decline(order: str) -> None:
    raise Declined(f"card of {order} declined")


@cairn.workflow
async def declined(order: str) -> None:
    await decline(order)


exporter = otelapp.setup()


async def main() -> None:
    async with environment(sys.argv[1]) as env:
        with trace.get_tracer("test").start_as_current_span("test"):
            await env.client.run(otelapp.checkout, "o-1", id="o-1", timeout=60)
            try:
                await env.client.run(declined, "o-2", id="o-2", timeout=60)
            except Declined:
                pass

asyncio.run(main())
spans = [
    {
        "name": s.name,
        "trace_id": s.context.trace_id,
        "span_id": s.context.span_id,
        "parent": s.parent.span_id if s.parent else None,
        "attributes": dict(s.attributes or {}),
        "status": s.status.status_code.name,
        "description": s.status.description,
        "seconds": (s.end_time - s.start_time) / 1e9,
    }
    for s in exporter.get_finished_spans()
]
print(json.dumps(spans))
"""


@pytest.mark.process
def test_each_run_has_a_span_from_its_start_to_its_end(db_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(
        [sys.executable, "-c", TRACED, db_url], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    spans = json.loads(done.stdout)
    assert len({s["trace_id"] for s in spans}) == 1
    starts = {s["attributes"]["cairn.run_id"]: s for s in spans if s["name"] == "cairn.start"}
    runs = {s["attributes"]["cairn.run_id"]: s for s in spans if s["name"] == "cairn.run"}
    assert sorted(runs) == ["o-1", "o-2"], [s["name"] for s in spans]

    ok, failed = runs["o-1"], runs["o-2"]
    assert ok["parent"] == starts["o-1"]["span_id"]
    assert ok["attributes"]["cairn.workflow"] == "tests.telemetry.otelapp.checkout"
    assert ok["attributes"]["cairn.status"] == "completed"
    assert ok["status"] == "UNSET"
    # The run's span covers its steps: it sleeps 50 ms between its two actions.
    assert ok["seconds"] >= 0.05
    steps = [s for s in spans if s["name"] == "cairn.action" and s["attributes"]["cairn.run_id"] == "o-1"]
    assert len(steps) == 2 and all(s["parent"] == starts["o-1"]["span_id"] for s in steps)

    assert failed["attributes"]["cairn.status"] == "failed"
    assert failed["status"] == "ERROR"
    assert failed["description"] == "Declined: card of o-2 declined"


@cairn.action
async def refuse(order: str) -> None:
    raise PermissionError(f"order {order} refused")


@cairn.workflow
async def logged(order: str) -> None:
    logging.getLogger("shop.workflow").info("checking out %s", order)
    await refuse(order)


async def test_log_records_carry_the_run_and_a_failed_run_is_logged(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with environment(db_url) as env:
        with pytest.raises(PermissionError):
            await env.client.run(logged, "o-3", id="o-3", timeout=30)
    mine = [r for r in caplog.records if r.name == "shop.workflow"]
    assert mine and {getattr(r, "cairn_run_id", None) for r in mine} == {"o-3"}
    ends = [r for r in caplog.records if r.name == "cairn.worker" and r.levelno >= logging.WARNING]
    assert len(ends) == 1, [r.getMessage() for r in caplog.records]
    assert (
        ends[0].getMessage()
        == "run o-3 (tests.telemetry.test_otel_promises.logged) failed: PermissionError: order o-3 refused"
    )
    assert getattr(ends[0], "cairn_run_id", None) == "o-3"
