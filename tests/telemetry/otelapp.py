"""A workflow and the OpenTelemetry set-up of the processes the telemetry tests start: each
process records its spans with the SDK's in-memory exporter and writes them out as JSON."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import cairn

log = logging.getLogger("otelapp")
LOGGED: list[dict[str, Any]] = []


class _Keep(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        LOGGED.append(
            {
                "message": record.getMessage(),
                "run_id": getattr(record, "cairn_run_id", None),
                "step": getattr(record, "cairn_step", None),
                "action_name": getattr(record, "cairn_action_name", None),
            }
        )


@cairn.action(name="Charge card", description="Charge the customer's card")
async def charge(order: str) -> str:
    log.warning("charging %s", order)
    return f"ch-{order}"


@cairn.workflow
async def checkout(order: str) -> str:
    first = await charge(order)
    await cairn.sleep(timedelta(milliseconds=50))
    second = await charge(f"{order}-2")
    return f"{first}|{second}"


@cairn.workflow(timeout=timedelta(seconds=5))
async def waits_for_ever(order: str) -> str:
    return str(await cairn.wait_for_signal("never"))


def setup() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log.addHandler(_Keep())
    log.setLevel(logging.INFO)
    return exporter


def dump(exporter: InMemorySpanExporter, path: str) -> None:
    spans = [
        {
            "name": s.name,
            "trace_id": format(s.context.trace_id, "032x"),
            "span_id": format(s.context.span_id, "016x"),
            "parent": format(s.parent.span_id, "016x") if s.parent else None,
            "attributes": dict(s.attributes or {}),
            "status": s.status.status_code.name,
        }
        for s in exporter.get_finished_spans()
    ]
    Path(path).write_text(json.dumps({"spans": spans, "logs": LOGGED}))
