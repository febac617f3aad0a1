"""The one clock that leases, due times and a run's logical time are read from.

Production reads the real clock (`SYSTEM`). A test environment (`cairn.testing`) hands the store
and its worker one `SkippingClock` instead: real time plus an offset that only grows, so that a
30-day durable sleep can be skipped in a test while nothing outside that environment is touched.
The store reads it for the database clock (`cairn_now()`: a Python function on SQLite, the
`cairn.fake_now` setting on PostgreSQL) and the worker for its estimate of that clock. Rejected:
monkeypatching `time.time` (it would move every clock in the process, the test runner's too).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    real: bool
    """Whether this is the real clock (the database's own may then be used)."""

    def now(self) -> float:
        """Seconds since the epoch."""


class SystemClock:
    real = True

    def now(self) -> float:
        return time.time()


SYSTEM = SystemClock()


class SkippingClock:
    """Real time plus an offset that only grows: time flows as usual and can be skipped ahead."""

    real = False

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        """Move logical time on by `seconds` (never back)."""
        if seconds < 0:
            raise ValueError(f"time only moves forward: cannot advance by {seconds}s")
        with self._lock:
            self._offset += seconds

    def advance_to(self, when: float) -> float:
        """Move logical time on to `when` if that is ahead; the seconds skipped."""
        with self._lock:
            skip = when - (time.time() + self._offset)
            if skip <= 0:
                return 0.0
            self._offset += skip
            return skip
