"""A timer that fires late (its worker busy, draining or down) still happened at its due time: a
result that came after that time loses to it, as it would have on time. Delivered in one activation
with such a result, it was handed over in step order, after the result, and `asyncio.wait_for`
returned a value that came too late."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import cairn
from cairn import RunStatus
from cairn.engine.instance import WorkflowInstance
from cairn.records import ActivationResult
from cairn.types import StepKind
from tests import flows
from tests.conftest import eventually
from tests.helpers import raw_sql, status_is

pytestmark = pytest.mark.timeout(60)


@cairn.workflow
async def signal_within_the_hour() -> str:
    try:
        return str(await asyncio.wait_for(cairn.wait_for_signal("go"), 3600))
    except TimeoutError:
        return "timed out"


@cairn.workflow
async def signal_within_the_hour_or_later() -> str:
    try:
        return str(await asyncio.wait_for(cairn.wait_for_signal("go"), 3600))
    except TimeoutError:
        return f"timed out, then {await cairn.wait_for_signal('go')}"


@cairn.workflow
async def gated_within(name: str, timeout: float) -> str:
    try:
        return await asyncio.wait_for(flows.wait_at_gate(name), timeout)
    except TimeoutError:
        return "timed out"


async def _waiting_with_the_worker_gone(
    client: cairn.Client, workflow: object = signal_within_the_hour
) -> cairn.RunHandle:
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(workflow)
        await eventually(lambda: status_is(handle, RunStatus.WAITING), what="the run waiting")
    return handle


async def test_a_signal_sent_after_the_timeout_loses_to_it(client: cairn.Client, db_url: str) -> None:
    handle = await _waiting_with_the_worker_gone(client)
    # The hour passes with no worker up; then the signal comes, and a worker after it.
    raw_sql(db_url, "UPDATE cairn_steps SET due_at = due_at - 7200 WHERE run_id = ? AND kind = 'timer'", handle.id)
    await handle.signal("go", "late")
    async with cairn.Worker(client, poll_interval=0.05):
        assert await handle.result(timeout=20) == "timed out"


async def test_a_signal_that_came_after_the_timeout_is_kept_for_the_next_wait(
    client: cairn.Client, db_url: str
) -> None:
    """The claim matched it to the wait that the timeout then stopped: it is given back, not lost."""
    handle = await _waiting_with_the_worker_gone(client, signal_within_the_hour_or_later)
    raw_sql(db_url, "UPDATE cairn_steps SET due_at = due_at - 7200 WHERE run_id = ? AND kind = 'timer'", handle.id)
    await handle.signal("go", "late")
    async with cairn.Worker(client, poll_interval=0.05):
        assert await handle.result(timeout=20) == "timed out, then late"
    waits = [s for s in await handle.steps() if s.kind == "signal"]
    assert [s.status for s in waits] == ["cancelled", "completed"], waits


@cairn.workflow
async def two_waits_then_one(timeout: float = 3600) -> list[object]:
    first = asyncio.ensure_future(cairn.wait_for_signal("x", timeout=timeout))
    second = asyncio.ensure_future(cairn.wait_for_signal("x"))
    both = await asyncio.gather(first, second, return_exceptions=True)
    third = await cairn.wait_for_signal("x")
    return [type(r).__name__ if isinstance(r, BaseException) else r for r in both] + [third]


async def test_signals_that_came_after_a_timeout_keep_their_order_for_the_waits_left(
    client: cairn.Client, db_url: str
) -> None:
    """Matched at the claim, 1 to the wait the timeout then stopped and 2 to the next wait, the
    run got 2 before 1 (1, given back, went to the third wait). Matched once the timer has fired,
    they go to the waits still open, in order."""
    handle = await _waiting_with_the_worker_gone(client, two_waits_then_one)
    raw_sql(db_url, "UPDATE cairn_steps SET due_at = due_at - 7200 WHERE run_id = ? AND kind = 'timer'", handle.id)
    await handle.signal("x", 1)
    await handle.signal("x", 2)
    async with cairn.Worker(client, poll_interval=0.05):
        assert await handle.result(timeout=20) == ["TimeoutError", 1, 2]


async def test_signals_that_came_after_a_timer_an_earlier_claim_fired_keep_their_order(
    client: cairn.Client, db_url: str
) -> None:
    """The claim that fired the timer was given back before its activation committed (its worker
    stopped, say); the signals came after. The next claim fires nothing, yet the timer is still to
    reach the workflow: matched then, 1 went to the wait the timeout stopped and the run got 2 first."""
    handle = await _waiting_with_the_worker_gone(client, two_waits_then_one)
    raw_sql(db_url, "UPDATE cairn_steps SET due_at = due_at - 7200 WHERE run_id = ? AND kind = 'timer'", handle.id)
    raw_sql(db_url, "UPDATE cairn_runs SET ready_at = ready_at - 7200 WHERE id = ?", handle.id)
    run = await client.store.get_run(handle.id)
    assert run is not None
    work = await client.store.claim_work("gone", [run.workflow], [], None, 10, 10, 30.0)
    assert [c.run.id for c in work.runs] == [handle.id] and any(s.kind == StepKind.TIMER for s in work.runs[0].batch)
    await client.store.release_run(work.runs[0])  # the timer fired, not handed to the workflow
    await handle.signal("x", 1)
    await handle.signal("x", 2)
    async with cairn.Worker(client, poll_interval=0.05):
        assert await handle.result(timeout=20) == ["TimeoutError", 1, 2]


async def test_signals_that_came_after_a_timeout_while_the_activation_ran_keep_their_order(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced: the activation that begins both waits runs on past the timeout's due time (held by
    the test), and both signals come meanwhile. Its commit, which leaves the waits open, matched 1
    to the wait the timeout then stopped and 2 to the next: 1, given back, went to the third wait,
    and the run got 2 before 1. The commit leaves them for the claim that fires the timer, and
    they go to the waits still open after it, in order."""
    ran, go = asyncio.Event(), asyncio.Event()
    due: list[float] = []
    real = WorkflowInstance.activate_async

    async def held(self: WorkflowInstance, batch: Any, now: float) -> ActivationResult:
        result = await real(self, batch, now)
        if self.run_id == "short-waits" and not ran.is_set():
            due.extend(s.due_at for s in result.new_steps if s.kind == StepKind.TIMER and s.due_at is not None)
            ran.set()
            await asyncio.wait_for(go.wait(), 10)  # the activation runs on, past the timeout
        return result

    monkeypatch.setattr(WorkflowInstance, "activate_async", held)
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(two_waits_then_one, 0.2, id="short-waits")
        await asyncio.wait_for(ran.wait(), 10)
        assert len(due) == 1
        await eventually(lambda: _clock_past(client, due[0]), what="the timeout due")
        await handle.signal("x", 1)
        await handle.signal("x", 2)
        go.set()
        assert await handle.result(timeout=20) == ["TimeoutError", 1, 2]
    waits = [s for s in await handle.steps() if s.kind == "signal"]
    assert [s.status for s in waits] == ["cancelled", "completed", "completed"], waits


