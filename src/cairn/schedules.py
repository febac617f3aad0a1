"""Schedules: a workflow started on a cron expression or at an interval, by the workers themselves.

A `Schedule` is checked when it is declared (a bad cron expression, time zone, policy or argument is
an error there, not at 2 a.m.), and registered with the process's registry, so a worker that
imports it upserts it. Each tick starts exactly one run across the cluster: the run's id is the
schedule's id and the tick's time, so a second firing of the same tick (another worker, a retry)
is an idempotent start that starts nothing. The next-time arithmetic is cronsim's, on time-zone
aware datetimes (zoneinfo), so daylight-saving transitions fall as the wall clock says.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from cairn.names import check_name

Overlap = Literal["skip", "allow", "cancel_previous", "buffer_one"]
Catchup = Literal["none", "latest", "all"]
OVERLAPS = ("skip", "allow", "cancel_previous", "buffer_one")
CATCHUPS = ("none", "latest", "all")
MAX_CATCHUP_TICKS = 1000
"""`catchup="all"` starts at most this many missed ticks at once (the most recent ones)."""
NONE_GRACE = 2.0
"""Seconds a tick may be late and still count as due, not missed, under `catchup="none"`, when
nothing says since when the firing worker has been up (a direct call of the store)."""


@dataclass
class Schedule:
    """`Schedule(id, workflow, cron="0 2 * * *", tz="Europe/Paris", args=(...))`, or `every=timedelta`.

    `overlap`: what a tick does while the previous run is still going: "skip" (default: no new
    run), "allow", "cancel_previous", or "buffer_one" (one run waits and starts when the previous
    ends). `catchup` after downtime: "none" (default: ticks that fell due while no worker was up
    are dropped), "latest" (one run for the ticks missed) or "all" (each missed tick, within
    `catchup_window`)."""

    id: str
    workflow: Any
    cron: str | None = None
    every: timedelta | float | None = None
    tz: str = "UTC"
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    overlap: Overlap = "skip"
    catchup: Catchup = "none"
    catchup_window: timedelta | float | None = None
    register: bool = True
    """Declared at import (the default): registered, so workers importing it upsert it."""
    input: str = field(init=False, default="")
    workflow_id: str = field(init=False, default="")
    queue: str = field(init=False, default="default")

    def __post_init__(self) -> None:
        check_name(self.id, "schedule id")
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"schedule {self.id!r} needs exactly one of cron=... or every=...")
        if self.cron is not None and not isinstance(self.cron, str):
            raise TypeError(
                f"schedule {self.id!r}: cron= is an expression as text, like '0 9 * * *'; got {self.cron!r}"
            )
        if not isinstance(self.tz, str):
            raise TypeError(
                f"schedule {self.id!r}: tz= is an IANA time zone name, like 'Europe/Paris'; got {self.tz!r}"
            )
        for name in ("every", "catchup_window"):
            _check_duration(self.id, name, getattr(self, name))
        try:
            zone = ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"schedule {self.id!r}: unknown time zone {self.tz!r} (use an IANA name)") from None
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime.now(zone))
            except (CronSimError, ValueError) as exc:
                raise ValueError(f"schedule {self.id!r}: bad cron expression {self.cron!r}: {exc}") from None
        if self.overlap not in OVERLAPS:
            raise ValueError(f"schedule {self.id!r}: overlap must be one of {', '.join(OVERLAPS)}")
        if self.catchup not in CATCHUPS:
            raise ValueError(f"schedule {self.id!r}: catchup must be one of {', '.join(CATCHUPS)}")
        defn = getattr(self.workflow, "__cairn_workflow__", None)
        if defn is None:
            from cairn.registry import registry

            defn = registry.workflow(str(self.workflow)) if isinstance(self.workflow, str) else None
        if defn is None:
            raise ValueError(
                f"schedule {self.id!r}: {self.workflow!r} is not a @workflow (or the name of one registered here)"
            )
        self.workflow_id = defn.id
        self.queue = defn.queue
        self.input = defn.encode_input(tuple(self.args), dict(self.kwargs))  # checked now, not at the tick
        if self.register:
            from cairn.registry import registry

            registry.register_schedule(self)

    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(
            id=self.id,
            workflow=self.workflow_id,
            queue=self.queue,
            cron=self.cron,
            every=None if self.every is None else _seconds(self.every),
            tz=self.tz,
            input=self.input,
            overlap=self.overlap,
            catchup=self.catchup,
            catchup_window=None if self.catchup_window is None else _seconds(self.catchup_window),
        )


@dataclass(frozen=True)
class ScheduleSpec:
    """What the database keeps of a schedule, and what tick arithmetic needs."""

    id: str
    workflow: str
    queue: str
    cron: str | None
    every: float | None
    tz: str
    input: str
    overlap: str
    catchup: str
    catchup_window: float | None

    def expression(self) -> str:
        return self.cron if self.cron is not None else f"every {self.every:g}s"

    def next_after(self, t: float) -> float:
        """The first tick strictly after `t` (epoch seconds)."""
        if self.every is not None:
            return (math.floor(t / self.every) + 1) * self.every
        assert self.cron is not None
        zone = ZoneInfo(self.tz)
        moment = datetime.fromtimestamp(t, zone)
        for tick in CronSim(self.cron, moment):
            if tick.timestamp() > t:
                return tick.timestamp()
        raise ValueError(f"cron expression {self.cron!r} has no tick after {moment.isoformat()}")

    def due_ticks(self, next_fire: float, now: float, up_since: float | None = None) -> list[float]:
        """The ticks to start a run for, of those due from `next_fire` up to `now`, by `catchup`.
        `up_since`: since when the worker firing them has been up. Under "none" the latest tick
        runs if it fell due since then (it is late, not missed); one that fell due before is missed
        unless another worker was up then (`schedule_tx._late_not_missed` asks). Unknown, a tick is
        missed past `NONE_GRACE`."""
        window = self.catchup_window if self.catchup_window is not None else math.inf
        keep = MAX_CATCHUP_TICKS if self.catchup == "all" else 1
        ticks = self._ticks_within(next_fire, now - window, now, keep)
        if not ticks:
            return []
        if self.catchup == "all":
            return ticks
        latest = ticks[-1]
        if self.catchup == "none" and (latest < up_since if up_since is not None else now - latest > NONE_GRACE):
            return []
        return [latest]

    def _ticks_within(self, first: float, lo: float, hi: float, keep: int) -> list[float]:
        """The last `keep` of the ticks from `first` on (`first` itself, then each `next_after` the
        one before) that fall between `lo` and `hi`. An interval's are reached directly, a cron
        expression's by one iterator (a tick a minute at most), never by `next_after` tick by tick
        from `first`: after a long downtime a frequent schedule has millions of ticks to pass over,
        and that walk held the firing transaction (SQLite's one writer) for seconds, or hours."""
        out: deque[float] = deque(maxlen=keep)
        if lo <= first <= hi:
            out.append(first)
        if self.every is not None:
            every = self.every
            start = math.floor(first / every) + 1  # the ticks after `first` are start * every on
            if lo > start * every:  # the window begins later
                start = math.ceil(lo / every)
                while (start - 1) * every >= lo:
                    start -= 1
                while start * every < lo:
                    start += 1
            end = math.floor(hi / every)
            while (end + 1) * every <= hi:
                end += 1
            while end * every > hi:
                end -= 1
            out.extend(k * every for k in range(max(start, end - keep + 1), end + 1))
            return list(out)
        assert self.cron is not None
        zone = ZoneInfo(self.tz)
        moment = datetime.fromtimestamp(max(first, lo - 60.0), zone)  # a cron's ticks are whole minutes
        for tick in CronSim(self.cron, moment):
            t = tick.timestamp()
            if t > hi:
                break
            if t > first and t >= lo:
                out.append(t)
        return list(out)

    def run_id(self, tick: float) -> str:
        """The run id of a tick: the same for every worker that fires it, so it starts once."""
        return f"{self.id}@{datetime.fromtimestamp(tick, UTC).isoformat()}"

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def _check_duration(schedule: str, name: str, value: object) -> None:
    """`every=` and `catchup_window=`: None, or seconds or a timedelta, positive and finite. NaN and
    infinity passed a `<= 0` check: NaN stopped the worker at its first tick arithmetic, infinity
    stored a due time JSON cannot carry, and PostgreSQL and SQLite kept a NaN window differently."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise TypeError(f"schedule {schedule!r}: {name}= is seconds or a timedelta; got {value!r}")
    if not 0 < _seconds(value) < math.inf:
        raise ValueError(f"schedule {schedule!r}: {name}= must be a positive, finite duration; got {value!r}")


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
