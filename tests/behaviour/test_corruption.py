"""A journal changed outside Cairn is named as such (JournalCorrupted: the step, the stored value and
why it does not decode), pauses the run, and is never blamed on the workflow's code; once the row is
repaired, `retry` continues the run."""

from __future__ import annotations

import json

import pytest

import cairn
from cairn import RunStatus
from tests import flows
from tests.conftest import eventually
from tests.helpers import raw_sql, status_is

pytestmark = pytest.mark.timeout(60)


CORRUPTIONS = [
    ("completed", '"not a number"', None, "does not decode to its type"),
    ("completed", "{garbage", None, "is not JSON"),
    ("failed", None, '{"type": "NonDeterminismError", "module": "cairn.errors", "message": "x"}', "Cairn's own"),
    ("failed", None, "42", "is not an error record"),
    ("failed", None, '{"type": "path", "module": "os", "message": "x"}', "not an exception type"),
]


@pytest.mark.parametrize(("status", "result", "error", "why"), CORRUPTIONS)
async def test_a_corrupted_step_pauses_the_run_naming_the_step_and_the_value(
    client: cairn.Client, db_url: str, status: str, result: str | None, error: str | None, why: str
) -> None:
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(flows.add_then_wait, 1)
        await eventually(lambda: status_is(handle, RunStatus.WAITING), what="the run waiting")
        raw_sql(
            db_url,
            "UPDATE cairn_steps SET status = ?, result = ?, error = ? WHERE run_id = ? AND seq = 1",
            status,
            result,
            error,
            handle.id,
        )
        await handle.signal("go")  # the run is replayed from its journal
        await eventually(lambda: status_is(handle, RunStatus.PAUSED), what="the run paused")
        row = await handle.describe()
        recorded = json.loads(row.error or "{}")
        assert row.pause_reason == "corrupt_journal"
        assert recorded["type"] == "JournalCorrupted", recorded
        assert "is corrupted at step 1" in recorded["message"] and why in recorded["message"]
        assert repr(result if error is None else error)[:30] in recorded["message"]

        raw_sql(db_url, "UPDATE cairn_steps SET status = 'completed', result = '2', error = NULL WHERE seq = 1")
        assert await handle.retry() == RunStatus.RUNNING
        assert await handle.result(timeout=10) == 2