async def _clock_past(client: cairn.Client, when: float) -> bool:
    return await client.store.now() > when


async def test_a_signal_sent_before_the_timeout_wins_though_the_timer_is_due_too(
    client: cairn.Client, db_url: str
) -> None:
    handle = await _waiting_with_the_worker_gone(client)
    await handle.signal("go", "in time")
    # The timer comes due just after the signal came, both before any worker takes the run.
    raw_sql(
        db_url,
        "UPDATE cairn_steps SET due_at = (SELECT created_at FROM cairn_signals WHERE run_id = ?) + 0.001 "
        "WHERE run_id = ? AND kind = 'timer'",
        handle.id,
        handle.id,
    )
    async with cairn.Worker(client, poll_interval=0.05):
        assert await handle.result(timeout=20) == "in time"


async def test_an_action_that_ends_after_the_timeout_while_its_worker_drains_loses_to_it(client: cairn.Client) -> None:
    """A draining worker takes no run, so the timer does not fire while the action runs on; the
    action's result, folded into the run it holds, was delivered alone and won."""
    gate = "late-timers-drain"
    worker = cairn.Worker(client, poll_interval=0.05)
    await worker.start()
    handle = await client.start(gated_within, gate, 0.3)
    await eventually(lambda: _action_running(handle), what="the action running")
    stopping = asyncio.ensure_future(worker.stop(grace=30))
    began = time.monotonic()
    await eventually(lambda: _past(began, 0.5), what="the timeout passed")
    flows.GATES[gate].set()
    await stopping
    async with cairn.Worker(client, poll_interval=0.05):
        assert await handle.result(timeout=20) == "timed out"


