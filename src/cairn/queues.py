"""Queues with flow control: the limits a queue puts on the work that goes through it.

A `Queue` is checked where it is declared (a bad limit is an error at import, not a stalled claim)
and registered with the process's registry, so a worker that imports it upserts it: every worker
and every claim then read the same limits from the database (the last declaration wins). The
limits are enforced by the claim itself (`cairn.store.queue_tx`), never by a worker's memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cairn.names import check_name

DEFAULT_QUEUE = "default"
"""The queue of work declared without one; it takes no limits (its claims stay the fastest path)."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most `n` starts (claims that begin a run or an action attempt) per `per`, across the cluster."""

    n: int
    per: timedelta | float

    def __post_init__(self) -> None:
        _positive_int(self.n, "RateLimit n")
        if _seconds(self.per) <= 0:
            raise ValueError(f"RateLimit per= must be a positive duration, got {self.per!r}")

    @property
    def period(self) -> float:
        return _seconds(self.per)


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue's limits as stored (`cairn_queues`); None means no limit."""

    name: str
    concurrency: int | None = None
    per_worker: int | None = None
    per_key: int | None = None
    rate_n: int | None = None
    rate_period: float | None = None
    priority: bool = False

    @property
    def limited(self) -> bool:
        """Whether its claims go through the queue's row (any limit at all)."""
        limits = (self.concurrency, self.per_worker, self.per_key, self.rate_n)
        return any(v is not None for v in limits)

    def describe(self) -> str:
        """The limits as one line, for logs and the CLI."""
        parts = [
            f"{k}={v}"
            for k, v in (("concurrency", self.concurrency), ("per_worker", self.per_worker), ("per_key", self.per_key))
            if v is not None
        ]
        if self.rate_n is not None:
            parts.append(f"rate={self.rate_n}/{self.rate_period:g}s")
        if self.priority:
            parts.append("priority")
        return ", ".join(parts) or "no limits"


class Queue:
    """`Queue(name, concurrency=None, per_worker=None, per_key=None, rate_limit=RateLimit(n, per=...),
    priority=False)`, used as `queue=` on actions and workflows.

    `concurrency`: at most N at once across all workers (a workflow queue counts runs started and
    not finished, sleeping and waiting ones included; an action queue counts attempts in flight).
    `per_worker`: at most N at once in one worker. `per_key`: at most N runs at once per `key`
    given to `client.start`. `rate_limit`: at most N starts per period across the cluster.
    `priority`: the queue takes `client.start(..., priority=)` (lower numbers first)."""

    __slots__ = ("spec",)

    def __init__(
        self,
        name: str,
        concurrency: int | None = None,
        per_worker: int | None = None,
        per_key: int | None = None,
        rate_limit: RateLimit | None = None,
        priority: bool = False,
        *,
        register: bool = True,
    ) -> None:
        check_name(name, "queue name")
        for value, what in ((concurrency, "concurrency"), (per_worker, "per_worker"), (per_key, "per_key")):
            if value is not None:
                _positive_int(value, f"queue {name!r}: {what}")
        if rate_limit is not None and not isinstance(rate_limit, RateLimit):
            raise TypeError(
                f"queue {name!r}: rate_limit must be a cairn.RateLimit(n, per=timedelta), got {rate_limit!r}"
            )
        if not isinstance(priority, bool):
            raise TypeError(f"queue {name!r}: priority must be True or False, got {priority!r}")
        self.spec = QueueSpec(
            name,
            concurrency,
            per_worker,
            per_key,
            None if rate_limit is None else rate_limit.n,
            None if rate_limit is None else rate_limit.period,
            priority,
        )
        if name == DEFAULT_QUEUE and (self.spec.limited or priority):
            raise ValueError(
                f"the {DEFAULT_QUEUE!r} queue takes no limits (work declared without a queue goes there); "
                "name a queue of your own, e.g. cairn.Queue('billing', concurrency=10)"
            )
        if register:
            from cairn.registry import registry

            registry.register_queue(self)
            _DECLARED[name] = self.spec

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"Queue({self.name!r}, {self.spec.describe()})"


_DECLARED: dict[str, QueueSpec] = {}
"""Every queue declared in this process, by name (the last declaration wins): a worker upserts
those its workflows and actions use even when a registry was reset or copied since."""


def declared(name: str) -> QueueSpec | None:
    return _DECLARED.get(name)


def queue_name(queue: Any, what: str) -> str:
    """The name `queue=` gives (a `Queue` or a name string), checked."""
    if isinstance(queue, Queue):
        return queue.name
    return check_name(queue, what)


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a timedelta or seconds, got {value!r}")
    return float(value)


__all__ = ["DEFAULT_QUEUE", "Queue", "QueueSpec", "RateLimit", "declared", "queue_name"]
