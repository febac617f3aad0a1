"""A journal changed outside Cairn is named as such (JournalCorrupted: the step, the stored value and
why it does not decode), pauses the run, and is never blamed on the workflow's code; once the row is
repaired, `retry` continues the run."""

from __future__ import annotations

import asyncio
import json

import pytest

import cairn
from cairn import RunStatus
from cairn.client import waiter
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


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [("kind", "bogus", "is not a valid StepKind"), ("status", "bogus", "is not a valid StepStatus")],
)
async def test_a_row_of_a_kind_no_cairn_wrote_pauses_its_run_and_no_other(
    client: cairn.Client, db_url: str, column: str, value: str, why: str
) -> None:
    """Decoded inside the claim of every run the worker took with it, such a row failed the whole
    claim, at every claim after: every run of the worker stalled, the bad one shown waiting."""
    async with cairn.Worker(client, poll_interval=0.05):
        bad = await client.start(flows.add_then_wait, 1)
        await eventually(lambda: status_is(bad, RunStatus.WAITING), what="the run waiting")
        raw_sql(db_url, f"UPDATE cairn_steps SET {column} = ? WHERE run_id = ? AND seq = 1", value, bad.id)
        await bad.signal("go")
        ordinary = [await client.start(flows.Sequence3, i) for i in range(10)]
        assert [await h.result(timeout=20) for h in ordinary] == [i + 3 for i in range(10)]
        await eventually(lambda: status_is(bad, RunStatus.PAUSED), what="the bad run paused")
    row = await bad.describe()
    recorded = json.loads(row.error or "{}")
    assert row.pause_reason == "corrupt_journal" and recorded["type"] == "JournalCorrupted"
    assert "is corrupted at step 1" in recorded["message"] and why in recorded["message"]


@cairn.workflow
async def gate_then_add(name: str) -> list[object]:
    return list(await asyncio.gather(flows.wait_at_gate(name), flows.add_one(1)))


async def test_an_action_whose_options_are_not_json_pauses_its_run_and_no_other(
    client: cairn.Client, db_url: str
) -> None:
    async with cairn.Worker(client, concurrency=1, poll_interval=0.05):  # the second action waits its turn
        handle = await client.start(gate_then_add, "corrupt-options")
        await eventually(lambda: _has_steps(handle, 2), what="both steps")
        raw_sql(db_url, "UPDATE cairn_steps SET options = ? WHERE run_id = ? AND seq = 2", "zz{", handle.id)
        flows.GATES["corrupt-options"].set()
        await eventually(lambda: status_is(handle, RunStatus.PAUSED), what="the run paused")
        assert await client.run(flows.Sequence3, 5, timeout=20) == 8
    recorded = json.loads((await handle.describe()).error or "{}")
    assert recorded["type"] == "JournalCorrupted" and "at step 2" in recorded["message"]
    assert "not JSON" in recorded["message"]


async def _has_steps(handle: cairn.RunHandle, n: int) -> bool:
    return len(await handle.steps()) >= n


async def test_a_wait_hears_the_corrupt_pause_at_once(
    client: cairn.Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pause is announced on the run's channel as every other pause is, so a CLI's or an HTTP
    caller's wait answers with it then, not at its next safety read (pushed out of the test here)."""
    monkeypatch.setattr(waiter, "POLL_NOTIFIED", 600.0)
    monkeypatch.setattr(waiter, "NEWS_GAP", 600.0)
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(flows.add_then_wait, 1)
        await eventually(lambda: status_is(handle, RunStatus.WAITING), what="the run waiting")
        raw_sql(db_url, "UPDATE cairn_steps SET kind = 'bogus' WHERE run_id = ? AND seq = 1", handle.id)
        settled = asyncio.ensure_future(handle._settled(30))
        await eventually(lambda: _waited_on(client, handle.id), what="the wait listening")
        await handle.signal("go")
        row = await asyncio.wait_for(settled, 20)
    assert row.status == RunStatus.PAUSED and row.pause_reason == "corrupt_journal"


async def _waited_on(client: cairn.Client, run_id: str) -> bool:
    return run_id in client.waiters.here()._waiting
