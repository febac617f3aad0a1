"""The workflow vocabulary end to end: client + in-process worker, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

import cairn
from cairn import RunStatus, StepKind, StepStatus
from tests import flows
from tests.conftest import eventually
from tests.helpers import status_is

pytestmark = pytest.mark.usefixtures("worker")


async def test_class_workflow_runs_actions_in_order(client: cairn.Client) -> None:
    handle = await client.start(flows.Sequence3, 1)
    assert await handle.result(timeout=10) == 4
    steps = await handle.steps()
    assert [(s.seq, s.kind, s.name, s.args, s.result) for s in steps] == [
        (1, StepKind.ACTION, "tests.flows.add_one", {"x": 1}, 2),
        (2, StepKind.ACTION, "tests.flows.add_one", {"x": 2}, 3),
        (3, StepKind.ACTION, "tests.flows.add_one", {"x": 3}, 4),
    ]
    assert all(s.status == StepStatus.COMPLETED and s.attempt == 1 for s in steps)
    assert await handle.status() == RunStatus.COMPLETED


async def test_handle_method_and_function_and_plain_def(client: cairn.Client) -> None:
    assert await client.run(flows.HandleStyle, 21, timeout=10) == 42
    assert await client.run(flows.function_style, 5, timeout=10) == 11
    assert await client.run(flows.plain_def, [1, -2, 3], timeout=10) == {
        "total": 8,
        "errors": ["negative -2"],
        "now": True,
    }


async def test_gather_fan_out(client: cairn.Client) -> None:
    handle = await client.start(flows.fan_out, 20)
    assert await handle.result(timeout=20) == list(range(1, 21))
    steps = await handle.steps()
    assert [s.args["x"] for s in steps] == list(range(20))


async def test_gather_return_exceptions(client: cairn.Client) -> None:
    assert await client.run(flows.gather_exceptions, timeout=10) == ["2", "ValueError", "4"]


async def test_gather_propagates_first_exception(client: cairn.Client) -> None:
    assert await client.run(flows.gather_raises, timeout=10) == "caught first failure"


async def test_steps_numbered_in_schedule_order_not_completion_order(client: cairn.Client) -> None:
    handle = await client.start(flows.out_of_order)
    assert await handle.result(timeout=10) == ["slow", "fast"]
    steps = await handle.steps()
    assert [(s.seq, s.args["value"]) for s in steps] == [(1, "slow"), (2, "fast")]
    assert steps[1].completed_at is not None and steps[0].completed_at is not None
    assert steps[1].completed_at < steps[0].completed_at


async def test_create_task(client: cairn.Client) -> None:
    assert await client.run(flows.tasks_flow, 10, timeout=10) == 31


async def test_wait_for_is_a_durable_timeout(client: cairn.Client) -> None:
    handle = await client.start(flows.wait_for_flow)
    assert await handle.result(timeout=10) == "timed out"
    kinds = {s.kind: s for s in await handle.steps()}
    assert kinds[StepKind.TIMER].status == StepStatus.COMPLETED
    assert kinds[StepKind.ACTION].status == StepStatus.CANCELLED


async def test_durable_sleep_records_timers_and_logical_time(client: cairn.Client) -> None:
    handle = await client.start(flows.sleeper, 0.1)
    assert await handle.result(timeout=10) == "slept True"
    timers = [s for s in await handle.steps() if s.kind == StepKind.TIMER]
    assert len(timers) == 2 and all(t.status == StepStatus.COMPLETED for t in timers)


@cairn.workflow
async def sleeps_until(deadline_in: float) -> str:
    await cairn.sleep(deadline_in)  # a deadline already passed: negative
    await cairn.sleep(timedelta(seconds=deadline_in))
    return "went on"


async def test_a_sleep_until_a_deadline_already_passed_returns_at_once(client: cairn.Client) -> None:
    """`sleep(deadline - cairn.now())` past the deadline failed the run ("must not be negative");
    `asyncio.sleep` returns at once, and so does it now."""
    handle = await client.start(sleeps_until, -5.0)
    assert await handle.result(timeout=10) == "went on"
    assert [s for s in await handle.steps() if s.kind == StepKind.TIMER] == []


async def test_try_except_around_failing_action(client: cairn.Client) -> None:
    assert await client.run(flows.try_except, "disk full", timeout=10) == "recovered from disk full"


async def test_failed_workflow_reraises_original_exception(client: cairn.Client) -> None:
    handle = await client.start(flows.fails, "bad input")
    with pytest.raises(ValueError, match="bad input") as info:
        await handle.result(timeout=10)
    assert "Original traceback" in "".join(info.value.__notes__)
    assert await handle.status() == RunStatus.FAILED


async def test_recorded_values_replay_identically(client: cairn.Client) -> None:
    handle = await client.start(flows.recorded_values)
    value = await handle.result(timeout=10)
    records = [s for s in await handle.steps() if s.kind == StepKind.RECORD]
    assert [r.name for r in records] == ["now", "random", "uuid4"]
    assert 0 <= value["random"] < 1
    assert len(value["uuid"]) == 36


async def test_child_workflows_and_recursion(client: cairn.Client) -> None:
    handle = await client.start(flows.parent_flow, 1)
    assert await handle.result(timeout=10) == 2 + 3
    children = [s for s in await handle.steps() if s.kind == StepKind.CHILD]
    assert [c.result for c in children] == [2, 3]
    named = client.get("named-child-1")
    assert await named.result(timeout=5) == 3
    assert await client.run(flows.factorial, 6, timeout=20) == 720


async def test_signal_wait_then_send(client: cairn.Client) -> None:
    handle = await client.start(flows.Approval, "A1")
    await eventually(lambda: status_is(handle, RunStatus.WAITING), what="run waiting for its signal")
    await handle.signal("approval", {"ok": True, "by": "alice"})
    assert await handle.result(timeout=10) == "A1:alice:approved"
    assert (await handle.properties())["state"] == "approved"


async def test_signal_sent_before_wait_is_buffered(client: cairn.Client) -> None:
    handle = await client.start(flows.Approval, "B2", id="buffered")
    await handle.signal("approval", {"ok": False, "by": "bob"})
    assert await handle.result(timeout=10) == "B2:bob:rejected"


async def test_signal_timeout_and_send_from_workflow(client: cairn.Client) -> None:
    assert await client.run(flows.signal_timeout, timeout=10) == "no signal"
    target = await client.start(flows.Approval, "C3")
    assert await client.run(flows.ping_pong, target.id, timeout=10) == "sent"
    assert await target.result(timeout=10) == "C3:ping_pong:approved"


async def test_a_run_failed_on_a_signal_wait_timing_out_says_which_signal(client: cairn.Client) -> None:
    handle = await client.start(flows.signal_never_comes)
    with pytest.raises(TimeoutError, match=r"no signal 'never' came within 0\.2s"):
        await handle.result(timeout=10)


async def test_memory_from_workflow_and_actions(client: cairn.Client) -> None:
    handle = await client.start(flows.memory_flow, "answer")
    assert await handle.result(timeout=10) == {"keys": ["answer", "from_workflow"], "workflow": 42, "action": 42}
    assert await handle.memory() == {"answer": 42, "from_workflow": {"a": 1}}


async def test_a_key_an_action_writes_twice_keeps_its_last_value(client: cairn.Client) -> None:
    handle = await client.start(flows.memory_rewritten, "k")
    assert await handle.result(timeout=10) == 2
    assert await handle.memory() == {"k": 2}


async def test_properties_recorded_after_each_step(client: cairn.Client) -> None:
    handle = await client.start(flows.Sequence3, 0)
    await handle.result(timeout=10)
    assert await handle.properties() == {"stage": "done"}
    history = await handle.properties(history=True)
    assert [h["properties"]["stage"] for h in history] == ["start", "one", "two", "done"]


async def test_pydantic_models_round_trip(client: cairn.Client) -> None:
    assert await client.run(flows.models_flow, 3, -4, timeout=10) == 7


async def test_asyncio_wait_first_completed_cancels_the_rest(client: cairn.Client) -> None:
    handle = await client.start(flows.wait_first)
    assert await handle.result(timeout=10) == ["fast"]
    statuses = {s.args["value"]: s.status for s in await handle.steps()}
    assert statuses == {"fast": StepStatus.COMPLETED, "slow": StepStatus.CANCELLED}


async def test_a_wait_of_nan_seconds_is_refused_where_it_is_written(client: cairn.Client) -> None:
    handle = await client.start(flows.nan_waits)
    told = await handle.result(timeout=20)
    assert (
        told[0]
        == told[3].replace("signal timeout", "sleep duration")
        == ("sleep duration must be a number of seconds or a timedelta, got nan")
    )
    assert told[1] == told[2] and told[1].startswith("a workflow's timer cannot wait nan seconds"), told
    assert [s.kind.value for s in await handle.steps()] == []  # no timer due at NaN


async def test_a_wait_of_infinite_seconds_is_refused_where_it_is_written_on_both_backends(client: cairn.Client) -> None:
    handle = await client.start(flows.nan_waits, "inf")
    told = await handle.result(timeout=20)
    assert told[0] == "sleep duration must be finite, got inf; leave it out to set no limit", told
    assert told[3] == "signal timeout must be finite, got inf; leave it out to set no limit", told
    assert told[1] == told[2] and told[1].startswith("a workflow's timer cannot wait for ever"), told
    assert [s.kind.value for s in await handle.steps()] == []  # no timer due at infinity
