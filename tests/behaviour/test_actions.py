"""Actions: retries, timeouts, Depends, context, logs and serialization, on both backends."""

from __future__ import annotations

import pytest

import cairn
from cairn import StepStatus
from tests import flows

pytestmark = pytest.mark.usefixtures("worker")


async def test_retry_with_backoff_keeps_idempotency_key(client: cairn.Client) -> None:
    handle = await client.start(flows.retry_flow, "k1", 2)
    value = await handle.result(timeout=10)
    (step,) = await handle.steps()
    assert value == f"{handle.id}:1@3"  # "<run_id>:<step>", the same on every attempt
    assert step.attempt == 3 and step.status == StepStatus.COMPLETED
    assert flows.CALLS["flaky:k1"] == 3
    assert [line for line in step.logs if line.startswith("INFO")] == [
        "INFO attempt 1",
        "INFO attempt 2",
        "INFO attempt 3",
    ]
    assert sum("retry in" in line for line in step.logs) == 2


async def test_retries_exhausted_propagate_original_type(client: cairn.Client) -> None:
    handle = await client.start(flows.retry_flow, "k2", 5)
    with pytest.raises(flows.Flaky, match=r"attempt 3 failed"):
        await handle.result(timeout=10)
    assert flows.CALLS["flaky:k2"] == 3


async def test_run_action_overrides_policy(client: cairn.Client) -> None:
    handle = await client.start(flows.OverrideFlow, "k3")
    # flaky's own policy allows 3 attempts; the per-call policy allows 5, so the 4th succeeds.
    assert await handle.result(timeout=10) == f"{handle.id}:1@4"
    assert flows.CALLS["flaky:k3"] == 4


async def test_non_retryable_error_fails_at_once(client: cairn.Client) -> None:
    handle = await client.start(flows.fails, "no retry")
    with pytest.raises(ValueError):
        await handle.result(timeout=10)
    (step,) = await handle.steps()
    assert step.attempt == 1 and step.status == StepStatus.FAILED
    assert step.error["type"] == "ValueError" and step.error["message"] == "no retry"


async def test_transient_error_is_retryable_by_default_policy(client: cairn.Client) -> None:
    assert await client.run(flows.transient_flow, timeout=10) == "gave up: upstream hiccup"


async def test_timeout_raises_action_timeout_after_retries(client: cairn.Client) -> None:
    handle = await client.start(flows.timeout_flow)
    assert await handle.result(timeout=10) == "timeout: ActionTimeout"
    (step,) = await handle.steps()
    assert step.attempt == 2 and step.error["type"] == "ActionTimeout"
    assert issubclass(cairn.ActionTimeout, TimeoutError)


async def test_depends_resolved_per_invocation_with_cleanup(client: cairn.Client) -> None:
    before = len(flows.CLEANUPS)
    assert await client.run(flows.depends_flow, "ada", timeout=10) == "hello ada"
    assert len(flows.CLEANUPS) == before + 1
    (step,) = await client.get((await client.list_runs(workflow=flows.depends_flow))[0].id).steps()
    assert step.args == {"name": "ada"}  # the injected parameter is not part of the journal


async def test_non_serializable_action_result_fails_the_step_clearly(client: cairn.Client) -> None:
    handle = await client.start(flows.bad_result_flow)
    with pytest.raises(cairn.SerializationError, match=r"result of tests.flows.not_serializable"):
        await handle.result(timeout=10)


async def test_non_serializable_workflow_result_fails_the_run_clearly(client: cairn.Client) -> None:
    handle = await client.start(flows.returns_object)
    with pytest.raises(cairn.SerializationError, match=r"result of tests.flows.returns_object"):
        await handle.result(timeout=10)
    assert await handle.status() == cairn.RunStatus.FAILED


async def test_the_engines_own_timeout_surfaces_after_one_attempt_by_default(client: cairn.Client) -> None:
    """`timeout=` is Cairn's deadline, not a TimeoutError the action raised: without a retry policy
    chosen for the action, the first attempt past it fails the step (SPEC section 1)."""
    handle = await client.start(flows.deadline_flow)
    assert await handle.result(timeout=10) == "ActionTimeout"
    (step,) = await handle.steps()
    assert step.attempt == 1 and flows.CALLS["over_its_deadline"] == 1


async def test_an_action_raising_generator_exit_fails_its_step_once(client: cairn.Client) -> None:
    """A GeneratorExit of the action's own was taken for the worker stopping the attempt: the
    attempt was dropped until its lease ran out, then run again, 21 times, and the run was told
    they were lost with their worker."""
    handle = await client.start(flows.generator_exit_flow)
    assert await handle.result(timeout=10) == "ActionError: GeneratorExit: raised by the action"
    (step,) = await handle.steps()
    assert step.attempt == 1 and step.status == StepStatus.FAILED and step.error["type"] == "GeneratorExit"
    assert flows.CALLS["raises_generator_exit"] == 1
