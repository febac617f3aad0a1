"""`retry` of a run that failed while other work of it was under way: an action attempt still
running, a child it had just started. The retry rewinds the activation that failed and the run
goes on from there; what was under way must neither count against it nor land in the wrong step.

Before, an action whose attempt was cancelled by the failure came back with that attempt counted
as failed (`RetryPolicy(attempts=1)`: "no attempts left: 1 failed"), and a child started in the
rewound activation, left running, ended into whatever step the retried code put at its number:
an action's result replaced by the child's, with nothing reported."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

import cairn
from cairn import RunStatus, action, workflow
from tests.conftest import eventually
from tests.helpers import status_is

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(60)]

FIXED: set[str] = set()
RUNNING: dict[str, threading.Event] = {}
OPEN: dict[str, threading.Event] = {}


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    FIXED.clear()
    RUNNING.clear()
    OPEN.clear()
    yield
    for opened in OPEN.values():
        opened.set()


def _gate(name: str) -> tuple[threading.Event, threading.Event]:
    return RUNNING.setdefault(name, threading.Event()), OPEN.setdefault(name, threading.Event())


@action(retry=cairn.RetryPolicy(attempts=1))
async def fails_until_fixed(name: str) -> str:
    if name not in FIXED:
        raise ValueError(f"{name} is broken")
    return name


@action(retry=cairn.RetryPolicy(attempts=1))
async def slow(name: str) -> str:
    running, opened = _gate(name)
    running.set()
    while not opened.is_set():
        await asyncio.sleep(0.01)
    return name


@workflow
async def fails_beside_a_slow_action(tag: str) -> list[str]:
    return list(await asyncio.gather(slow(f"{tag}.slow"), fails_until_fixed(f"{tag}.boom")))


@workflow
async def waits_for_a_signal(tag: str) -> str:
    return f"child {await cairn.wait_for_signal('go')}"


async def _raise(message: str) -> None:
    raise ValueError(message)


@workflow
async def fails_after_starting_a_child(tag: str) -> list[str]:
    try:
        first = await fails_until_fixed(f"{tag}.boom")
    except ValueError as exc:  # clean up in a child, and fail in the same activation
        await asyncio.gather(cairn.child(waits_for_a_signal, tag, id=f"{tag}.cleanup"), _raise(str(exc)))
        raise
    second = await slow(f"{tag}.slow")  # at the number the child's step had
    return [first, second]


async def test_an_attempt_cancelled_by_the_failure_is_not_counted_against_the_retry(client: cairn.Client) -> None:
    handle = await client.start(fails_beside_a_slow_action, "inflight")
    running, opened = _gate("inflight.slow")
    await asyncio.to_thread(running.wait, 10)
    await eventually(lambda: status_is(handle, RunStatus.FAILED), what="the run failed, its slow action under way")

    FIXED.add("inflight.boom")
    opened.set()
    assert await handle.retry() == RunStatus.RUNNING
    assert await handle.result(timeout=30) == ["inflight.slow", "inflight.boom"]
    slow_step = next(s for s in await handle.steps() if s.name.endswith(".slow"))
    assert slow_step.status == cairn.StepStatus.COMPLETED and slow_step.attempt == 2


async def test_a_child_of_the_rewound_activation_does_not_end_into_another_step(client: cairn.Client) -> None:
    handle = await client.start(fails_after_starting_a_child, "orphan")
    await eventually(lambda: status_is(handle, RunStatus.FAILED), what="the run failed")
    child = client.get("orphan.cleanup")
    await eventually(lambda: status_is(child, RunStatus.WAITING), what="the clean-up child waiting")

    FIXED.add("orphan.boom")
    assert await handle.retry() == RunStatus.RUNNING
    running, opened = _gate("orphan.slow")
    await asyncio.to_thread(running.wait, 10)  # the retried run's step 2 is the slow action, under way
    await child.signal("go", 1)
    assert await child.result(timeout=30) == "child 1"

    step = next(s for s in await handle.steps() if s.seq == 2)
    assert (step.kind, step.status) == (cairn.StepKind.ACTION, cairn.StepStatus.RUNNING)
    opened.set()
    assert await handle.result(timeout=30) == ["orphan.boom", "orphan.slow"]
