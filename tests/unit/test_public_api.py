"""The public surface is pinned: a name added to or removed from `cairn` is a decision, made here."""

from __future__ import annotations

import pytest

import cairn

PUBLIC = [
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
    "RunHandle",
    "RunIdConflict",
    "RunIdTaken",
    "RunNotFound",
    "RunSizes",
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


def test_the_public_names_are_exactly_these() -> None:
    assert sorted(cairn.__all__) == PUBLIC


def test_every_public_name_is_there() -> None:
    missing = [name for name in cairn.__all__ if not hasattr(cairn, name)]
    assert missing == []


def test_the_registry_offers_what_spec_names() -> None:
    for name in ("register", "get", "names", "entries", "reset"):
        assert callable(getattr(cairn.registry, name))


def test_an_empty_id_given_to_a_decorator_is_refused_not_replaced_by_the_default() -> None:
    """`@action(id=ACTION_ID)` with a blank setting silently took the function's default id."""
    with pytest.raises(ValueError, match="action id must be a non-empty string"):
        cairn.action(id="")(lambda: 1)
    with pytest.raises(ValueError, match="workflow id must be a non-empty string"):

        @cairn.workflow(id="")
        async def blank() -> None: ...
