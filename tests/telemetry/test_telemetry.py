"""OpenTelemetry (cairn[otel]): spans per activation and step joining the starter's trace across
processes, log records carrying the run and step, and nothing at all when no provider is set.

Each traced process is a subprocess with its own tracer provider and the SDK's in-memory exporter
(a provider, once set, is for the life of a process: setting one here would trace every other test)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn import telemetry
from tests.conftest import eventually
from tests.helpers import registered

ROOT = Path(__file__).resolve().parents[2]

STARTER = """
import asyncio, sys
from opentelemetry import trace
import cairn
from tests.telemetry import otelapp

exporter = otelapp.setup()

async def main() -> None:
    client = cairn.connect(sys.argv[1])
    with trace.get_tracer("starter").start_as_current_span("caller"):
        assert await client.run(otelapp.checkout, "o-1", id="o-1", timeout=60) == "ch-o-1|ch-o-1-2"
    await client.close()

asyncio.run(main())
otelapp.dump(exporter, sys.argv[2])
"""

WORKER = """
import asyncio, signal, sys
import cairn
from tests.telemetry import otelapp

exporter = otelapp.setup()

async def main() -> None:
    client = cairn.connect(sys.argv[1])
    worker = cairn.Worker(client, poll_interval=0.05)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, worker.request_stop)
    await worker.run()
    await client.close()

asyncio.run(main())
otelapp.dump(exporter, sys.argv[2])
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _traced_script(script: str, tmp_path: Path) -> Path:
    """Run `script` in a process of its own (its tracer provider, its in-memory exporter); the
    file its spans were written to (the script's first argument)."""
    out = tmp_path / "spans.json"
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return out


