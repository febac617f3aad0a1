"""Run control on both backends: every transition, idempotency, races, retry, fork, events, versions."""

from __future__ import annotations

import asyncio
import collections.abc

import pytest

import cairn
from cairn import IllegalTransition, RunStatus, StepStatus
from tests import control_flows as cf
from tests import flows
from tests import timeout_flows as tf
from tests.conftest import eventually
from tests.helpers import holds, status_is

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(60)]


@pytest.fixture(autouse=True)
def _reset_flags() -> collections.abc.Iterator[None]:
    cf.BROKEN["on"] = True
    cf.GATE.clear()
    yield
    cf.GATE.set()
    cf.make_versioned(1)


async def _kinds(handle: cairn.RunHandle) -> list[str]:
    return [e.kind for e in await handle.events()]


async def test_pause_holds_a_run_and_resume_continues_it(client: cairn.Client) -> None:
    handle = await client.start(flows.Approval, "P1")
    await eventually(lambda: status_is(handle, RunStatus.WAITING), what="waiting")
    assert await handle.pause() == RunStatus.PAUSED
    assert await handle.pause() == RunStatus.PAUSED  # idempotent
    await handle.signal("approval", {"ok": True, "by": "carol"})
    assert await handle.status() == RunStatus.PAUSED  # a paused run takes no new steps
    assert await handle.resume() == RunStatus.RUNNING
    assert await handle.resume() in (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.COMPLETED)  # idempotent
    assert await handle.result(timeout=10) == "P1:carol:approved"
    kinds = await _kinds(handle)
    assert kinds.index("paused") < kinds.index("signal.received") < kinds.index("resumed") < kinds.index("completed")


async def test_a_paused_runs_row_says_it_changed_when_a_step_of_it_ends(client: cairn.Client) -> None:
    """What the dashboard's run page follows (updated_at): an action under way when its run was
    paused ended, and the page showed it running until reloaded. The run stays paused."""
    handle = await client.start(flows.gated, "paused-mid-step")
    await eventually(lambda: _step_running(handle), what="the gated action running")
    assert await handle.pause() == RunStatus.PAUSED
    before = (await handle.describe()).updated_at
    flows.GATES["paused-mid-step"].set()
    await eventually(lambda: _step_completed(handle), what="the action's result recorded")
    row = await handle.describe()
    assert row.status == RunStatus.PAUSED and row.updated_at > before
    assert await handle.resume() == RunStatus.RUNNING
    assert await handle.result(timeout=10) == "paused-mid-step"


async def _step_running(handle: cairn.RunHandle) -> bool:
    return any(s.status == StepStatus.RUNNING for s in await handle.steps())


async def _step_completed(handle: cairn.RunHandle) -> bool:
    return any(s.status == StepStatus.COMPLETED for s in await handle.steps())


async def test_illegal_transitions_are_clear_and_change_nothing(client: cairn.Client) -> None:
    handle = await client.start(flows.Sequence3, 1)
    await handle.result(timeout=10)
    events_before = await handle.events()
    for op, verb in (
        (handle.resume, "resume"),
        (handle.pause, "pause"),
        (handle.cancel, "cancel"),
        (handle.retry, "retry"),
    ):
        with pytest.raises(IllegalTransition, match=f"cannot {verb} run '{handle.id}': it is completed"):
            await op()
    assert await handle.status() == RunStatus.COMPLETED
    assert await handle.events() == events_before
    with pytest.raises(cairn.RunNotFound):
        await client.get("missing").pause()


async def test_cancel_during_a_running_action(client: cairn.Client) -> None:
    handle = await client.start(cf.blocked, 7)
    await eventually(lambda: _step_status(handle, 1, StepStatus.RUNNING), what="action running")
    assert await handle.cancel() == RunStatus.CANCELLED
    assert await handle.kill() == RunStatus.CANCELLED  # alias, idempotent
    with pytest.raises(cairn.WorkflowCancelled):
        await handle.result(timeout=5)
    cf.GATE.set()  # the action finishes after the cancel: its late result is dropped
    await eventually(lambda: holds(flows.CALLS["blocking:7"] == 1), what="action returned")
    (step,) = await handle.steps()
    assert step.status == StepStatus.CANCELLED and step.result is None
    assert await handle.status() == RunStatus.CANCELLED


