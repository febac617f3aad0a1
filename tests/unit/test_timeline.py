"""The run page's timeline draws steps too short to tell apart as one bar each few, saying how many.

A loop of 5,000 quick steps drew 5,000 bars of 2 units each, piled on each other: about 1 MB of
the page's 1.2 MB, and half its rendering time.
"""

from __future__ import annotations

from cairn import StepStatus
from cairn.client.handle import StepInfo
from cairn.types import StepKind
from cairn.web.views import MAX_JOINED, MIN_BAR, timeline


def _step(seq: int, start: float, end: float | None, status: StepStatus = StepStatus.COMPLETED) -> StepInfo:
    return StepInfo(
        seq=seq,
        kind=StepKind.ACTION,
        name="shop.charge",
        args={},
        status=status,
        result=None,
        error=None,
        attempt=1,
        created_at=start,
        started_at=start,
        completed_at=end,
        logs=[],
    )


def test_thousands_of_quick_steps_in_a_row_are_a_hundred_bars_covering_each_step_once() -> None:
    steps = [_step(i + 1, 100.0 + i * 0.001, 100.0 + i * 0.001 + 0.0008) for i in range(5000)]
    steps[2999] = _step(3000, 102.999, 102.9998, StepStatus.FAILED)
    drawn = timeline(steps, 100.0, 106.0)
    assert len(drawn.bars) <= 1000 / (MAX_JOINED - MIN_BAR) + 1  # about 41 steps a bar, 5,000 over 1,000 units
    covered = [seq for b in drawn.bars for seq in range(b.first_seq, b.last_seq + 1)]
    assert covered == list(range(1, 5001)) and sum(b.count for b in drawn.bars) == 5000
    failed = [b for b in drawn.bars if b.status == "failed"]
    assert len(failed) == 1 and failed[0].seq == 3000  # the bar shows the failure and leads to it
    assert failed[0].first_seq <= 3000 <= failed[0].last_seq
    assert failed[0].label.startswith(f"#{failed[0].first_seq}-#{failed[0].last_seq}: {failed[0].count} steps of")
    assert all(b.width <= MAX_JOINED + MIN_BAR for b in drawn.bars)


def test_steps_wide_enough_to_see_keep_a_bar_each() -> None:
    steps = [_step(i + 1, 10.0 + i, 10.0 + i + 0.9) for i in range(3)]  # back to back, each a third
    drawn = timeline(steps, 10.0, 13.0)
    assert [(b.seq, b.count) for b in drawn.bars] == [(1, 1), (2, 1), (3, 1)]
    assert drawn.bars[0].label == "#1 shop.charge (action, completed, 900 ms)"


def test_quick_steps_after_a_long_one_are_a_bar_of_their_own() -> None:
    steps = [_step(1, 0.0, 5.0), _step(2, 5.0, 5.001), _step(3, 5.001, 5.002, StepStatus.CANCELLED)]
    steps.append(_step(4, 5.002, 5.003))
    drawn = timeline(steps, 0.0, 10.0)
    assert [(b.seq, b.first_seq, b.last_seq, b.count, b.status) for b in drawn.bars] == [
        (1, 1, 1, 1, "completed"),
        (3, 2, 4, 3, "cancelled"),  # the quick ones together, shown cancelled, leading to that one
    ]