async def _action_running(handle: cairn.RunHandle) -> bool:
    return any(s.kind == "action" and s.status == "running" for s in await handle.steps())


async def _past(began: float, seconds: float) -> bool:
    return time.monotonic() - began > seconds


@cairn.action(queue="late-timer-acts")
def gate_on_the_side(name: str) -> str:
    flows.GATES[name].wait(30)
    return name


@cairn.workflow
async def fast_within_slow_after(key: str) -> list[str]:
    slow = asyncio.ensure_future(gate_on_the_side(f"{key}:slow"))
    try:
        fast = await asyncio.wait_for(gate_on_the_side(f"{key}:fast"), 3600)
    except TimeoutError:
        fast = "timed out"
    return [fast.rsplit(":", 1)[-1], (await slow).rsplit(":", 1)[-1]]


async def _steps_by_role(handle: cairn.RunHandle) -> dict[str, cairn.StepInfo]:
    steps = await handle.steps()
    roles: dict[str, cairn.StepInfo] = {}
    for s in steps:
        role = "timer" if s.kind == "timer" else str((s.args or {}).get("name", "")).rsplit(":", 1)[-1]
        roles[role] = s
    return roles


async def _ended(handle: cairn.RunHandle, role: str) -> bool:
    step = (await _steps_by_role(handle)).get(role)
    return step is not None and step.status == "completed"


async def test_a_result_that_came_before_the_timeout_wins_though_a_lower_step_came_after_it(
    client: cairn.Client, db_url: str
) -> None:
    """Cut at the first result of the batch that ended after the timer (the slow one, a lower
    step), the batch handed the timeout over before the fast one, which had ended in time."""
    key = f"cut-{id(client)}"
    actions = cairn.Worker(client, poll_interval=0.05, queues=["late-timer-acts"])
    await actions.start()
    try:
        async with cairn.Worker(client, poll_interval=0.05, queues=["default"]):
            handle = await client.start(fast_within_slow_after, key)
            await eventually(lambda: _action_running_count(handle, 2), what="both actions running")
        flows.GATES[f"{key}:fast"].set()  # with no worker of the workflow up
        await eventually(lambda: _ended(handle, "fast"), what="the fast one ended")
        flows.GATES[f"{key}:slow"].set()
        await eventually(lambda: _ended(handle, "slow"), what="the slow one ended")
        roles = await _steps_by_role(handle)
        fast, slow, timer = (roles[r] for r in ("fast", "slow", "timer"))
        assert fast.seq > slow.seq and fast.completed_at is not None and slow.completed_at is not None
        # The timeout falls between the two ends, both before the workflow's worker is back.
        due = (fast.completed_at + slow.completed_at) / 2
        raw_sql(db_url, "UPDATE cairn_steps SET due_at = ? WHERE run_id = ? AND seq = ?", due, handle.id, timer.seq)
        async with cairn.Worker(client, poll_interval=0.05, queues=["default"]):
            assert await handle.result(timeout=20) == ["fast", "slow"]
    finally:
        await actions.stop()


async def _action_running_count(handle: cairn.RunHandle, n: int) -> bool:
    return sum(s.kind == "action" and s.status == "running" for s in await handle.steps()) == n