async def test_cancel_stops_a_running_async_action(client: cairn.Client) -> None:
    """A cancelled run's action does not run on for nothing: its worker cancels it at its next
    heartbeat (an async action gets CancelledError)."""
    key = f"cancel-{id(client)}"
    handle = await client.start(tf.naps_long, key)
    await eventually(lambda: _step_status(handle, 1, StepStatus.RUNNING), what="action running")
    assert await handle.cancel() == RunStatus.CANCELLED
    await eventually(lambda: holds(key in tf.CANCELLED), what="the action cancelled")
    (step,) = await handle.steps()
    assert step.status == StepStatus.CANCELLED and step.result is None


async def test_cancel_cascades_to_children_and_races_safely(client: cairn.Client) -> None:
    handle = await client.start(cf.waits_for_child, 3)
    child = client.get("child-of-3")
    await eventually(lambda: status_is(child, RunStatus.WAITING), what="child waiting")
    results = await asyncio.gather(handle.cancel(), handle.cancel(), child.cancel(), return_exceptions=True)
    assert all(r == RunStatus.CANCELLED for r in results), results
    assert await child.status() == RunStatus.CANCELLED
    assert await handle.status() == RunStatus.CANCELLED


async def test_retry_a_failed_run_from_the_failed_step(client: cairn.Client) -> None:
    handle = await client.start(cf.three_then_fragile, 1)
    with pytest.raises(RuntimeError, match="fragile is broken for 3"):
        await handle.result(timeout=10)
    cf.BROKEN["on"] = False  # the fix is deployed
    assert await handle.retry() == RunStatus.RUNNING
    assert await handle.result(timeout=10) == 30
    assert flows.CALLS["add_one:1"] == 1 and flows.CALLS["add_one:2"] == 1  # earlier steps not re-run
    assert flows.CALLS["fragile:3"] == 2
    assert "retried" in await _kinds(handle)


async def test_on_failure_pause_then_retry_after_a_fix(client: cairn.Client) -> None:
    handle = await client.start(cf.pausing, 1)
    await eventually(lambda: status_is(handle, RunStatus.PAUSED), what="paused on error")
    row = await handle.describe()
    assert row.pause_reason == "error"
    assert "step 2 (tests.control_flows.fragile) failed: fragile is broken for 2" in (row.error or "")
    with pytest.raises(TimeoutError):
        await handle.result(timeout=0.1)  # paused, not failed
    cf.BROKEN["on"] = False
    assert await handle.retry() == RunStatus.RUNNING
    assert await handle.retry() in (RunStatus.RUNNING, RunStatus.WAITING, RunStatus.COMPLETED)  # twice is fine
    assert await handle.result(timeout=10) == 21
    assert flows.CALLS["add_one:1"] == 1


async def test_pause_while_retry_backoff_is_pending(client: cairn.Client) -> None:
    handle = await client.start(cf.backoff_flow, "b1")
    await eventually(lambda: _has_event(handle, "step.retried"), what="first attempt failed")
    assert await handle.pause() == RunStatus.PAUSED
    due = (await handle.steps())[0]
    await eventually(lambda: _clock_past(client, (due.started_at or 0) + 0.6), what="backoff elapsed")
    assert flows.CALLS["fails_once:b1"] == 1  # the retry did not run while paused
    await handle.resume()
    assert await handle.result(timeout=10) == "b1"
    assert flows.CALLS["fails_once:b1"] == 2


