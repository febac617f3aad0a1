"""Group commit (`cairn.store.batch.TxBatcher`) never strands a piece of work: whatever moment it is
queued at, some flusher takes it. On SQLite a write on the event loop can complete without
suspending, so flushers end within one step of the loop; the interleavings that left a piece
behind are forced here, then thousands of random ones are run."""

from __future__ import annotations

import asyncio
import random

import pytest

import cairn
from cairn.store.base import Tx
from cairn.store.batch import TxBatcher
from cairn.store.sql_store import SqlStore

pytestmark = pytest.mark.timeout(120)


def _batcher(client: cairn.Client) -> TxBatcher:
    assert isinstance(client.store, SqlStore)
    return TxBatcher(client.store.db)


def _work(tx: Tx) -> float:
    return tx.now()


async def test_a_piece_queued_as_every_flusher_ends_is_still_committed(client: cairn.Client) -> None:
    await client.store.open()
    batcher = _batcher(client)

    async def late() -> float:
        await asyncio.sleep(0)  # queued after the four flushers' first steps: as the last one ends
        return await batcher.run(_work)

    # Four pieces start the four flushers the batcher allows; the first takes all four, the others
    # find nothing and end, and `late` queues its piece in the same turn of the loop, before their
    # ends are known to anything that runs later in it.
    pieces = [asyncio.ensure_future(batcher.run(_work)) for _ in range(4)]
    pieces.append(asyncio.ensure_future(late()))
    values = await asyncio.wait_for(asyncio.gather(*pieces), 10)
    assert len(values) == 5 and all(isinstance(v, float) for v in values)


async def test_thousands_of_pieces_queued_at_random_moments_are_all_committed(client: cairn.Client) -> None:
    await client.store.open()
    batcher = _batcher(client)
    rng = random.Random(17)

    async def piece(turns: int) -> float:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await batcher.run(_work)

    for _ in range(20):
        wave = [piece(rng.choice((0, 0, 1, 1, 2, 3, 5, 8))) for _ in range(rng.randint(1, 200))]
        values = await asyncio.wait_for(asyncio.gather(*wave), 30)
        assert all(isinstance(v, float) for v in values)
