"""A retry policy given by hand retries any exception up to its attempts (on the action or per
call); an action given none retries only transient errors. Both backends."""

from __future__ import annotations

import pytest

import cairn
from tests import retry_flows as rf

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    rf.ATTEMPTS.clear()


async def test_a_policy_on_the_action_retries_an_ordinary_exception(client: cairn.Client) -> None:
    handle = await client.start(rf.on_the_action, "k1")
    assert await handle.result(timeout=30) == "ok after 3"
    (step,) = await handle.steps()
    assert step.attempt == 3


async def test_a_policy_given_per_call_retries_an_ordinary_exception(client: cairn.Client) -> None:
    assert await (await client.start(rf.PerCall, "k2")).result(timeout=30) == "ok after 3"


async def test_without_a_policy_an_ordinary_exception_reaches_the_workflow_at_once(client: cairn.Client) -> None:
    result = await (await client.start(rf.by_default, "k3")).result(timeout=30)
    assert result == "failed: attempt 1 of k3 is refused"
    assert rf.ATTEMPTS["k3"] == 1


async def test_a_policy_the_worker_cannot_apply_fails_the_step_instead_of_wedging_the_run(client: cairn.Client) -> None:
    """The attempt was dropped with a log line: its lease ran out, it was taken again, for ever,
    the step shown running and the run never finishing."""
    handle = await client.start(rf.unreadable, "k4")
    result = await handle.result(timeout=30)
    assert result.startswith("failed: ") and "this policy cannot be written down" in result, result
    assert rf.ATTEMPTS["k4"] == 0  # the action itself never ran
    (step,) = await handle.steps()
    assert step.status == cairn.StepStatus.FAILED and step.attempt == 1
