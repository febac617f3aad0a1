"""OpenTelemetry spans for runs and steps (the `cairn[otel]` extra).

Off unless opentelemetry-api is installed and the application has set a tracer provider: each
hook then costs one cached check. On, `client.start` records the caller's trace context (W3C
trace context, as JSON) with the run, and workers open their spans under it, so a run's
activations and action attempts join the caller's trace whichever process or host runs them.
Spans: `cairn.start`, `cairn.run` (the whole run, from its start to its end, recorded by the worker
that ends it), `cairn.activation` (one per activation), `cairn.action` (one per attempt), and
`cairn.timer`, `cairn.signal`, `cairn.child` (from when the step was scheduled to when its outcome
was delivered), with `cairn.run_id`, `cairn.workflow`, `cairn.step` and `cairn.attempt`.
Rejected: a hard dependency on OpenTelemetry, and spans kept open across activations (a run that
sleeps for a week would hold one in a worker's memory; workers come and go).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

log = logging.getLogger("cairn.telemetry")

_otel: Any = None
"""`opentelemetry.trace` once imported; False when it is not installed."""


def _trace_api() -> Any:
    global _otel
    if _otel is None:
        try:
            from opentelemetry import trace
        except ImportError:
            _otel = False
        else:
            _otel = trace
    return _otel


# Imported before a fork, by the forking thread: a worker's first span imports it on the worker's
# thread, and a fork in the middle of that import left the child the module's import lock, held by a
# thread the child does not have (its first `start()` hung for ever). Importing it here waits for
# an import under way to end; once imported, this costs nothing.
os.register_at_fork(before=_trace_api)

_PROVIDER_FROM_ENV = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
"""OpenTelemetry loads a tracer provider named by this variable at its first use."""


def enabled() -> bool:
    """Whether spans are recorded: the extra is installed and a tracer provider has been set.
    Asked several times a workflow: with no provider set (the usual case), OpenTelemetry's global
    is read directly (13 ns) instead of through `get_tracer_provider`, which looks the environment
    up at each call (1.2 us)."""
    trace = _trace_api()
    if not trace:
        return False
    global _PROVIDER_FROM_ENV
    if getattr(trace, "_TRACER_PROVIDER", trace) is None and not _PROVIDER_FROM_ENV:
        return False
    try:
        provider = trace.get_tracer_provider()
    except Exception as exc:  # the provider the variable names cannot be loaded (not installed, misspelt)
        # OpenTelemetry raises StopIteration for a name with no entry point, which a coroutine turns
        # into RuntimeError: every run stayed pending, its activation failing once a second. Tracing
        # never stops work: it is off, said once.
        _PROVIDER_FROM_ENV = False
        log.warning(
            "tracing is off: OTEL_PYTHON_TRACER_PROVIDER=%r names no tracer provider that can be loaded (%r)",
            os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"),
            exc,
        )
        return False
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def current_context() -> str | None:
    """The current trace context as JSON (None when tracing is off or no span is active)."""
    if not enabled():
        return None
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier, sort_keys=True) if carrier else None


def _parent(trace_context: str | None) -> Any:
    if not trace_context:
        return None
    from opentelemetry import propagate

    try:
        carrier = json.loads(trace_context)
    except ValueError:
        return None
    return propagate.extract(carrier) if isinstance(carrier, dict) else None


def _attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {f"cairn.{k}": v for k, v in attributes.items() if v is not None}


@contextlib.contextmanager
def span(name: str, trace_context: str | None = None, **attributes: Any) -> Iterator[Any]:
    """A span around the block (the current span, or the run's stored context, as its parent);
    None and no work at all when tracing is off. An exception is recorded on it and re-raised."""
    if not enabled():
        yield None
        return
    tracer = _trace_api().get_tracer("cairn")
    parent = _parent(trace_context)
    with tracer.start_as_current_span(name, context=parent, attributes=_attributes(attributes)) as current:
        yield current


def record_span(
    name: str, trace_context: str | None, start: float, end: float, *, error: str | None = None, **attributes: Any
) -> None:
    """A span that already happened (a run, a timer, a signal wait, a child), from `start` to `end`;
    with `error`, its status is ERROR with that description."""
    if not enabled():
        return
    trace = _trace_api()
    tracer = trace.get_tracer("cairn")
    opened = tracer.start_span(
        name, context=_parent(trace_context), start_time=int(start * 1e9), attributes=_attributes(attributes)
    )
    if error is not None:
        opened.set_status(trace.Status(trace.StatusCode.ERROR, error))
    opened.end(end_time=int(max(start, end) * 1e9))


def record_run(
    trace_context: str | None,
    run: Any,
    status: str,
    end: float,
    *,
    error: str | None = None,
    activations: int | None = None,
) -> None:
    """A run's `cairn.run` span, from its creation to `end`, by the process that ended it: a worker
    at the commit that ends it, a worker timing it out, a client cancelling it (the last two ended
    with no span at all). `run` is its RunRow as it was before its end."""
    record_span(
        "cairn.run",
        trace_context,
        run.created_at,
        end,
        error=error,
        run_id=run.id,
        workflow=run.workflow,
        status=status,
        activations=run.activations if activations is None else activations,
    )


__all__ = ["current_context", "enabled", "record_run", "record_span", "span"]
