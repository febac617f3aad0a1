"""A workflow that calls an action (or a workflow) and drops the call unawaited schedules nothing,
as an unawaited coroutine runs nothing: it is told with an UnawaitedCallWarning naming the call and
its line (`charge(order)` without `await` skipped a charge without a word). Calls awaited in any of
the ways asyncio offers, or kept across a sleep and a replay, say nothing. Both backends."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest

import cairn
from tests import unawaited_flows as uf

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def caught() -> Iterator[list[warnings.WarningMessage]]:
    uf.CHARGED.clear()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", cairn.UnawaitedCallWarning)
        yield seen


def _unawaited(seen: list[warnings.WarningMessage]) -> list[str]:
    return [
        f"{w.filename.rsplit('/', 1)[-1]}:{w.lineno}: {w.message}"
        for w in seen
        if w.category is cairn.UnawaitedCallWarning
    ]


async def test_a_call_never_awaited_is_told_with_its_line(
    client: cairn.Client, caught: list[warnings.WarningMessage]
) -> None:
    async with cairn.Worker(client, poll_interval=0.1):
        assert await client.run(uf.forgets_to_await, 250, timeout=20) == "done"
    told = _unawaited(caught)
    assert any(
        m.startswith("unawaited_flows.py:")
        and "action tests.unawaited_flows.charge was called but never awaited, so it was not scheduled" in m
        and "`await charge(...)`" in m
        for m in told
    ), told
    assert any("child workflow tests.unawaited_flows.tiny was called but never awaited" in m for m in told), told
    assert uf.CHARGED == []  # as told: nothing ran


@pytest.mark.parametrize("cache_size", [1000, 0], ids=["kept", "replayed"])
async def test_calls_kept_across_a_sleep_and_awaited_after_say_nothing(
    client: cairn.Client, caught: list[warnings.WarningMessage], cache_size: int
) -> None:
    async with cairn.Worker(client, poll_interval=0.1, cache_size=cache_size):
        assert await client.run(uf.awaits_later, 3, timeout=20) == [0, 1, 2, 7]
        assert await client.run(uf.every_way_of_awaiting, 100, timeout=20) == 1 + 2 + 3 + 4 + 5 + 6 + 100
    assert _unawaited(caught) == []
