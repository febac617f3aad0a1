"""A child the parent awaited (`cairn.child`) is cancelled when the parent stops waiting for it: a
timeout around the wait, a cancelled task, or the parent ending while a task still awaits it. A
child started with `cairn.start_child` is the parent's to leave running: giving up on a join of it
stops nothing. Both backends."""

from __future__ import annotations

import asyncio
import random

import pytest

import cairn
from cairn import RunStatus, StepKind, StepStatus
from cairn.records import RunRow
from tests import child_flows as cf
from tests.conftest import eventually
from tests.helpers import status_is

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(180)]


async def _cancelled_because(kid: cairn.RunHandle, parent: str) -> None:
    await eventually(lambda: status_is(kid, RunStatus.CANCELLED), what=f"{kid.id} cancelled")
    with pytest.raises(cairn.WorkflowCancelled, match=f"its parent {parent} stopped waiting for it"):
        await kid.result(timeout=5)


async def test_a_timeout_around_a_child_cancels_the_child(client: cairn.Client) -> None:
    handle = await client.start(cf.gives_up_on_kid, "a1", id="a1")
    assert await handle.result(timeout=15) == "gave up"
    kid = client.get("a1-kid")
    await _cancelled_because(kid, "a1")
    assert "cancelled" in [e.kind for e in await kid.events()]
    with pytest.raises(cairn.IllegalTransition):  # a signal to it now is refused, not buffered forever
        await kid.signal("go", 1)


async def test_the_cancelled_childs_own_children_go_with_it(client: cairn.Client) -> None:
    handle = await client.start(cf.gives_up_on_family, "a2", id="a2")
    grandkid = client.get("a2-grandkid")
    assert await handle.result(timeout=15) == "gave up"
    await _cancelled_because(client.get("a2-kid"), "a2")
    await eventually(lambda: status_is(grandkid, RunStatus.CANCELLED), what="the grandchild cancelled")


@pytest.mark.parametrize(
    ("flow", "ends_with"),
    [
        pytest.param(cf.cancels_kid_task, "stopped", id="the-task-awaiting-it-cancelled"),
        pytest.param(cf.leaves_kid_task, "left", id="the-parent-ending-while-a-task-awaits-it"),
    ],
)
async def test_a_child_awaited_in_a_task_goes_with_the_wait(client: cairn.Client, flow: object, ends_with: str) -> None:
    key = f"a-{ends_with}"
    handle = await client.start(flow, key, id=key)
    kid = client.get(f"{key}-kid")
    await eventually(lambda: status_is(kid, RunStatus.WAITING), what="the child going")
    await handle.signal("stop")
    assert await handle.result(timeout=15) == ends_with
    await _cancelled_because(kid, key)


async def test_giving_up_on_a_join_leaves_a_child_started_without_waiting_running(client: cairn.Client) -> None:
    handle = await client.start(cf.gives_up_on_detached_kid, "a5", id="a5")
    assert await handle.result(timeout=15) == "still going"
    kid = client.get("a5-kid")
    assert await kid.status() == RunStatus.WAITING
    await kid.signal("go", 2)
    assert await kid.result(timeout=15) == 12


async def test_children_racing_their_parents_patience_never_outlive_an_abandoned_wait(client: cairn.Client) -> None:
    """1,000 parents each wait for a child that naps for about as long as the parent is willing to wait,
    so the child's end and the parent's timeout commit in either order or at once. Every parent
    ends; a parent that took the result has a completed child; a child the parent gave up on was
    cancelled, or had ended before the parent gave up (it never runs on after that)."""
    rng = random.Random(17)
    n = 1000
    handles = [
        await client.start(cf.races_kid, f"r{i}", rng.uniform(0.0, 0.05), rng.uniform(0.0, 1.0), id=f"r{i}")
        for i in range(n)
    ]
    results = await asyncio.gather(*(h.result(timeout=120) for h in handles))
    assert set(results) <= {"1", "gave up"}, set(results)
    kids = [client.get(f"r{i}-kid") for i in range(n)]

    async def settled() -> bool:
        statuses = await asyncio.gather(*(k.status() for k in kids))
        return all(s in (RunStatus.COMPLETED, RunStatus.CANCELLED) for s in statuses)

    await eventually(settled, timeout=60, what="every child ended")
    statuses = await asyncio.gather(*(k.status() for k in kids))
    journals = await asyncio.gather(*(h.steps() for h in handles))
    outcomes: dict[str, int] = {}
    for result, status, steps in zip(results, statuses, journals, strict=True):
        (wait,) = [s for s in steps if s.kind == StepKind.CHILD]
        # The child's end resolved the parent's wait (it ended first), or the parent's giving up
        # cancelled the wait and, in the same commit, the child: never one without the other.
        expected = {StepStatus.COMPLETED: RunStatus.COMPLETED, StepStatus.CANCELLED: RunStatus.CANCELLED}
        assert status == expected[wait.status], (wait, status)
        if result == "1":
            assert wait.status == StepStatus.COMPLETED
        key = f"{result}, child {status.value}"
        outcomes[key] = outcomes.get(key, 0) + 1
    assert outcomes.get("1, child completed") and outcomes.get("gave up, child cancelled"), outcomes


