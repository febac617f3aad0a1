"""A run deleted (`cairn prune`, retention) and started again under its id is a new run: an
attempt of the old one that ends late (a plain `def` action's thread cannot be stopped) writes
nothing into it. Its result and memory landed in the new run's step of the same number."""

from __future__ import annotations

import time

import pytest

import cairn
from cairn import RunStatus, StepStatus
from tests import flows
from tests.conftest import eventually

pytestmark = pytest.mark.timeout(60)


@cairn.workflow
async def gated(gate: str) -> str:
    return await flows.wait_at_gate(gate)


async def _running(handle: cairn.RunHandle) -> bool:
    return any(s.status == StepStatus.RUNNING for s in await handle.steps())


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL tells the worker of the cancel at once
async def test_a_late_attempt_of_a_deleted_run_writes_nothing_into_the_run_started_under_its_id(
    client: cairn.Client, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As across processes on SQLite: the worker hears of the cancel at its next heartbeat only, so
    the old attempt runs on and records its outcome when it ends."""
    old_gate, new_gate = f"old-{id(client)}", f"new-{id(client)}"
    other = cairn.Client(db_url)  # its own connections, as another process's
    try:
        async with cairn.Worker(client, poll_interval=0.05, lease=30.0):  # its heartbeat: every 10 s
            old = await other.start(gated, old_gate, id=f"reused-{id(client)}")
            await eventually(lambda: _running(old), what="the old run's action running")
            assert await old.cancel() == RunStatus.CANCELLED
            assert await other.prune(older_than=0) >= 1  # `cairn prune --older-than 0`
            time.sleep(1.1)  # the new run comes later than the old attempt began, as after a prune it does
            new = await other.start(gated, new_gate, id=old.id)
            await eventually(lambda: _running(new), what="the new run's action running")
            flows.GATES[old_gate].set()  # the old attempt ends, late, and its outcome is recorded
            await eventually(lambda: _superseded(caplog, old_gate), what="the old attempt's outcome refused")
            flows.GATES[new_gate].set()
            assert await new.result(timeout=20) == new_gate
    finally:
        await other.close()


async def _superseded(caplog: pytest.LogCaptureFixture, gate: str) -> bool:
    return any("attempt 1 was superseded" in r.getMessage() for r in caplog.records)
