"""Retry and backoff policies: pure values with pure decisions, stored with each scheduled step."""

from __future__ import annotations

import math
import os
import random
import re
from dataclasses import dataclass, field
from datetime import timedelta

from cairn.errors import ActionTimeout, TransientError
from cairn.names import importable_module
from cairn.types import Json

DEFAULT_RETRY_ON: tuple[type[BaseException], ...] = (TransientError, ConnectionError, TimeoutError)
"""What an action with no policy of its own retries: only what is transient by nature (Oryonix's
rule); any other exception reaches the workflow after the first attempt."""


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts an action gets and which exceptions earn another one.

    A policy given by hand retries any `Exception` unless told otherwise (`retry_on`,
    `non_retryable`), as a retry policy does in Temporal, DBOS and Waymark: `RetryPolicy(attempts=3)`
    means three attempts at whatever fails. Only the default an action gets when it is given no
    policy (`RetryPolicy.default()`) is limited to transient errors."""

    attempts: int = 5
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    non_retryable: tuple[type[BaseException], ...] = field(default=())

    @classmethod
    def default(cls) -> RetryPolicy:
        """The policy of an action given none: 5 attempts at transient errors only."""
        return cls(attempts=5, retry_on=DEFAULT_RETRY_ON)

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError(f"RetryPolicy.attempts is a whole number of attempts, like 3; got {self.attempts!r}")
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1, got {self.attempts}")
        for name in ("retry_on", "non_retryable"):
            object.__setattr__(self, name, _exception_classes(getattr(self, name), name))

    def should_retry(self, exc: BaseException, attempt: int, chosen: bool = True) -> bool:
        """Whether a failed `attempt` (1-based) is followed by another (see `should_retry`)."""
        return should_retry(self.to_json(), exc, attempt, chosen)

    def to_json(self) -> Json:
        return {
            "attempts": self.attempts,
            "retry_on": [_qualname(t) for t in self.retry_on],
            "non_retryable": [_qualname(t) for t in self.non_retryable],
        }


DEFAULT_MAX_DELAY = 60.0
"""Seconds `BackoffPolicy.max_delay` is when not given (unless `base_delay` is longer)."""


@dataclass(frozen=True)
class BackoffPolicy:
    """Delay before attempt n+1: base_delay * multiplier**(n-1), capped at max_delay, with optional
    full jitter. Delays in seconds or as `timedelta`s (kept as seconds). `max_delay` defaults to a
    minute, or to `base_delay` when that is longer: `BackoffPolicy(base_delay=timedelta(hours=1))`
    waits an hour, not a minute. A `max_delay` shorter than `base_delay` is refused."""

    base_delay: float | timedelta = 1.0
    multiplier: float = 2.0
    max_delay: float | timedelta | None = None
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_delay is None:
            base = self.base_delay.total_seconds() if isinstance(self.base_delay, timedelta) else self.base_delay
            if isinstance(base, int | float) and not isinstance(base, bool):
                object.__setattr__(self, "max_delay", max(DEFAULT_MAX_DELAY, float(base)))
        for name in ("base_delay", "max_delay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
                raise TypeError(f"BackoffPolicy.{name} is seconds or a timedelta, got {value!r}")
            if isinstance(value, timedelta):
                object.__setattr__(self, name, value.total_seconds())
        if isinstance(self.multiplier, bool) or not isinstance(self.multiplier, int | float):
            raise TypeError(f"BackoffPolicy.multiplier is a number, like 2; got {self.multiplier!r}")
        if not all(math.isfinite(_seconds(v)) for v in (self.base_delay, self.max_delay or 0.0, self.multiplier)):
            raise ValueError(
                "BackoffPolicy needs finite base_delay, max_delay and multiplier, got "
                f"{self.base_delay}, {self.max_delay}, {self.multiplier}"
            )
        if _seconds(self.base_delay) < 0 or _seconds(self.max_delay or 0.0) < 0 or self.multiplier < 1:
            raise ValueError(
                "BackoffPolicy needs base_delay >= 0, max_delay >= 0 and multiplier >= 1, got "
                f"{self.base_delay}, {self.max_delay}, {self.multiplier}"
            )
        if _seconds(self.max_delay or 0.0) < _seconds(self.base_delay):
            raise ValueError(
                f"BackoffPolicy max_delay ({self.max_delay}s) is shorter than base_delay ({self.base_delay}s): "
                "every delay would be cut to max_delay; raise max_delay, or leave it out (a minute, or base_delay "
                "when longer)"
            )

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        base, cap = _seconds(self.base_delay), _seconds(self.max_delay or 0.0)
        raw = min(cap, base * self.multiplier ** max(0, attempt - 1))
        if not self.jitter:
            return raw
        return (rng or random).uniform(raw / 2, raw)

    def to_json(self) -> Json:
        return {
            "base_delay": self.base_delay,
            "multiplier": self.multiplier,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
        }

    @classmethod
    def from_json(cls, data: Json) -> BackoffPolicy:
        return cls(**data)


def _exception_classes(value: object, name: str) -> tuple[type[BaseException], ...]:
    """A policy's exception classes as a tuple (one class, or a list of them, is taken too); a
    name or an instance is refused when declared, not found out by the first failing attempt."""
    given = (value,) if isinstance(value, type) else value
    if isinstance(given, list | tuple | set | frozenset) and all(
        isinstance(t, type) and issubclass(t, BaseException) for t in given
    ):
        return tuple(given)
    named = isinstance(value, str) or (
        isinstance(value, list | tuple | set | frozenset) and any(isinstance(t, str) for t in value)
    )
    raise TypeError(
        f"RetryPolicy.{name} holds exception classes, like (ValueError, KeyError); got {value!r}"
        + (" (give the class, not its name)" if named else "")
    )


def retry_policy(value: object, what: str) -> RetryPolicy | None:
    """`retry=` as given to an action or a call: a RetryPolicy, or None for the default."""
    if value is None or isinstance(value, RetryPolicy):
        return value
    hint = f" (retry={value!r} means cairn.RetryPolicy(attempts={value!r}))" if isinstance(value, int) else ""
    raise TypeError(f"retry of {what} must be a cairn.RetryPolicy, got {value!r}{hint}")


def backoff_policy(value: object, what: str) -> BackoffPolicy | None:
    """`backoff=` as given to an action or a call: a BackoffPolicy, or None for the default."""
    if value is None or isinstance(value, BackoffPolicy):
        return value
    raise TypeError(
        f"backoff of {what} must be a cairn.BackoffPolicy, like cairn.BackoffPolicy(base_delay=2); got {value!r}"
    )


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def should_retry(policy: Json, exc: BaseException, attempt: int, chosen: bool) -> bool:
    """Decide from a stored policy: class names are matched along the exception's MRO.

    Matching by name lets any worker apply a per-call policy without importing or pickling classes.
    `ActionTimeout` (the attempt ran past the action's `timeout=`, Cairn's deadline rather than a
    TimeoutError the action raised) is retried only under a policy the user `chosen` for the
    action or the call: by default it reaches the workflow after the first attempt.
    """
    if attempt >= int(policy["attempts"]):
        return False
    names = {_qualname(t) for t in type(exc).__mro__ if issubclass(t, BaseException)}
    if names & set(policy["non_retryable"]):
        return False
    retried = bool(names & set(policy["retry_on"]))
    return chosen and retried if isinstance(exc, ActionTimeout) else retried


def seconds(value: float | timedelta | None, what: str) -> float | None:
    """Normalise a duration given as seconds or timedelta; reject negatives by name."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise TypeError(f"{what} must be a number of seconds or a timedelta, got {value!r}")
    secs = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if secs != secs:  # NaN compares false with every bound: it would pass as no wait at all
        raise ValueError(f"{what} must be a number of seconds or a timedelta, got nan")
    if secs == math.inf:  # a due time the database cannot store (PostgreSQL refused it, SQLite did not)
        raise ValueError(f"{what} must be finite, got {value!r}; leave it out to set no limit")
    if secs < 0:
        raise ValueError(f"{what} must not be negative, got {value!r}")
    return secs


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_WITH_UNITS = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def unit_seconds(text: str) -> float | None:
    """The seconds of a duration written with units (`90s`, `15m`, `1h30m`, `2w`; `m` is minutes),
    or None when `text` is not one: what `parse_duration` and `cairn runs --since` read alike."""
    value = text.strip().lower()
    if not _WITH_UNITS.fullmatch(value):
        return None
    return sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """`"30d"`, `"12h"`, `"90m"`, `"45s"`, `"2w"` or a number of seconds; ValueError saying what is
    accepted otherwise."""
    value = text.strip().lower()
    amount = unit_seconds(value)
    if amount is None:  # a number of seconds, or one number and its unit (`1e3s`, `-1h`: said below)
        unit = value[-1:] if value[-1:] in _UNITS else "s"
        number = value[:-1] if value[-1:] in _UNITS else value
        try:
            amount = float(number) * _UNITS[unit]
        except ValueError:
            raise ValueError(
                f"{what} {text!r} is not a duration; write e.g. 30d, 12h, 90m, 1h30m, 45s or 3600"
            ) from None
    if not 0 <= amount < math.inf:  # NaN too; 0 is allowed: `prune --older-than 0s` means every finished run
        raise ValueError(f"{what} must be 0 or more and finite, got {text!r}")
    try:
        return timedelta(seconds=amount)
    except OverflowError:
        raise ValueError(f"{what} {text!r} is longer than any date can be apart") from None


def _qualname(t: type[BaseException]) -> str:
    """The name a class is matched by on any worker: a script's classes by the module it is imported as."""
    return f"{importable_module(t.__module__)}.{t.__qualname__}"


def retention(value: timedelta | float | None) -> timedelta | None:
    """How long finished runs are kept: `value` (a timedelta or seconds), else CAIRN_RETENTION (a
    duration such as "30d"), else None (keep them all). Zero or less is refused wherever it comes
    from: `CAIRN_RETENTION=0` was taken, and deleted every run as soon as it finished."""
    if value is None:
        env = os.environ.get("CAIRN_RETENTION")
        if not env:
            return None
        kept, what = parse_duration(env, "CAIRN_RETENTION"), f"CAIRN_RETENTION={env!r}"
    else:
        kept, what = value if isinstance(value, timedelta) else timedelta(seconds=float(value)), "retention"
    if kept.total_seconds() <= 0:
        raise ValueError(
            f"{what} must be a positive duration, got {kept.total_seconds():g}s: give how long to keep "
            "finished runs (timedelta(days=30), or seconds; 30d in the environment), or none to keep them all"
        )
    return kept
