"""Retry and backoff policies take durations as users write them elsewhere in the API."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

import cairn


def test_backoff_delays_may_be_timedeltas_kept_as_seconds() -> None:
    """SPEC 1 takes `timeout` as seconds or a timedelta; a backoff's delays are durations too."""
    policy = cairn.BackoffPolicy(base_delay=timedelta(milliseconds=50), max_delay=timedelta(minutes=1), jitter=False)
    assert policy == cairn.BackoffPolicy(base_delay=0.05, max_delay=60.0, jitter=False)
    assert policy.delay_for(3) == pytest.approx(0.2)
    assert json.loads(json.dumps(policy.to_json())) == policy.to_json()  # stored with each step as JSON
    assert cairn.BackoffPolicy.from_json(policy.to_json()) == policy


@pytest.mark.parametrize(
    ("kwargs", "error", "says"),
    [
        ({"base_delay": "1s"}, TypeError, "base_delay is seconds or a timedelta"),
        ({"max_delay": True}, TypeError, "max_delay is seconds or a timedelta"),
        ({"base_delay": timedelta(seconds=-1)}, ValueError, "base_delay >= 0"),
        ({"multiplier": 0.5}, ValueError, "multiplier >= 1"),
    ],
)
def test_a_bad_backoff_says_which_field_is_wrong(kwargs: dict[str, object], error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        cairn.BackoffPolicy(**kwargs)  # type: ignore[arg-type]
