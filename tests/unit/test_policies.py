"""Retry and backoff policies take durations as users write them elsewhere in the API."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

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


def test_a_policy_given_by_hand_retries_any_exception_up_to_its_attempts() -> None:
    """`RetryPolicy(attempts=3)` is three attempts at whatever fails, as in Temporal, DBOS and
    Waymark (`[retry: 3]` caught all exceptions); the default of an action given none retries
    only transient errors."""
    policy = cairn.RetryPolicy(attempts=3)
    assert policy.should_retry(ValueError("bad"), 1) and policy.should_retry(KeyError("k"), 2)
    assert not policy.should_retry(ValueError("bad"), 3)  # the third attempt was the last
    default = cairn.RetryPolicy.default()
    assert not default.should_retry(ValueError("bad"), 1, chosen=False)
    assert default.should_retry(ConnectionError("reset"), 1, chosen=False)
    assert default.should_retry(cairn.TransientError("again"), 4, chosen=False)


def test_retry_on_and_non_retryable_narrow_a_policy_along_the_exception_classes() -> None:
    class Throttled(ConnectionError):
        pass

    narrowed = cairn.RetryPolicy(attempts=4, retry_on=(ConnectionError,), non_retryable=(Throttled,))
    assert narrowed.should_retry(ConnectionResetError("reset"), 1)  # a subclass of what it retries
    assert not narrowed.should_retry(Throttled("slow down"), 1)  # excluded, though a ConnectionError
    assert not narrowed.should_retry(ValueError("bad"), 1)
    everything_but = cairn.RetryPolicy(non_retryable=(ValueError,))
    assert everything_but.should_retry(RuntimeError("boom"), 1)
    assert not everything_but.should_retry(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), 1)


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: cairn.RetryPolicy(attempts="3"), "attempts is a whole number"),  # type: ignore[arg-type]
        (lambda: cairn.RetryPolicy(attempts=True), "attempts is a whole number"),
        (lambda: cairn.RetryPolicy(retry_on=("ValueError",)), r"exception classes.*give the class, not its name"),  # type: ignore[arg-type]
        (lambda: cairn.RetryPolicy(non_retryable=ValueError("x")), "non_retryable holds exception classes"),  # type: ignore[arg-type]
        (lambda: cairn.RetryPolicy(retry_on=(int,)), "retry_on holds exception classes"),  # type: ignore[arg-type]
        (lambda: cairn.BackoffPolicy(base_delay=float("nan")), "finite"),
        (lambda: cairn.BackoffPolicy(multiplier=float("inf")), "finite"),
        (lambda: cairn.BackoffPolicy(multiplier="2"), "multiplier is a number"),  # type: ignore[arg-type]
        (lambda: cairn.action(retry=3)(lambda: None), r"must be a cairn.RetryPolicy.*RetryPolicy\(attempts=3\)"),  # type: ignore[call-overload]
        (lambda: cairn.action(backoff=2.0)(lambda: None), "backoff of action .* must be a cairn.BackoffPolicy"),
        (lambda: cairn.action(timeout="5")(lambda: None), "timeout of action .* must be a number of seconds"),
        (lambda: cairn.action(timeout=float("inf"))(lambda: None), "timeout of action .* must be finite"),  # type: ignore[call-overload]
    ],
)
def test_a_policy_of_the_wrong_shape_is_refused_when_declared(make: Any, says: str) -> None:
    """Accepted, such a policy failed only inside the worker, at the first attempt, which was then
    dropped and taken again for ever: the run wedged with its step shown running."""
    with pytest.raises((TypeError, ValueError), match=says):
        make()


def test_exception_classes_may_be_given_as_one_class_or_a_list() -> None:
    assert cairn.RetryPolicy(retry_on=ValueError).retry_on == (ValueError,)  # type: ignore[arg-type]
    assert cairn.RetryPolicy(non_retryable=[KeyError, OSError]).non_retryable == (KeyError, OSError)  # type: ignore[arg-type]


def test_an_action_timeout_is_retried_only_where_the_chosen_policy_retries_it() -> None:
    """`retry_on=(KeyError,)` retried an action's timeout to the last attempt: a chosen policy's
    ActionTimeout was retried whatever its classes said."""
    late = cairn.ActionTimeout("the attempt ran past its timeout of 0.2s")
    assert cairn.RetryPolicy(attempts=3).should_retry(late, 1)  # any Exception
    assert cairn.RetryPolicy(attempts=3, retry_on=(TimeoutError,)).should_retry(late, 1)
    assert not cairn.RetryPolicy(attempts=3, retry_on=(KeyError,)).should_retry(late, 1)
    assert not cairn.RetryPolicy(attempts=3, non_retryable=(cairn.ActionTimeout,)).should_retry(late, 1)
    assert not cairn.RetryPolicy.default().should_retry(late, 1, chosen=False)  # given none: at once
