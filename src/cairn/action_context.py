"""What an action attempt sees of Cairn: `cairn.context()` (run id, attempt, idempotency key, a logger
whose lines are kept with the step) and the run's memory as the attempt found it.

Below both the decorators (`cairn.api`) and the worker that runs attempts, which set it.
"""

from __future__ import annotations

import contextvars
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from cairn.serialization import dumps


@dataclass
class ActionContext:
    """What `cairn.context()` returns inside an action attempt."""

    run_id: str | None
    action_id: str
    attempt: int
    step: int | None
    memory_snapshot: dict[str, str] = field(default_factory=dict)
    memory_writes: list[tuple[str, str]] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    action_name: str = ""
    """The action's human name (`@action(name=...)`), carried by log records."""
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = field(init=False)

    def __post_init__(self) -> None:
        self.logger = _StepLogger(logging.getLogger(f"cairn.action.{self.action_id}"), self.logs)

    @property
    def idempotency_key(self) -> str:
        """Stable across retries of one step: "<run_id>:<step>"."""
        return f"{self.run_id}:{self.step}"

    def memory_add(self, key: str, value: Any) -> None:
        text = dumps(value, f"memory value {key!r}")
        self.memory_writes.append((key, text))
        self.memory_snapshot[key] = text

    def memory_get(self, key: str, default: Any = None) -> Any:
        text = self.memory_snapshot.get(key)
        return default if text is None else json.loads(text)

    def memory_keys(self) -> list[str]:
        return sorted(self.memory_snapshot)


class _StepLogger(logging.LoggerAdapter[logging.Logger]):
    """Keeps each line with the step (shown by `cairn show`) as well as logging it normally."""

    def __init__(self, logger: logging.Logger, logs: list[str]) -> None:
        super().__init__(logger, {})
        self._logs = logs  # not the context: a cycle with it left each attempt to the garbage collector

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level) or level >= logging.DEBUG:
            text = str(msg) % args if args else str(msg)
            self._logs.append(f"{logging.getLevelName(level)} {text}")
        super().log(level, msg, *args, **kwargs)


action_context: contextvars.ContextVar[ActionContext | None] = contextvars.ContextVar(
    "cairn_action_context", default=None
)


run_context: contextvars.ContextVar[str | None] = contextvars.ContextVar("cairn_run_context", default=None)
"""The run whose activation is under way: records made by its workflow code, and the worker's own
about it, carry its id."""


LOG_FIELDS = ("cairn_run_id", "cairn_step", "cairn_attempt", "cairn_action", "cairn_action_name")
"""What every log record carries once a worker runs here: the run, step, attempt and action of the
attempt that logged it (None outside one; in a run's workflow code and the worker's lines about
the run, its run id only), for formatters (`%(cairn_run_id)s`) and log shippers."""

_installed = False


def install_log_fields() -> None:
    """Add `LOG_FIELDS` to every log record made in this process (once; cheap: a context lookup)."""
    global _installed
    if _installed:
        return
    _installed = True
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        ctx = action_context.get()
        record.cairn_run_id = ctx.run_id if ctx else run_context.get()
        record.cairn_step = ctx.step if ctx else None
        record.cairn_attempt = ctx.attempt if ctx else None
        record.cairn_action = ctx.action_id if ctx else None
        record.cairn_action_name = ctx.action_name if ctx else None
        return record

    logging.setLogRecordFactory(factory)