async def test_fork_reuses_the_journal_up_to_a_step(client: cairn.Client) -> None:
    original = await client.start(flows.Sequence3, 10)
    assert await original.result(timeout=10) == 13
    forked = await original.fork(from_step=2)
    assert forked.id != original.id
    assert await forked.result(timeout=10) == 13
    assert flows.CALLS["add_one:10"] == 1 and flows.CALLS["add_one:11"] == 1  # steps 1-2 reused
    assert flows.CALLS["add_one:12"] == 2  # step 3 ran again in the fork
    assert [s.seq for s in await forked.steps()] == [1, 2, 3]
    with pytest.raises(ValueError, match="from_step must be between 0 and 3"):
        await original.fork(from_step=9)


@cairn.workflow
async def adds_then_naps(x: int) -> int:
    y = await flows.add_one(x)
    await cairn.sleep(0.3)
    return y


async def test_a_cancelled_run_forked_from_the_step_it_was_cancelled_in_runs_that_step_again(
    client: cairn.Client,
) -> None:
    """The steps a cancel stopped were copied cancelled and stayed so: the fork waited for ever."""
    original = await client.start(adds_then_naps, 40)
    await eventually(lambda: status_is(original, RunStatus.WAITING), what="the run asleep")
    assert await original.cancel() == RunStatus.CANCELLED
    forked = await original.fork(from_step=2)
    assert await forked.result(timeout=10) == 41
    assert [s.status for s in await forked.steps()] == [StepStatus.COMPLETED, StepStatus.COMPLETED]


async def test_where_id_controls_by_id(client: cairn.Client) -> None:
    await client.start(flows.Approval, "W1", id="welcome@example.com")
    handle = flows.Approval.where_id("welcome@example.com", client)
    await eventually(lambda: status_is(handle, RunStatus.WAITING), what="waiting")
    assert await flows.Approval.where_id("welcome@example.com", client).pause() == RunStatus.PAUSED
    assert await flows.Approval.where_id("welcome@example.com", client).kill() == RunStatus.CANCELLED


async def test_events_describe_every_state_change(client: cairn.Client) -> None:
    handle = await client.start(flows.retry_flow, "ev", 1)
    await handle.result(timeout=10)
    kinds = await _kinds(handle)
    assert kinds[0] == "started"
    for kind in ("step.scheduled", "step.started", "step.retried", "step.completed", "completed"):
        assert kind in kinds, kinds
    retried = next(e for e in await handle.events() if e.kind == "step.retried")
    assert retried.step == 1 and retried.detail["attempt"] == 1


async def test_changed_code_pauses_and_patched_lets_it_continue(client: cairn.Client) -> None:
    cf.make_versioned(1)
    old = await client.start("tests.versioned", 1)
    await eventually(lambda: status_is(old, RunStatus.WAITING), what="waiting for go")
    await old.signal("go")
    await eventually(lambda: _steps_count(old, 4), what="past the changed point")
    cf.make_versioned(2)  # deployed without a guard: replay diverges at step 3
    await old.signal("go2")
    await eventually(lambda: status_is(old, RunStatus.PAUSED), what="paused on divergence")
    row = await old.describe()
    assert row.pause_reason == "nondeterminism"
    assert "step 3" in (row.error or "") and "tests.flows.double" in (row.error or "")
    cf.make_versioned(3)  # the same change behind cairn.patched(): old runs keep the old branch
    await old.retry()
    assert await old.result(timeout=10) == [2, 3]
    new = await client.start("tests.versioned", 1)
    await new.signal("go")
    await new.signal("go2")
    assert await new.result(timeout=10) == [2, 4]  # new runs take the new branch


async def _step_status(handle: cairn.RunHandle, seq: int, status: StepStatus) -> bool:
    return any(s.seq == seq and s.status == status for s in await handle.steps())


async def _steps_count(handle: cairn.RunHandle, n: int) -> bool:
    return len(await handle.steps()) >= n


async def _has_event(handle: cairn.RunHandle, kind: str) -> bool:
    return kind in await _kinds(handle)


async def _clock_past(client: cairn.Client, t: float) -> bool:
    return await client.store.now() > t