@pytest.mark.parametrize("kid_ends", ["before the retry", "after the retry"])
async def test_a_failed_parent_retried_takes_the_result_of_the_child_it_awaited(
    client: cairn.Client, kid_ends: str
) -> None:
    """A failed run can be retried: the child it awaited is not cancelled by the failure, and its
    result reaches the retried parent whether the child ends before the retry or after."""
    cf.BROKEN["on"] = True
    key = "f-" + kid_ends.split()[0]
    handle = await client.start(cf.fails_beside_a_kid, key, id=key)
    kid = client.get(f"{key}-kid")
    with pytest.raises(RuntimeError, match="fragile is broken"):
        await handle.result(timeout=15)
    await eventually(lambda: status_is(kid, RunStatus.WAITING), what="the child going on")
    cf.BROKEN["on"] = False  # the fix is deployed
    if kid_ends == "before the retry":
        await kid.signal("go", 5)
        assert await kid.result(timeout=15) == 15
    await handle.retry()
    if kid_ends == "after the retry":
        await kid.signal("go", 5)
    assert await handle.result(timeout=15) == [15, 2]


async def test_a_second_parent_awaiting_a_child_going_for_another_is_told_not_left_waiting(
    client: cairn.Client,
) -> None:
    """A run hands its outcome to one parent. A second parent that awaits the same child id while
    the child goes on for the first gets RunIdTaken at once (it waited for ever: the child's end
    resolved only the first parent's wait); the first still gets the child's result."""
    first = await client.start(cf.awaits_shared_kid, "shared-1", id="p-1")
    kid = client.get("shared-1")
    await eventually(lambda: status_is(kid, RunStatus.WAITING), what="the child going")
    second = await client.start(cf.awaits_shared_kid, "shared-1", id="p-2")
    told = await second.result(timeout=15)
    assert told.startswith("taken: child run 'shared-1' is already the child of run 'p-1'"), told
    await kid.signal("go", 4)
    assert await first.result(timeout=15) == "14"


CYCLE = "a run cannot wait for its own end; give the child an id of its own"


@pytest.mark.parametrize("named", ["itself", "its parent"])
async def test_a_run_awaiting_a_child_under_its_own_id_or_an_ancestors_is_told_not_wedged(
    client: cairn.Client, named: str
) -> None:
    """The run adopted itself (or its parent became its own child's child) and waited for its own
    end: running for ever, with nothing to say why."""
    if named == "itself":
        handle = await client.start(cf.awaits_a_child_named, "me", id="me")
        told = await handle.result(timeout=15)
        assert told == "taken: child run 'me' is this run itself: " + CYCLE
        assert (await handle.describe()).parent_id is None
    else:
        handle = await client.start(cf.awaits_a_child_named, "kid", "top", id="top")
        told = await handle.result(timeout=15)
        assert told == "taken: child run 'top' is an ancestor of run 'kid': " + CYCLE
        assert (await handle.describe()).parent_id is None
        assert (await client.get("kid").describe()).parent_id == "top"


async def test_a_child_started_without_waiting_is_not_taken_over_by_another_parent(client: cairn.Client) -> None:
    owner = await client.start(cf.starts_kid_then_joins, "own", id="own")
    kid = client.get("own-kid")
    await eventually(lambda: status_is(kid, RunStatus.WAITING), what="the child going")
    other = await client.start(cf.awaits_shared_kid, "own-kid", id="other")
    assert (await other.result(timeout=15)).startswith("taken: child run 'own-kid' is already the child of run 'own'")
    await owner.signal("join")
    await kid.signal("go", 1)
    assert await owner.result(timeout=15) == 21


async def test_a_fork_of_a_parent_waiting_for_a_child_runs_a_child_of_its_own(client: cairn.Client) -> None:
    """The fork reuses the results of the journal; a child still going gave none yet, and goes on
    for the run it belongs to: the fork starts its own (it waited for ever on the source's)."""
    source = await client.start(cf.awaits_a_kid, 3, id="src")
    (kid,) = [client.get(c.id) for c in await _children(source)]
    await eventually(lambda: status_is(kid, RunStatus.WAITING), what="the child going")
    fork = await source.fork(from_step=1, id="frk")
    (fork_kid,) = [client.get(c.id) for c in await _children(fork)]
    assert fork_kid.id != kid.id
    await eventually(lambda: status_is(fork_kid, RunStatus.WAITING), what="the fork's child going")
    await fork_kid.signal("go", 1)
    assert await fork.result(timeout=15) == 31
    await kid.signal("go", 2)
    assert await source.result(timeout=15) == 32


async def _children(handle: cairn.RunHandle) -> list[RunRow]:
    async def some() -> list[RunRow] | None:
        return await handle.children() or None

    found: list[RunRow] = await eventually(some, what=f"a child of {handle.id}")
    return found
