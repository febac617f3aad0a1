"""Runs that wait in a loop: each counts how often its body ran from the top (once, plus once per
replay), which a test reads in the same process."""

from __future__ import annotations

import collections

import cairn
from cairn import workflow

STARTS: collections.Counter[str] = collections.Counter()


@workflow
async def tally(key: str, n: int) -> list[int]:
    STARTS[key] += 1
    got: list[int] = []
    for _ in range(n):
        got.append(int(await cairn.wait_for_signal("n")))
    return got


@workflow
async def naps(key: str, n: int) -> int:
    STARTS[key] += 1
    for _ in range(n):
        await cairn.sleep(0.02)
    return n


@workflow
def tally_plainly(key: str, n: int) -> list[int]:
    STARTS[key] += 1
    return [int(cairn.wait_for_signal("n")) for _ in range(n)]
