"""`cairn.testing.environment`: time skipping, moving time by hand, replacing actions, on both backends."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from unittest.mock import AsyncMock, MagicMock, call

import pytest

import cairn
from cairn.registry import registry
from cairn.testing import Environment, EnvironmentStalled, environment
from tests.conftest import eventually
from tests.testing import envflows
from tests.testing.envflows import Approval, OpenApproval, Renewal


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[Environment]:
    async with environment(db_url) as e:
        yield e


async def test_a_thirty_day_sleep_between_two_actions_takes_no_wall_time(env: Environment) -> None:
    began = time.monotonic()
    result = await env.client.run(Renewal, "u-1", timeout=30)
    elapsed = time.monotonic() - began
    assert result == "real-charge-u-1-100|real-charge-u-1-100"
    assert env.now() - env.started >= timedelta(days=30)
    assert elapsed < 5, f"the 30-day sleep took {elapsed:.2f}s of wall time"
    props = await env.client.get((await env.client.list_runs(workflow=Renewal))[0].id).properties()
    assert datetime.fromisoformat(props["renewed"]) - datetime.fromisoformat(props["started"]) >= timedelta(days=30)
    # Real time outside the environment is untouched.
    assert abs(datetime.now(UTC) - cairn.now()) < timedelta(minutes=1)


async def test_a_signal_wait_with_a_one_hour_timeout_times_out_at_once(env: Environment) -> None:
    began = time.monotonic()
    assert await env.client.run(Approval, "o-1", timeout=30) == "timed out"
    assert time.monotonic() - began < 5
    assert env.now() - env.started >= timedelta(hours=1)


async def test_sleep_moves_logical_time_by_hand_and_a_signal_then_arrives(env: Environment) -> None:
    handle = await env.client.start(OpenApproval, "o-2")
    await env.sleep(timedelta(hours=2))
    await handle.signal("approve", {"by": "ada"})
    answer = await handle.result(timeout=30)
    assert answer.startswith("approved by ada after ")
    assert int(answer.rsplit(" ", 1)[1].rstrip("s")) >= 7200


async def test_without_time_skipping_a_timer_waits_for_env_sleep(db_url: str) -> None:
    async with environment(db_url, time_skipping=False) as env:
        handle = await env.client.start(Approval, "o-3")
        with pytest.raises(TimeoutError):
            await handle.result(timeout=0.5)  # an hour of real time would be needed
        await env.sleep(timedelta(hours=1, seconds=1))
        assert await handle.result(timeout=30) == "timed out"


async def test_retries_with_long_backoff_are_skipped(env: Environment) -> None:
    began = time.monotonic()
    assert await env.client.run(envflows.with_retries, uuid.uuid4().hex, timeout=30) == "ok after 3"
    assert time.monotonic() - began < 5
    assert env.now() - env.started >= timedelta(hours=3)  # backoff of 1h, then 2h


async def test_a_failure_after_a_long_sleep_reaches_the_caller_as_its_type(env: Environment) -> None:
    with pytest.raises(envflows.CardDeclined, match="card of bob declined"):
        await env.client.run(envflows.failing, "bob", timeout=30)
    assert env.now() - env.started >= timedelta(days=1)


async def test_children_that_sleep_are_skipped_too(env: Environment) -> None:
    assert await env.client.run(envflows.parent, 2, timeout=30) == [2, 3]
    assert env.now() - env.started >= timedelta(days=5)


async def test_replace_action_runs_the_fake_and_the_journal_records_the_action(env: Environment) -> None:
    envflows.CALLS.clear()

    async def fake_charge(user: str, cents: int) -> str:
        return f"fake-{user}-{cents}"

    with env.replace_action(envflows.charge, fake_charge):
        handle = await env.client.start(Renewal, "u-2")
        assert await handle.result(timeout=30) == "fake-u-2-100|fake-u-2-100"
    assert envflows.CALLS["charge:u-2"] == 0
    names = [s.name for s in await handle.steps() if s.kind == "action"]
    assert names == [envflows.charge.id, envflows.charge.id]
    # After the block the real action runs again.
    assert await env.client.run(Renewal, "u-3", timeout=30) == "real-charge-u-3-100|real-charge-u-3-100"


async def test_replace_action_as_a_statement_lasts_until_the_environment_exits(db_url: str) -> None:
    async def fake_charge(user: str, cents: int) -> str:
        return f"fake-{user}-{cents}"

    envflows.CALLS.clear()
    async with environment(db_url) as env:
        env.replace_action(envflows.charge, fake_charge)  # as SPEC writes it: no `with`
        assert await env.client.run(Renewal, "u-5", timeout=30) == "fake-u-5-100|fake-u-5-100"
        assert await env.client.run(Renewal, "u-6", timeout=30) == "fake-u-6-100|fake-u-6-100"
        assert envflows.CALLS["charge:u-5"] == envflows.CALLS["charge:u-6"] == 0
    assert registry.action(envflows.charge.id) is envflows.charge.defn  # the environment put it back
    async with environment(db_url) as env:
        assert await env.client.run(Renewal, "u-7", timeout=30) == "real-charge-u-7-100|real-charge-u-7-100"
    assert envflows.CALLS["charge:u-7"] == 2
    with pytest.raises(RuntimeError, match="has exited"):
        env.replace_action(envflows.charge, fake_charge)  # it would outlive the environment
    assert registry.action(envflows.charge.id) is envflows.charge.defn


async def test_replacements_of_one_action_stack_and_unwind_in_order(env: Environment) -> None:
    def fake(label: str) -> Callable[[str, int], Awaitable[str]]:
        async def charge(user: str, cents: int) -> str:
            return label

        return charge

    async def result(user: str) -> str:
        return str(await env.client.run(Renewal, user, timeout=30))

    outer = env.replace_action(envflows.charge, fake("outer"))
    with env.replace_action(envflows.charge, fake("block")):
        assert await result("n-1") == "block|block"
        with env.replace_action(envflows.charge, fake("inner")):
            assert await result("n-2") == "inner|inner"
        assert await result("n-3") == "block|block"  # the inner block's end brings back the one before
    assert await result("n-4") == "outer|outer"  # and the outer block's end the statement's
    # Overlapping: a statement inside a block outlives the block, whose end leaves it in place.
    with env.replace_action(envflows.charge, fake("short")):
        latest = env.replace_action(envflows.charge, fake("long"))
    assert await result("n-5") == "long|long"
    outer.restore()  # taking out an older one leaves the latest in place
    assert await result("n-6") == "long|long"
    latest.restore()
    assert await result("n-7") == "real-charge-n-7-100|real-charge-n-7-100"
    assert registry.action(envflows.charge.id) is envflows.charge.defn


def test_replace_action_checks_the_fake_against_the_signature() -> None:
    async def main() -> None:
        async with environment() as env:

            async def wrong_name(customer: str, cents: int) -> str:
                return ""

            async def wrong_type(user: str, cents: str) -> str:
                return ""

            def wrong_result(user: str, cents: int) -> int:
                return 0

            def sync_ok(user: str, cents: int) -> str:
                return "sync"

            with pytest.raises(TypeError, match="same parameters"):
                env.replace_action(envflows.charge, wrong_name)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="parameter 'cents'"):
                env.replace_action(envflows.charge, wrong_type)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="return type"):
                env.replace_action(envflows.charge, wrong_result)  # type: ignore[arg-type]
            with env.replace_action(envflows.charge, sync_ok):  # type: ignore[arg-type]
                assert await env.client.run(Renewal, "u-4", timeout=30) == "sync|sync"

    import asyncio

    asyncio.run(main())


@pytest.fixture
def nightly_schedule() -> Iterator[cairn.Schedule]:
    """A schedule declared in code for the test (every registered schedule is an environment's too)."""
    made = cairn.Schedule(
        "env-nightly", envflows.nightly, cron="0 2 * * *", args=("eu",), overlap="allow", catchup="all"
    )
    yield made
    registry._schedules.pop("env-nightly", None)


async def test_env_sleep_fires_the_schedule_ticks_it_passes(db_url: str, nightly_schedule: cairn.Schedule) -> None:
    async with environment(db_url) as env:
        assert await env.client.list_runs(workflow=envflows.nightly) == []
        await env.sleep(timedelta(days=3))
        runs = await env.client.list_runs(workflow=envflows.nightly)  # started by the time sleep returns
        assert len(runs) == 3 and all("T02:00:00" in r.id for r in runs), [r.id for r in runs]
        assert {await env.client.get(r.id).result(timeout=30) for r in runs} == {"report eu"}


async def test_env_sleep_starts_a_held_tick_when_the_previous_run_ends_as_a_worker_does(db_url: str) -> None:
    """overlap="buffer_one" starts the held tick as the previous run ends; under env.sleep it started
    at the next tick or timer after that (+30 min here, not +25)."""
    made = cairn.Schedule("env-held", envflows.long_job, every=timedelta(minutes=10), args=(25,), overlap="buffer_one")
    try:
        async with environment(db_url, time_skipping=False) as env:
            await env.sleep(timedelta(minutes=50))
            first, second, *_ = sorted(
                await env.client.list_runs(workflow=envflows.long_job), key=lambda r: r.created_at
            )
            assert first.completed_at is not None
            assert second.created_at - first.created_at == pytest.approx(25 * 60, abs=1), (first, second)
            assert second.created_at >= first.completed_at
    finally:
        registry._schedules.pop(made.id, None)


@pytest.mark.parametrize("flow", ["calls_slow_async", "calls_held_for_ever"])
async def test_leaving_the_environment_does_not_wait_for_actions_under_way(db_url: str, flow: str) -> None:
    """A test that failed while an action ran left its environment 30 s later (the worker's grace
    for an async action), or never (a plain `def` one blocked on its thread): the environment's
    database goes next, and nothing could take the work over."""
    began = 0.0
    envflows.HELD.clear()
    try:
        with pytest.raises(AssertionError, match="the test failed"):
            async with environment(db_url) as env:
                handle = await env.client.start(getattr(envflows, flow))

                async def running() -> bool:
                    return any(s.status == cairn.StepStatus.RUNNING for s in await handle.steps())

                await eventually(running, what="the action under way")
                began = time.monotonic()
                raise AssertionError("the test failed")
        assert time.monotonic() - began < 5
    finally:
        envflows.HELD.set()  # the abandoned thread ends


async def test_skipped_hours_do_not_make_the_environments_worker_look_dead(db_url: str) -> None:
    """After a skip of an hour, the worker's last heartbeat was an hour old by the environment's
    clock: its own sweep reported the runs as served by no live worker ('blocked' events, warnings
    that they cannot progress) while it ran them."""
    async with environment(db_url, lease=0.3) as env:  # its sweep: every 0.1 s
        handles = [await env.client.start(envflows.hourly, i) for i in range(4)]
        assert [await h.result() for h in handles] == [0, 1, 2, 3]
        assert env.skipped >= timedelta(hours=3) - timedelta(seconds=5)
        for h in handles:
            assert not [e for e in await h.events() if e.kind == "blocked"]
            assert await h.diagnose() is None


async def test_a_run_paused_on_an_error_says_the_error_when_awaited(db_url: str) -> None:
    """Awaiting a run paused on an error (on_failure="pause", a divergence) raised EnvironmentStalled
    saying only that nothing could move it: the error the test needed was not in it."""
    async with environment(db_url, stall_timeout=0.5) as env:
        said = r"it is paused on CardDeclined: step 1 \(tests.testing.envflows.decline\) failed: card of ann declined"
        with pytest.raises(EnvironmentStalled, match=said):
            await env.client.run(envflows.pauses_on_decline, "ann")


async def test_runs_waiting_for_a_place_in_their_queue_are_skipped_to_in_turn(db_url: str) -> None:
    """Three runs of a queue of concurrency 1, each sleeping a day: the environment took the queue's
    "look again in 0.1 s" for a timer and skipped 0.1 s at a time (17 minutes of the three days in
    15 s), and the test hung. It skips to the sleeping run's timer, and the next one starts then."""
    async with environment(db_url) as env:
        handles = [await env.client.start(envflows.naps_in_turn, i) for i in range(3)]
        began = time.monotonic()
        assert [await h.result(timeout=30) for h in handles] == [0, 1, 2]
        assert time.monotonic() - began < 10
        assert env.skipped >= timedelta(days=3) - timedelta(seconds=5)


async def test_a_workflow_registered_after_the_environment_started_is_served(db_url: str) -> None:
    """The worker read the registry once: a workflow a test module imported (or defined) once its
    environment was up ran its first activation, then waited for ever on its timer."""
    async with environment(db_url, stall_timeout=2) as env:
        await env.sleep(timedelta(seconds=1))  # the worker has claimed (and read the registry) already
        late_id = f"tests.testing.late_{uuid.uuid4().hex[:8]}"

        @cairn.workflow(id=late_id)
        async def late(x: int) -> int:
            await cairn.sleep(timedelta(hours=1))
            return x + 1

        assert await env.client.run(late, 1) == 2


@pytest.mark.parametrize("mock", [AsyncMock, MagicMock])
async def test_a_mock_stands_in_for_an_action_and_records_its_calls(db_url: str, mock: type[MagicMock]) -> None:
    """A Mock (its signature `(*args, **kwargs)`) was refused as not taking the action's parameters,
    though it takes every call the action does; it gets the call as the workflow wrote it."""
    fake = mock(return_value="ok")
    async with environment(db_url) as env:
        env.replace_action(envflows.charge, fake)
        assert await env.client.run(envflows.Renewal, "ann") == "ok|ok"
    assert fake.call_args_list == [call("ann", 100), call("ann", 100)]


@pytest.mark.parametrize(
    "fake", [lambda to: f"fake mail to {to}", AsyncMock(side_effect=lambda to: f"fake mail to {to}")]
)
async def test_an_action_calling_a_replaced_one_runs_the_fake(db_url: str, fake: Callable[[str], str]) -> None:
    """An action called from another runs as a plain call: it ran the real one (the mail provider),
    the replacement applying only to a workflow's calls."""
    async with environment(db_url) as env:
        env.replace_action(envflows.send_mail, fake)
        assert await env.client.run(envflows.signup, "ada") == "fake mail to ada@example.com"


async def test_two_sleeps_at_once_each_end_at_their_own_time(db_url: str) -> None:
    """`asyncio.gather(env.sleep(2h), env.sleep(3h))` (two simulated clients): the second waited
    30 s for a report the first had taken, then failed saying the worker still had work in hand."""
    async with environment(db_url, time_skipping=False) as env:
        handles = [await env.client.start(envflows.napper, days) for days in (1, 2, 3)]
        began = env.now()
        await asyncio.gather(env.sleep(timedelta(days=2)), env.sleep(timedelta(days=3)))
        assert timedelta(days=3) <= env.now() - began < timedelta(days=3, minutes=1)
        assert [await h.result(timeout=5) for h in handles] == [1, 2, 3]
