"""Writes that run on the event loop (SQLite's, when its writer is free) keep what the hop to a
thread gave for free: the loop still turns for everything else during a loop of starts, and a
blocking client's loop on another thread never shares the writer's connection mid-transaction."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import cairn
from cairn.client.sync import SyncClient
from tests import flows

pytestmark = pytest.mark.timeout(120)


async def test_a_loop_of_starts_leaves_the_event_loop_to_the_rest(client: cairn.Client) -> None:
    await client.store.open()
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    for i in range(2000):
        await client.start(flows.function_style, i)
    stop.set()
    await ticking
    assert len(gaps) > 20, f"the loop turned {len(gaps)} times in 2,000 starts"
    # A hop to a thread yielded at every write; writes on the loop yield every 5 ms (LOOP_SHARE):
    # a gap is at most that and one start, here with room for a slow machine.
    assert max(gaps) < 0.25, f"the loop was held for {max(gaps) * 1000:.0f} ms without a turn"


async def test_a_blocking_client_on_another_thread_writes_beside_the_loop(client: cairn.Client) -> None:
    await client.store.open()
    blocking = SyncClient(client=client)  # the same store, another loop and thread
    errors: list[BaseException] = []

    def starts() -> None:
        try:
            for i in range(300):
                blocking.start(flows.function_style, i, id=f"thread-{i}")
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=starts)
    thread.start()
    try:
        for i in range(300):
            await client.start(flows.function_style, i, id=f"loop-{i}")
    finally:
        await asyncio.get_running_loop().run_in_executor(None, thread.join)
        blocking._bridge.close()
    assert errors == []
    assert await client.store.count_runs(cairn.RunStatus.PENDING) == 600


async def test_an_in_memory_database_reads_and_writes_on_one_connection_one_at_a_time() -> None:
    """`:memory:` has no reader connection: its reads go to the writer's, on its thread, and the
    loop's writes wait their turn rather than share the connection mid-transaction."""
    client = cairn.Client("sqlite:///:memory:")
    try:
        await client.store.open()

        async def start_and_read(i: int) -> str | None:
            handle = await client.start(flows.function_style, i, id=f"m-{i}")
            row = await client.store.get_run(handle.id)
            return None if row is None else row.id

        ids = await asyncio.gather(*(start_and_read(i) for i in range(500)))
        assert ids == [f"m-{i}" for i in range(500)]
    finally:
        await client.close()
