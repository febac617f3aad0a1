"""The worker's estimate of the database clock (`Runner.observe_clock`), from claims whose delays
vary: the database read its clock somewhere between our sending a claim and its answer. Taken as
the answer came, the estimate was behind by the whole claim; taken as the claim was sent, ahead by
the delay before the server read its clock, 30 ms under load. Either way a worker wrote times the
database's own contradict (a run ended after the database's now; a step ended before its action
did)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn.registry import Registry
from cairn.store.open import open_store
from cairn.worker.runner import CLOCK_SAMPLES, Runner

OFFSET = 1000.0
"""The database clock's true offset from ours in these tests (another machine's clock)."""


class ManualClock:
    real = True

    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def now(self) -> float:
        return self.t


@pytest.fixture
def runner(tmp_path: Path) -> tuple[Runner, ManualClock]:
    store = open_store(f"sqlite:///{tmp_path}/c.db")
    clock = ManualClock()
    store.clock = clock
    return Runner(store, Registry(), "w", 5.0), clock


def claim(clock: ManualClock, runner: Runner, before: float, after: float, offset: float = OFFSET) -> None:
    """One claim: sent, read by the database `before` seconds later, answered `after` seconds after that."""
    sent_at = clock.t
    clock.t += before
    database_now = clock.t + offset
    clock.t += after
    runner.observe_clock(database_now, sent_at)


def test_a_slow_claim_moves_the_estimate_neither_behind_nor_ahead(runner: tuple[Runner, ManualClock]) -> None:
    r, clock = runner
    claim(clock, r, 0.0002, 0.002)
    assert r.now() - clock.t == pytest.approx(OFFSET + 0.0002, abs=1e-6)
    claim(clock, r, 0.030, 0.001)  # held up before the server read its clock (the GIL, under load)
    assert r.now() - clock.t == pytest.approx(OFFSET + 0.0002, abs=1e-6)
    claim(clock, r, 0.0001, 0.040)  # held up after (a long claim, an answer read late)
    assert r.now() - clock.t == pytest.approx(OFFSET + 0.0001, abs=1e-6)


def test_the_estimate_follows_a_clock_that_was_set(runner: tuple[Runner, ManualClock]) -> None:
    r, clock = runner
    for _ in range(5):
        claim(clock, r, 0.0001, 0.001)
    clock.t -= 2.0  # our clock set back two seconds: the database's is now 2 s further ahead
    claim(clock, r, 0.0003, 0.001, OFFSET + 2.0)
    clock.t += 5.0  # the clamp (a time never earlier than one given before) is not what is measured
    assert r.now() - clock.t == pytest.approx(OFFSET + 2.0003, abs=1e-6)


def test_only_the_last_claims_count(runner: tuple[Runner, ManualClock]) -> None:
    r, clock = runner
    claim(clock, r, 0.0, 0.001)  # a claim with no delay at all, long ago
    for _ in range(CLOCK_SAMPLES):
        claim(clock, r, 0.0005, 0.001)
    assert r.now() - clock.t == pytest.approx(OFFSET + 0.0005, abs=1e-6)
