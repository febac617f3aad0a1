"""Schedules' tick arithmetic (cronsim on time-zone aware datetimes) and their checks at declaration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import cairn
from cairn.schedules import ScheduleSpec
from tests import flows


def spec(cron: str | None = None, every: float | None = None, tz: str = "UTC", **kw: object) -> ScheduleSpec:
    fields = {"catchup": "latest", "catchup_window": None, **kw}
    return ScheduleSpec(
        "s", "wf", "default", cron, every, tz, "{}", "skip", str(fields["catchup"]), fields["catchup_window"]
    )  # type: ignore[arg-type]


def at(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp()


def test_cron_ticks_follow_the_wall_clock_across_daylight_saving() -> None:
    paris = spec("30 2 * * *", tz="Europe/Paris")
    # 2026-03-29: clocks go from 02:00 to 03:00 in Paris; 02:30 does not exist that day.
    first = paris.next_after(at("2026-03-28T12:00:00", "Europe/Paris"))
    assert datetime.fromtimestamp(first, ZoneInfo("Europe/Paris")).isoformat() == "2026-03-29T03:00:00+02:00"
    second = paris.next_after(first)
    assert datetime.fromtimestamp(second, ZoneInfo("Europe/Paris")).isoformat() == "2026-03-30T02:30:00+02:00"
    assert second - first == 23.5 * 3600


def test_interval_ticks_and_run_ids() -> None:
    every = spec(every=30)
    assert every.next_after(100) == 120 and every.next_after(120) == 150
    assert every.run_id(120) == "s@1970-01-01T00:02:00+00:00"


def test_catchup_after_downtime() -> None:
    assert spec(every=10, catchup="latest").due_ticks(10, 55) == [50]
    assert spec(every=10, catchup="all").due_ticks(10, 55) == [10, 20, 30, 40, 50]
    assert spec(every=10, catchup="all", catchup_window=25.0).due_ticks(10, 55) == [30, 40, 50]
    assert spec(every=10, catchup="none").due_ticks(10, 55) == []  # missed: nothing runs
    assert spec(every=10, catchup="none").due_ticks(50, 51) == [50]  # due just now: it runs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "bad cron expression '61 \\* \\* \\* \\*'"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"cron": "* * * * *", "every": timedelta(seconds=5)}, "exactly one of cron=... or every=..."),
        ({}, "exactly one of cron=... or every=..."),
        ({"every": timedelta(0)}, "every= must be a positive, finite duration"),
        # NaN and infinity passed a `<= 0` check: NaN stopped the worker at its first tick, infinity
        # broke GET /api/schedules, and a NaN window fired on SQLite and never on PostgreSQL.
        ({"every": float("nan")}, "every= must be a positive, finite duration"),
        ({"every": float("inf")}, "every= must be a positive, finite duration"),
        ({"every": 60, "catchup_window": float("nan")}, "catchup_window= must be a positive, finite"),
        ({"every": "5"}, "every= is seconds or a timedelta; got '5'"),
        ({"cron": 5}, "cron= is an expression as text"),
        ({"cron": "* * * * *", "tz": None}, "tz= is an IANA time zone name"),
        ({"cron": "* * * * *", "overlap": "sometimes"}, "overlap must be one of skip, allow"),
        ({"cron": "* * * * *", "catchup": "maybe"}, "catchup must be one of none, latest, all"),
        ({"cron": "* * * * *", "args": (1, 2)}, "too many positional arguments|takes"),
    ],
)
def test_a_bad_schedule_is_an_error_at_declaration(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        cairn.Schedule("bad", flows.tick, register=False, **{"args": ("x",), **kwargs})  # type: ignore[arg-type]


def test_a_schedule_checks_its_arguments_against_the_workflow() -> None:
    made = cairn.Schedule("ok", flows.tick, every=timedelta(minutes=5), args=("hello",), register=False)
    assert made.spec().input == '{"label":"hello"}' and made.spec().workflow == "tests.flows.tick"
    assert datetime.now(UTC)  # the module imports cleanly beside zoneinfo
