"""Cairn: durable workflows for Python, embedded on SQLite or distributed on PostgreSQL.

This module is the public surface; everything else may change without notice.
"""

from __future__ import annotations

from mountaineer_di import Depends

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
from cairn.client.handle import RunEvent, RunHandle, StepInfo
from cairn.client.sync import SyncClient, SyncRunHandle, connect_sync
from cairn.errors import (
    ActionAttemptsExhausted,
    ActionCrashed,
    ActionError,
    ActionTimeout,
    CairnError,
    IllegalTransition,
    JournalCorrupted,
    NonDeterminismError,
    NotInWorkflow,
    PayloadTooLarge,
    RunIdConflict,
    RunNotFound,
    SerializationError,
    TransientError,
    UnknownActionError,
    UnknownWorkflowError,
    UnsafeWorkflowCode,
    WorkflowCancelled,
    WorkflowFailed,
    WorkflowSandboxError,
)
from cairn.policies import BackoffPolicy, RetryPolicy
from cairn.registry import registry
from cairn.types import RunStatus, StepKind, StepStatus
from cairn.worker.worker import Worker

Depend = Depends
"""The older spelling of `Depends`, kept as an alias."""

__version__ = "0.1.0"

__all__ = [
    "Action",
    "ActionAttemptsExhausted",
    "ActionCrashed",
    "ActionError",
    "ActionTimeout",
    "BackoffPolicy",
    "CairnError",
    "ChildHandle",
    "Client",
    "Depend",
    "Depends",
    "IllegalTransition",
    "JournalCorrupted",
    "NonDeterminismError",
    "NotInWorkflow",
    "PayloadTooLarge",
    "RetryPolicy",
    "RunEvent",
    "RunHandle",
    "RunIdConflict",
    "RunNotFound",
    "RunStatus",
    "SerializationError",
    "StepInfo",
    "StepKind",
    "StepStatus",
    "SyncClient",
    "SyncRunHandle",
    "TransientError",
    "UnknownActionError",
    "UnknownWorkflowError",
    "UnsafeWorkflowCode",
    "Worker",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowFailed",
    "WorkflowSandboxError",
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
