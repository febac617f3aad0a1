"""Cairn: durable workflows for Python, embedded on SQLite or distributed on PostgreSQL.

This module is the public surface; everything else may change without notice. Its names are
imported on first use (PEP 562), so that `cairn --help` and tools that import one submodule do not
pay for all of them (pydantic, mountaineer-di, psycopg); `cairn.registry` is the registry module,
whose functions act on the process-wide registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mountaineer_di import Depends
    from mountaineer_di import Depends as Depend

    from cairn import registry as registry
    from cairn.api.action import Action, action
    from cairn.api.context import (
        ChildHandle,
        child,
        context,
        deprecate_patch,
        memory,
        now,
        patched,
        random,
        send_signal,
        sleep,
        start_child,
        uuid4,
        wait_for_signal,
    )
    from cairn.api.workflow import Workflow, workflow
    from cairn.client.client import Client, connect
    from cairn.client.handle import RunEvent, RunHandle, RunSizes, StepInfo
    from cairn.client.sync import SyncClient, SyncRunHandle, connect_sync
    from cairn.errors import (
        ActionAttemptsExhausted,
        ActionCrashed,
        ActionError,
        ActionTimeout,
        ArgumentsMismatch,
        CairnError,
        DatabaseLocked,
        DatabaseUnavailable,
        IllegalTransition,
        JournalCorrupted,
        NonDeterminismError,
        NotInWorkflow,
        PayloadTooLarge,
        RunIdConflict,
        RunIdTaken,
        RunNotFound,
        ScheduleNotFound,
        SerializationError,
        StoreError,
        ThreadTimeoutWarning,
        TransientError,
        UnawaitedCallWarning,
        UnknownActionError,
        UnknownWorkflowError,
        UnsafeWorkflowCode,
        WorkflowCancelled,
        WorkflowDeadlock,
        WorkflowFailed,
        WorkflowSandboxError,
        WorkflowTimeout,
    )
    from cairn.policies import BackoffPolicy, RetryPolicy
    from cairn.queues import Queue, RateLimit
    from cairn.schedules import Schedule
    from cairn.types import RunStatus, StepKind, StepStatus
    from cairn.worker.worker import Worker

_EXPORTS: dict[str, str] = {
    "Action": "cairn.api.action",
    "action": "cairn.api.action",
    "ChildHandle": "cairn.api.context",
    "child": "cairn.api.context",
    "context": "cairn.api.context",
    "deprecate_patch": "cairn.api.context",
    "memory": "cairn.api.context",
    "now": "cairn.api.context",
    "patched": "cairn.api.context",
    "random": "cairn.api.context",
    "send_signal": "cairn.api.context",
    "sleep": "cairn.api.context",
    "start_child": "cairn.api.context",
    "uuid4": "cairn.api.context",
    "wait_for_signal": "cairn.api.context",
    "Workflow": "cairn.api.workflow",
    "workflow": "cairn.api.workflow",
    "Client": "cairn.client.client",
    "connect": "cairn.client.client",
    "RunEvent": "cairn.client.handle",
    "RunSizes": "cairn.client.handle",
    "RunHandle": "cairn.client.handle",
    "StepInfo": "cairn.client.handle",
    "SyncClient": "cairn.client.sync",
    "SyncRunHandle": "cairn.client.sync",
    "connect_sync": "cairn.client.sync",
    "ActionAttemptsExhausted": "cairn.errors",
    "ActionCrashed": "cairn.errors",
    "ActionError": "cairn.errors",
    "ActionTimeout": "cairn.errors",
    "ArgumentsMismatch": "cairn.errors",
    "ThreadTimeoutWarning": "cairn.errors",
    "UnawaitedCallWarning": "cairn.errors",
    "CairnError": "cairn.errors",
    "DatabaseLocked": "cairn.errors",
    "DatabaseUnavailable": "cairn.errors",
    "IllegalTransition": "cairn.errors",
    "JournalCorrupted": "cairn.errors",
    "NonDeterminismError": "cairn.errors",
    "NotInWorkflow": "cairn.errors",
    "PayloadTooLarge": "cairn.errors",
    "RunIdConflict": "cairn.errors",
    "RunIdTaken": "cairn.errors",
    "RunNotFound": "cairn.errors",
    "ScheduleNotFound": "cairn.errors",
    "SerializationError": "cairn.errors",
    "StoreError": "cairn.errors",
    "TransientError": "cairn.errors",
    "UnknownActionError": "cairn.errors",
    "UnknownWorkflowError": "cairn.errors",
    "UnsafeWorkflowCode": "cairn.errors",
    "WorkflowCancelled": "cairn.errors",
    "WorkflowDeadlock": "cairn.errors",
    "WorkflowFailed": "cairn.errors",
    "WorkflowSandboxError": "cairn.errors",
    "WorkflowTimeout": "cairn.errors",
    "BackoffPolicy": "cairn.policies",
    "RetryPolicy": "cairn.policies",
    "Schedule": "cairn.schedules",
    "Queue": "cairn.queues",
    "RateLimit": "cairn.queues",
    "RunStatus": "cairn.types",
    "StepKind": "cairn.types",
    "StepStatus": "cairn.types",
    "Worker": "cairn.worker.worker",
    "Depends": "mountaineer_di",
}
"""Each public name and the module it comes from."""

__version__ = "0.1.0"


__all__ = [
    "Action",
    "ActionAttemptsExhausted",
    "ActionCrashed",
    "ActionError",
    "ActionTimeout",
    "ArgumentsMismatch",
    "BackoffPolicy",
    "CairnError",
    "ChildHandle",
    "Client",
    "DatabaseLocked",
    "DatabaseUnavailable",
    "Depend",
    "Depends",
    "IllegalTransition",
    "JournalCorrupted",
    "NonDeterminismError",
    "NotInWorkflow",
    "PayloadTooLarge",
    "Queue",
    "RateLimit",
    "RetryPolicy",
    "RunEvent",
    "RunSizes",
    "RunHandle",
    "RunIdConflict",
    "RunIdTaken",
    "RunNotFound",
    "RunStatus",
    "Schedule",
    "ScheduleNotFound",
    "SerializationError",
    "StepInfo",
    "StepKind",
    "StepStatus",
    "StoreError",
    "SyncClient",
    "SyncRunHandle",
    "ThreadTimeoutWarning",
    "TransientError",
    "UnawaitedCallWarning",
    "UnknownActionError",
    "UnknownWorkflowError",
    "UnsafeWorkflowCode",
    "Worker",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowDeadlock",
    "WorkflowFailed",
    "WorkflowSandboxError",
    "WorkflowTimeout",
    "__version__",
    "action",
    "child",
    "connect",
    "connect_sync",
    "context",
    "deprecate_patch",
    "memory",
    "now",
    "patched",
    "random",
    "registry",
    "send_signal",
    "sleep",
    "start_child",
    "uuid4",
    "wait_for_signal",
    "workflow",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (then it is a plain attribute)."""
    if name == "registry":
        value: Any = importlib.import_module("cairn.registry")
    elif name == "Depend":
        value = __getattr__("Depends")  # the older spelling, kept as an alias
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        raise AttributeError(f"module 'cairn' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
