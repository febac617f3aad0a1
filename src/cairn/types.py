"""Small shared value types: statuses, step kinds and the JSON alias."""

from __future__ import annotations

import enum
from typing import Any, TypeAlias

Json: TypeAlias = Any
"""A value that json.dumps accepts; kept as an alias so signatures say what they carry."""


class RunStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class StepKind(enum.StrEnum):
    ACTION = "action"
    TIMER = "timer"
    CHILD = "child"
    SIGNAL = "signal"
    SEND_SIGNAL = "send_signal"
    RECORD = "record"
    MEMORY = "memory"


class StepStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_resolved(self) -> bool:
        return self in (StepStatus.COMPLETED, StepStatus.FAILED, StepStatus.CANCELLED)
