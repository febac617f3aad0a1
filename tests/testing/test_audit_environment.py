"""`cairn.testing.environment()` as a user of Temporal's `WorkflowEnvironment.start_time_skipping()`
writes against it, on both backends: durable timeouts (`asyncio.wait_for`, signal waits) and the
sleeps of children in skipped time, signals sent while time is skipped, schedules created at run
time, fakes that raise (retried with the action's backoff, in skipped time) and fakes of actions
that take `Depends`, and the mistakes users make (an environment used after it exited, something
replaced that is not an action), which fail at once with a message instead of hanging."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

import pytest

import cairn
from cairn import BackoffPolicy, Depends, RetryPolicy
from cairn.registry import registry
from cairn.testing import Environment, environment

# --- the code under test ------------------------------------------------------------------------


@cairn.workflow
async def nap(days: int) -> int:
    await cairn.sleep(timedelta(days=days))
    return days


@cairn.workflow
async def impatient() -> list[str]:
    """Two durable timeouts by `asyncio.wait_for`: on a signal nobody sends, and on a slow child."""
    outcomes = []
    try:
        await asyncio.wait_for(cairn.wait_for_signal("go"), timeout=timedelta(hours=1).total_seconds())
        outcomes.append("signalled")
    except TimeoutError:
        outcomes.append("no signal within the hour")
    try:
        await asyncio.wait_for(cairn.child(nap, 10), timeout=timedelta(days=1).total_seconds())
        outcomes.append("child done")
    except TimeoutError:
        outcomes.append("child slower than a day")
    return outcomes


@cairn.workflow
async def naps_side_by_side() -> list[int]:
    return list(await asyncio.gather(nap(3), nap(5), cairn.child(nap, 1)))


@cairn.workflow
async def sleep_then_listen() -> str:
    await cairn.sleep(timedelta(days=1))
    slept = cairn.now()
    payload = await cairn.wait_for_signal("go")
    return f"{payload} after {(cairn.now() - slept).total_seconds():.0f}s more"


ATTEMPTS: collections.Counter[str] = collections.Counter()


@cairn.action(
    retry=RetryPolicy(attempts=4),
    backoff=BackoffPolicy(base_delay=3600, multiplier=2, max_delay=4 * 3600, jitter=False),
)
def lookup(user: str) -> str:
    ATTEMPTS[f"real:{user}"] += 1
    return f"real {user}"


@cairn.workflow
async def looking_up(user: str) -> str:
    return await lookup(user)


class Ledger:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.closed = False


OPENED: list[str] = []


def open_ledger() -> Iterator[Ledger]:
    ledger = Ledger("real")
    OPENED.append("real")
    yield ledger
    ledger.closed = True
    OPENED.append("real closed")


def open_fake_ledger() -> Ledger:
    OPENED.append("fake")
    return Ledger("fake")


@cairn.action
async def post(entry: str, ledger: Annotated[Ledger, Depends(open_ledger)]) -> str:
    return f"{entry} in the {ledger.kind} ledger"


@cairn.workflow
async def posting(entry: str) -> str:
    return await post(entry)


@cairn.workflow
async def waiting_for_ever() -> str:
    return str(await cairn.wait_for_signal("never"))


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[Environment]:
    async with environment(db_url) as e:
        yield e


# --- durable timeouts, children and signals in skipped time ---------------------------------------


async def test_asyncio_wait_for_is_a_durable_timeout_that_skipped_time_expires(env: Environment) -> None:
    began = time.monotonic()
    assert await env.client.run(impatient, timeout=30) == ["no signal within the hour", "child slower than a day"]
    assert time.monotonic() - began < 10
    assert env.now() - env.started >= timedelta(hours=1, days=1)


async def test_children_sleeping_side_by_side_take_the_longest_sleep_not_the_sum(env: Environment) -> None:
    assert await env.client.run(naps_side_by_side, timeout=30) == [3, 5, 1]
    passed = env.now() - env.started
    assert timedelta(days=5) <= passed < timedelta(days=6), passed


async def test_a_signal_sent_while_time_is_skipped_waits_for_the_run_to_listen(env: Environment) -> None:
    handle = await env.client.start(sleep_then_listen)
    await handle.signal("go", "ready")  # the run is asleep for a day (skipped or not yet): kept for it
    result = await handle.result(timeout=30)
    assert result.startswith("ready after ")
    assert env.now() - env.started >= timedelta(days=1)


async def test_a_schedule_created_through_env_client_fires_as_env_sleep_passes_its_ticks(env: Environment) -> None:
    await env.client.create_schedule("audit-every-hour", nap, every=timedelta(hours=1), args=(0,))
    await env.sleep(timedelta(hours=3, minutes=1))
    ticks = await env.client.list_runs(workflow=nap)
    assert len(ticks) in (3, 4), [r.id for r in ticks]
    assert {await env.client.get(r.id).result(timeout=30) for r in ticks} == {0}


# --- replace_action ----------------------------------------------------------------------------


async def test_fakes_that_raise_are_retried_with_the_actions_backoff_in_skipped_time(env: Environment) -> None:
    ATTEMPTS.clear()
    calls: list[str] = []

    def flaky(user: str) -> str:  # a sync fake of a plain def action
        calls.append(user)
        if len(calls) < 3:
            raise ConnectionError("the directory is down")
        return f"fake {user}"

    async def refusing(user: str) -> str:  # an async fake of the same action
        raise PermissionError(f"{user} may not look")

    began = time.monotonic()
    with env.replace_action(lookup, flaky):
        handle = await env.client.start(looking_up, "ada")
        assert await handle.result(timeout=30) == "fake ada"
    assert time.monotonic() - began < 10
    (step,) = await handle.steps()
    assert (step.name, step.attempt) == (lookup.id, 3)
    assert env.now() - env.started >= timedelta(hours=3)  # backoff of 1h, then 2h: skipped
    with env.replace_action(lookup, refusing), pytest.raises(PermissionError, match="bob may not look"):
        await env.client.run(looking_up, "bob", timeout=30)  # not transient: no retry
    assert ATTEMPTS["real:ada"] == ATTEMPTS["real:bob"] == 0
    assert registry.action(lookup.id) is lookup.defn
    assert await env.client.run(looking_up, "cy", timeout=30) == "real cy"  # the original is back
    assert ATTEMPTS["real:cy"] == 1


async def test_a_fake_of_an_action_with_depends_may_leave_out_take_or_replace_the_dependency(env: Environment) -> None:
    """The fake of `post(entry, ledger=Depends(open_ledger))` used to take `ledger: Ledger` as the
    signature check asked, and then failed in the run with "Missing required parameter 'ledger'"."""
    OPENED.clear()

    async def without(entry: str) -> str:  # what Depends gives left out: no provider runs at all
        return f"{entry} nowhere"

    async def plainly(entry: str, ledger: Ledger) -> str:  # gets what the action's provider gives
        return f"{entry} in the {ledger.kind} ledger, faked"

    async def own(entry: str, ledger: Annotated[Ledger, Depends(open_fake_ledger)]) -> str:
        return f"{entry} in the {ledger.kind} ledger"

    with env.replace_action(post, without):  # type: ignore[arg-type]
        assert await env.client.run(posting, "a", timeout=30) == "a nowhere"
    assert OPENED == []
    with env.replace_action(post, plainly):
        assert await env.client.run(posting, "b", timeout=30) == "b in the real ledger, faked"
    assert OPENED == ["real", "real closed"]
    OPENED.clear()
    with env.replace_action(post, own):
        assert await env.client.run(posting, "c", timeout=30) == "c in the fake ledger"
    assert OPENED == ["fake"]
    OPENED.clear()

    async def wrong(entry: int) -> str:
        return ""

    with pytest.raises(TypeError, match="differs in its parameter 'entry'"):
        env.replace_action(post, wrong)  # type: ignore[arg-type]
    assert await env.client.run(posting, "d", timeout=30) == "d in the real ledger"


async def test_replacing_what_is_not_an_action_says_what_it_is() -> None:
    def helper(user: str) -> str:
        return user

    async with environment() as env:
        with pytest.raises(TypeError, match="is a workflow: replace the actions it calls"):
            env.replace_action(looking_up, helper)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="is not an action"):
            env.replace_action(helper, helper)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"no action is registered as 'billing\.nothing'"):
            env.replace_action("billing.nothing", helper)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="must be callable"):
            env.replace_action(lookup, "fake")  # type: ignore[arg-type]
        with env.replace_action(lookup.id, lambda user: f"by id {user}"):  # type: ignore[arg-type]
            assert await env.client.run(looking_up, "ed", timeout=30) == "by id ed"


# --- mistakes: a clear error, never a hang ----------------------------------------------------------


async def test_an_environment_used_after_it_exited_fails_at_once_instead_of_hanging(db_url: str) -> None:
    async with asyncio.timeout(30):  # each of these used to wait for ever (or 30 s for env.sleep)
        async with environment(db_url) as env:
            handle = await env.client.start(waiting_for_ever)
            pending = asyncio.ensure_future(handle.result())  # still awaited when the block ends
        began = time.monotonic()
        with pytest.raises(RuntimeError, match="after the test environment exited"):
            await pending
        with pytest.raises(RuntimeError, match="after the test environment exited"):
            await env.client.run(nap, 1)
        with pytest.raises(RuntimeError, match="after the test environment exited"):
            await handle.result()
        with pytest.raises(RuntimeError, match="after the test environment exited"):
            await handle.result(timeout=5)
        with pytest.raises(RuntimeError, match="after the test environment exited"):
            await env.sleep(timedelta(hours=1))
        assert time.monotonic() - began < 5


def test_environments_one_after_another_in_a_plain_sync_test_each_start_from_real_time() -> None:
    """No pytest-asyncio: `asyncio.run` twice in one process, as a plain `def` test does."""

    async def first() -> datetime:
        async with environment() as env:
            env.replace_action(lookup, lambda user: "fake")  # type: ignore[arg-type]
            assert await env.client.run(nap, 30, timeout=30) == 30
            assert await env.client.run(looking_up, "x", timeout=30) == "fake"
            return env.now()

    async def second() -> tuple[datetime, str, int]:
        async with environment() as env:
            return env.now(), await env.client.run(looking_up, "y", timeout=30), len(await env.client.list_runs())

    skipped_to = asyncio.run(first())
    assert skipped_to - datetime.now(UTC) >= timedelta(days=29)
    now, looked_up, runs = asyncio.run(second())
    assert abs(now - datetime.now(UTC)) < timedelta(minutes=1)  # the first one's clock stayed with it
    assert (looked_up, runs) == ("real y", 1)  # and so did its fake and its database


def test_a_backoff_of_an_hour_is_not_silently_cut_to_a_minute() -> None:
    """max_delay defaulted to 60 s whatever base_delay was: an hour's backoff retried after a minute.
    Left out, it is now a minute or base_delay when longer; given shorter than base_delay, refused."""
    policy = BackoffPolicy(base_delay=timedelta(hours=1), jitter=False)
    assert policy.delay_for(1) == policy.delay_for(3) == 3600
    assert BackoffPolicy(jitter=False).delay_for(10) == 60  # the default, as before
    assert BackoffPolicy.from_json(policy.to_json()) == policy
    with pytest.raises(ValueError, match=r"max_delay \(60s\) is shorter than base_delay \(3600s\)"):
        BackoffPolicy(base_delay=3600, max_delay=60)
