"""The schedule of benchmarks/schedules_retention.py: a trivial workflow fired every second by
every worker that imports this module (`overlap="allow"`, so no tick is skipped because the
previous run is still going: each tick must start exactly one run)."""

from __future__ import annotations

from datetime import timedelta

import cairn
from cairn import workflow


@workflow
async def tick() -> str:
    return "tick"


TICK = cairn.Schedule("bench-tick", tick, every=timedelta(seconds=1), overlap="allow")