def _spans(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


@pytest.mark.process
async def test_spans_of_a_run_whose_actions_ran_in_another_worker_share_the_starters_trace(
    db_url: str, tmp_path: Path
) -> None:
    worker_out, starter_out = tmp_path / "worker.json", tmp_path / "starter.json"
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, db_url, str(worker_out)], env=_env(), stderr=subprocess.PIPE, text=True
    )
    client = cairn.Client(db_url)
    try:
        await eventually(lambda: registered(client, "otelapp.checkout"), timeout=30, what="the worker")
        started = subprocess.run(
            [sys.executable, "-c", STARTER, db_url, str(starter_out)],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert started.returncode == 0, started.stderr
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
        await client.close()
    assert worker.returncode == 0, err

    starter, far = _spans(starter_out), _spans(worker_out)
    caller = next(s for s in starter["spans"] if s["name"] == "caller")
    start = next(s for s in starter["spans"] if s["name"] == "cairn.start")
    assert start["parent"] == caller["span_id"]
    assert start["attributes"]["cairn.run_id"] == "o-1"
    trace_id = caller["trace_id"]

    names = [s["name"] for s in far["spans"]]
    assert names.count("cairn.action") == 2
    assert names.count("cairn.timer") == 1
    assert names.count("cairn.activation") >= 2
    activations = [s["attributes"].get("cairn.activation") for s in far["spans"] if s["name"] == "cairn.activation"]
    assert None not in activations, "an activation folding results into a run held in memory said no number"
    assert {s["trace_id"] for s in far["spans"]} == {trace_id}, "the worker's spans left the starter's trace"
    actions = [s for s in far["spans"] if s["name"] == "cairn.action"]
    assert sorted(a["attributes"]["cairn.step"] for a in actions) == [1, 3]
    for a in actions:
        assert a["attributes"]["cairn.run_id"] == "o-1"
        assert a["attributes"]["cairn.workflow"] == "tests.telemetry.otelapp.checkout"
        assert a["attributes"]["cairn.attempt"] == 1
        assert a["attributes"]["cairn.action_name"] == "Charge card"
        assert a["parent"] == start["span_id"]
    timer = next(s for s in far["spans"] if s["name"] == "cairn.timer")
    assert timer["attributes"]["cairn.step"] == 2

    # Log records made inside the actions carry the run, the step and the action's name.
    assert {(r["run_id"], r["step"], r["action_name"]) for r in far["logs"]} == {
        ("o-1", 1, "Charge card"),
        ("o-1", 3, "Charge card"),
    }


async def test_in_process_spans_with_time_skipping(tmp_path: Path) -> None:
    script = """
import asyncio, sys
from opentelemetry import trace
from cairn.testing import environment
from tests.telemetry import otelapp

exporter = otelapp.setup()

async def main() -> None:
    async with environment() as env:
        with trace.get_tracer("test").start_as_current_span("test"):
            await env.client.run(otelapp.checkout, "o-2", id="o-2", timeout=60)
        # Started next to its worker, the run was created by that worker's commit: with its trace.
        _, stored = await env.client.store.run_trace("o-2")
        assert stored is not None and "traceparent" in stored, stored

asyncio.run(main())
otelapp.dump(exporter, sys.argv[1])
"""
    out = _traced_script(script, tmp_path)
    spans = _spans(out)["spans"]
    assert len({s["trace_id"] for s in spans}) == 1
    assert {"test", "cairn.start", "cairn.activation", "cairn.action", "cairn.timer"} <= {s["name"] for s in spans}


async def test_a_run_timed_out_or_cancelled_has_its_run_span(tmp_path: Path) -> None:
    """Only runs that completed or failed had a `cairn.run` span: one timed out by its worker, or
    cancelled by a client, ended with none. A timeout is an error; a cancel asked for is not."""
    script = """
import asyncio, sys
import cairn
from cairn.testing import environment
from tests.telemetry import otelapp

exporter = otelapp.setup()

async def main() -> None:
    async with environment() as env:
        timed = await env.client.start(otelapp.waits_for_ever, "t", id="timed-out")
        cancelled = await env.client.start(otelapp.waits_for_ever, "c", id="cancelled")
        await cancelled.cancel()
        for handle in (timed, cancelled):
            try:
                await handle.result(timeout=60)
            except cairn.WorkflowCancelled:
                pass

asyncio.run(main())
otelapp.dump(exporter, sys.argv[1])
"""
    out = _traced_script(script, tmp_path)
    runs = {s["attributes"]["cairn.run_id"]: s for s in _spans(out)["spans"] if s["name"] == "cairn.run"}
    assert set(runs) == {"timed-out", "cancelled"}
    assert runs["timed-out"]["attributes"]["cairn.status"] == "cancelled" and runs["timed-out"]["status"] == "ERROR"
    assert runs["cancelled"]["attributes"]["cairn.status"] == "cancelled" and runs["cancelled"]["status"] == "UNSET"


async def test_without_a_tracer_provider_nothing_is_traced_or_stored(
    client: cairn.Client, worker: cairn.Worker
) -> None:
    from tests import flows

    assert not telemetry.enabled()
    assert telemetry.current_context() is None
    handle = await client.start(flows.Sequence3, 1)
    await handle.result(timeout=30)
    assert await client.store.run_trace(handle.id) == ("tests.flows.Sequence3", None)


MISNAMED = """
import asyncio, sys
import cairn
from cairn.bench import flows

async def main() -> None:
    client = cairn.connect(sys.argv[1])
    async with cairn.Worker(client, poll_interval=0.05):
        print(await client.run(flows.three_steps, 1, timeout=30))
    await client.close()

asyncio.run(main())
"""


def test_a_tracer_provider_that_cannot_be_loaded_turns_tracing_off_and_work_goes_on(db_url: str) -> None:
    """OTEL_PYTHON_TRACER_PROVIDER naming no installed provider: OpenTelemetry raised StopIteration
    at each span, every run stayed pending with its activation failing once a second, and a start
    died with "generator raised StopIteration". Tracing never stops work: it is off, said once."""
    env = {**os.environ, "OTEL_PYTHON_TRACER_PROVIDER": "no_such_provider"}
    done = subprocess.run(
        [sys.executable, "-c", MISNAMED, db_url], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4"
    assert done.stderr.count("tracing is off: OTEL_PYTHON_TRACER_PROVIDER='no_such_provider'") == 1
