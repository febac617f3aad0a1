"""Workflow code that runs as a run is unwound (a `finally`, an `async with`'s exit, an async
generator left early) is workflow code: its durable calls are journaled steps when the workflow
reaches them, and nothing of it runs when a worker drops the run from memory. Both ran on the
worker's own loop, where an action call finds no run and runs the function for real: each time a
short resting run was dropped (several times a run), and before the workflow got there."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import pytest

import cairn
from cairn import RunStatus
from cairn.store.protocol import ActionClaim
from tests.conftest import eventually
from tests.helpers import holds, status_is

pytestmark = [pytest.mark.timeout(60)]

RAN: collections.Counter[str] = collections.Counter()


@cairn.action
def release(tag: str) -> str:
    RAN[tag] += 1
    return tag


@cairn.action
async def fetch(i: int) -> int:
    return i


@cairn.workflow
async def sleeps_then_releases(tag: str) -> str:
    try:
        await cairn.sleep(0.01)
        await cairn.sleep(0.01)
        return "done"
    finally:
        await release(tag)


@cairn.workflow
async def waits_then_releases(tag: str) -> str:
    try:
        return str(await cairn.wait_for_signal("go"))
    finally:
        await release(tag)


@contextlib.asynccontextmanager
async def room(tag: str) -> AsyncIterator[None]:
    await release(f"{tag}:enter")
    try:
        yield
    finally:
        await release(f"{tag}:exit")


@cairn.workflow
async def holds_a_room(tag: str) -> str:
    async with room(tag):
        await cairn.sleep(0.01)
        await cairn.sleep(0.01)
    return "left"


async def pages(tag: str) -> AsyncIterator[int]:
    try:
        for i in range(10):
            yield await fetch(i)
    finally:
        await release(tag)


@cairn.workflow
async def reads_two_pages(tag: str) -> list[int]:
    got = []
    async for page in pages(tag):
        got.append(page)
        if len(got) == 2:
            break
    await cairn.sleep(0.01)
    return got


async def _actions(handle: cairn.RunHandle) -> list[str]:
    return [s.name for s in await handle.steps() if s.kind == "action"]


async def test_a_finally_runs_its_action_once_as_a_step(client: cairn.Client) -> None:
    tag = f"finally-{uuid.uuid4()}"
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(sleeps_then_releases, tag)
        assert await handle.result(timeout=20) == "done"
    assert RAN[tag] == 1
    assert await _actions(handle) == [release.id]


async def test_a_finally_runs_nothing_while_the_run_waits_nor_when_it_is_cancelled(client: cairn.Client) -> None:
    tag = f"cancelled-{uuid.uuid4()}"
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(waits_then_releases, tag)
        await eventually(lambda: status_is(handle, RunStatus.WAITING), what="the run waiting")
        # A copy of a run this short is not kept while it waits (RESTING_MIN_STEPS): it is closed.
        assert RAN[tag] == 0
        await handle.cancel()
    assert RAN[tag] == 0
    assert await _actions(handle) == []


async def test_an_async_with_exits_once_after_its_body(client: cairn.Client) -> None:
    tag = f"room-{uuid.uuid4()}"
    async with cairn.Worker(client, poll_interval=0.05):
        assert await client.run(holds_a_room, tag, timeout=20) == "left"
    assert (RAN[f"{tag}:enter"], RAN[f"{tag}:exit"]) == (1, 1)


async def test_an_async_generator_left_early_closes_as_workflow_code(client: cairn.Client) -> None:
    tag = f"pages-{uuid.uuid4()}"
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(reads_two_pages, tag)
        assert await handle.result(timeout=20) == [0, 1]
    assert RAN[tag] == 1
    assert await _actions(handle) == [fetch.id, fetch.id, release.id]


@cairn.workflow
async def drops_a_callbacks_error() -> str:
    def fails() -> None:
        raise ZeroDivisionError("a callback of the workflow's failed")

    asyncio.get_running_loop().call_soon(fails)
    await cairn.sleep(0.01)
    return "done"


async def test_an_error_in_a_loop_callback_is_logged_for_the_run(
    client: cairn.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cairn.workflow"):
        async with cairn.Worker(client, poll_interval=0.05):
            handle = await client.start(drops_a_callbacks_error)
            assert await handle.result(timeout=20) == "done"
    said = [r for r in caplog.records if r.name == "cairn.workflow" and handle.id in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert said[0].exc_info is not None and "a callback of the workflow's failed" in str(said[0].exc_info[1])


async def forgotten(tag: str) -> None:
    try:
        await fetch(1)
    finally:
        await release(tag)


@cairn.workflow
async def fires_and_forgets(tag: str) -> str:
    asyncio.create_task(forgotten(tag))  # noqa: RUF006  (the run ends without waiting for it)
    await asyncio.sleep(0)
    return "done"


@cairn.workflow
async def counts_to(n: int) -> int:
    for i in range(n):
        await fetch(i)
    return n


async def test_a_task_a_run_left_behind_never_runs_its_cleanup_in_another_run(client: cairn.Client) -> None:
    """Such a task was kept only by a cycle once its step was cancelled with the run: the garbage
    collector destroyed it whenever it ran, and its `finally` ran then, in whichever run's
    activation was on, its action recorded in that run's journal (or run for real, unrecorded)."""
    tag = f"forgotten-{uuid.uuid4()}"
    async with cairn.Worker(client, poll_interval=0.05):
        others = [await client.start(counts_to, 15) for _ in range(5)]
        left = [await client.start(fires_and_forgets, f"{tag}-{i}") for i in range(10)]
        assert [await h.result(timeout=30) for h in others] == [15] * 5
        assert [await h.result(timeout=30) for h in left] == ["done"] * 10
    for handle in others:
        assert set(await _actions(handle)) == {fetch.id}
    assert sum(n for name, n in RAN.items() if name.startswith(tag)) == 0


@cairn.workflow
async def fans_out_and_returns(n: int) -> str:
    for i in range(n):
        asyncio.create_task(fetch(i))  # noqa: RUF006  (never awaited: cancelled as the run ends)
    await asyncio.sleep(0)
    return "done"


async def test_attempts_the_workflow_stopped_before_they_began_are_not_counted_in_flight(client: cairn.Client) -> None:
    """Told at once of the cancel, the worker cancelled the attempt before its first step: its
    coroutine never ran ("never awaited") and its key stayed in flight for the worker's life."""
    async with cairn.Worker(client, poll_interval=0.05) as worker:
        handles = [await client.start(fans_out_and_returns, 5) for _ in range(20)]
        assert [await h.result(timeout=30) for h in handles] == ["done"] * 20
        # The race forced: an attempt handed out, and heard of as cancelled before its task ran.
        assert worker._action_slots.take()
        claim = ActionClaim(handles[0].id, 1, fetch.id, '{"i": 0}', 1, None, None)
        worker._start_action(claim, {})
        worker._stop_attempts({(claim.run_id, claim.seq)})
        await eventually(lambda: holds(not worker._attempt_tasks), what="every attempt's task done")
        assert worker._attempts.keys() == set()
