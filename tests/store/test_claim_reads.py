"""A claim of runs never activated (the runs other processes start: an API server, the CLI, a
web app's client) reads no journal: they have none. It read each run's timers, steps, undelivered
results and signal waits all the same, one more round trip per claim on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest

import cairn
from cairn import RunStatus
from cairn.store.base import Tx
from cairn.store.postgres import _PgTx
from cairn.types import StepKind
from tests import flows
from tests.conftest import eventually
from tests.helpers import status_is

JOURNAL = {"fire_due_timers_of_runs", "steps_of_runs", "undelivered_steps_of_runs", "signal_matches"}


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the statements transactions send in batches (`Tx.all_of`), on both backends."""
    names: list[str] = []
    for cls in (Tx, _PgTx):
        original = cls.all_of

        def all_of(self: Tx, statements: Sequence[tuple[str, Any]], original: Any = original) -> Any:
            names.extend(name for name, _ in statements)
            return original(self, statements)

        monkeypatch.setattr(cls, "all_of", all_of)
    yield names


async def test_a_claim_of_new_runs_reads_no_journal(client: cairn.Client, sent: list[str]) -> None:
    handles = [await client.start(flows.Sequence3, i) for i in range(3)]
    run = await client.store.get_run(handles[0].id)
    assert run is not None
    work = await client.store.claim_work("w", [run.workflow], [], None, 16, 16, 30.0)
    assert sorted(c.run.id for c in work.runs) == sorted(h.id for h in handles)
    assert all(c.journal == [] and c.batch == [] for c in work.runs)
    assert JOURNAL.isdisjoint(sent), sent


async def test_a_claim_of_activated_runs_still_reads_their_journals(client: cairn.Client, sent: list[str]) -> None:
    """A run that waits for a signal, its worker gone: a claim after the signal came takes the run
    with its journal and the signal matched to its wait."""
    handle = await client.start(flows.Approval, "o-1")
    async with cairn.Worker(client, poll_interval=0.05, lease=5.0):
        await eventually(lambda: status_is(handle, RunStatus.WAITING), what="the run waiting")
    await handle.signal("approval", {"ok": True, "by": "ann"})
    sent.clear()
    run = await client.store.get_run(handle.id)
    assert run is not None
    work = await client.store.claim_work("w", [run.workflow], [], None, 16, 16, 30.0)
    (claim,) = work.runs
    assert [s.kind for s in claim.journal] == [StepKind.SIGNAL]
    assert [s.result for s in claim.batch] == ['{"ok":true,"by":"ann"}']
    assert set(sent) >= JOURNAL, sent
