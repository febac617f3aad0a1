"""`cairn.start_child` returns at once; `await handle.result()` later waits for the child durably,
whether it is still going or has ended, on both backends; a child pruned meanwhile is RunNotFound,
never started again; a join racing the child's end never leaves the parent waiting."""

from __future__ import annotations

import asyncio

import pytest

import cairn
from cairn import RunStatus
from tests import child_flows as cf
from tests.conftest import eventually
from tests.helpers import status_is

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(120)]


async def test_a_parent_takes_the_results_of_children_it_started_without_waiting(client: cairn.Client) -> None:
    handle = await client.start(cf.joins_later, "j1", 4)
    quick, slow = client.get("j1-quick"), client.get("j1-slow")
    await eventually(lambda: status_is(quick, RunStatus.COMPLETED), what="the quick child ended")
    await eventually(lambda: status_is(slow, RunStatus.WAITING), what="the slow child going")
    await handle.signal("join", None)
    await eventually(lambda: status_is(handle, RunStatus.RUNNING), what="the parent waiting for the slow child")
    await slow.signal("go", 7)
    assert await handle.result(timeout=15) == [47, 5]
    assert sorted(c.id for c in await handle.children()) == ["j1-quick", "j1-slow"]  # each started once


async def test_a_childs_failure_is_raised_where_the_parent_waits(client: cairn.Client) -> None:
    handle = await client.start(cf.joins_a_failure, "j2")
    assert await handle.result(timeout=15) == "caught: no 3"


async def test_a_finished_child_of_a_live_parent_is_kept_by_prune_for_the_parent_to_join(client: cairn.Client) -> None:
    """Retention and `cairn prune` deleted a finished child its parent, still going, had started
    detached: the parent's join then failed with RunNotFound. A child is kept while its parent goes
    on, and goes once both have finished."""
    handle = await client.start(cf.joins_a_pruned_child, "j3")
    kid = client.get("j3-kid")
    await eventually(lambda: status_is(kid, RunStatus.COMPLETED), what="the child ended")
    assert await client.prune(0, RunStatus.COMPLETED) == 0
    await handle.signal("join", None)
    assert await handle.result(timeout=15) == "found"
    assert await client.prune(0, RunStatus.COMPLETED) == 2  # the parent and its child
    with pytest.raises(cairn.RunNotFound):
        await kid.status()


async def test_joins_racing_the_childs_end_all_finish(client: cairn.Client) -> None:
    """The parent's join and the child's end commit in either order, or at once: 300 parents, each
    joining a child it just started, all get its result (none waits on a child that ended unseen)."""
    handles = [await client.start(cf.joins_at_once, f"race-{i}") for i in range(300)]
    results = await asyncio.gather(*(h.result(timeout=60) for h in handles))
    assert results == [2] * 300


async def test_two_joins_of_one_child_at_once_both_get_its_result(client: cairn.Client) -> None:
    handle = await client.start(cf.joins_twice_at_once, "j4")
    kid = client.get("j4-kid")
    await eventually(lambda: status_is(kid, RunStatus.WAITING), what="the child going")
    await eventually(lambda: status_is(handle, RunStatus.RUNNING), what="the parent joined")
    await kid.signal("go", 3)
    assert await handle.result(timeout=15) == [23, 23]


async def test_one_child_id_awaited_twice_at_once_is_one_run_and_both_get_its_result(client: cairn.Client) -> None:
    handle = await client.start(cf.awaits_one_id_twice_at_once, "j5")
    kid = client.get("j5-kid")
    await eventually(lambda: status_is(kid, RunStatus.WAITING), what="the child going")
    await kid.signal("go", 4)
    assert await handle.result(timeout=15) == [54, 54]
    assert [c.id for c in await handle.children()] == ["j5-kid"]


async def test_start_child_awaited_gives_a_handle_awaited_for_the_result(client: cairn.Client) -> None:
    """Temporal's shape: `handle = await start_child(...)`, then `await handle`."""
    handle = await client.start(cf.awaits_start_child, "j6")
    assert await handle.result(timeout=15) == [2, 2]
    assert [c.id for c in await handle.children()] == ["j6-kid"]


async def test_a_handle_returned_as_the_result_is_refused_naming_what_to_write(client: cairn.Client) -> None:
    handle = await client.start(cf.returns_a_handle, "j7")
    with pytest.raises(cairn.SerializationError) as failed:
        await handle.result(timeout=15)
    message = str(failed.value)
    assert "'j7-kid'" in message, message
    assert "`await handle.result()` gives the child's result" in message, message


async def test_result_outside_a_workflow_is_refused() -> None:
    with pytest.raises(cairn.NotInWorkflow):
        cairn.ChildHandle("x", "tests.child_flows.kid_quick").result()
