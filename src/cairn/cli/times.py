"""Times the CLI is given (`cairn runs --since/--until`): an ISO 8601 time, a duration back from
now, or epoch seconds. Parsed before anything is opened, so a bad value costs nothing; a duration
is resolved against the database's clock (what runs' creation times are stamped by) when used."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from cairn.policies import unit_seconds

FORMS = (
    "an ISO 8601 time (2024-05-01, 2024-05-01T12:30, 2024-05-01T12:30:00Z, 2024-05-01T12:30+02:00; "
    "without an offset it is local time), a duration back from now (90s, 15m, 2h, 3d, 1w, 1h30m) "
    "or epoch seconds (@1714566600)"
)
"""What a time option accepts, as its errors and help say."""

LONGEST = 1e10
"""Seconds (about 317 years) a duration or epoch may reach: beyond, it is surely a typo."""


@dataclass(frozen=True)
class When:
    """A time as given: absolute (`at`, epoch seconds) or `ago` seconds before now."""

    text: str
    at: float | None = None
    ago: float | None = None

    def resolve(self, now: float) -> float:
        """Epoch seconds, a duration counted back from `now`."""
        return self.at if self.at is not None else now - (self.ago or 0.0)


def parse_when(text: str) -> When:
    """`text` as a time, else ValueError naming the forms accepted."""
    value = text.strip()
    ago = unit_seconds(value)
    if ago is not None:
        if ago > LONGEST:
            raise ValueError(f"{text!r} reaches back more than {LONGEST:.0e} seconds; give a shorter duration")
        return When(text, ago=ago)
    if value.startswith("@"):
        try:
            at = float(value[1:])
        except ValueError:
            at = math.nan
        if not math.isfinite(at) or abs(at) > LONGEST:
            raise ValueError(f"{text!r} is not epoch seconds; give {FORMS}")
        return When(text, at=at)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        hint = (
            " (a bare number is ambiguous: write 90s for a duration, @90 for epoch seconds)" if _number(value) else ""
        )
        raise ValueError(f"{text!r} is not a time{hint}; give {FORMS}") from None
    try:
        at = moment.timestamp()  # naive: local time, as the table shows times
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{text!r} is beyond the times this system can count; give {FORMS}") from None
    return When(text, at=at)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def iso(ts: float) -> str:
    """Epoch seconds as a local ISO 8601 time with its offset, to the microsecond (what `parse_when`
    reads back as the same instant, give or take a microsecond)."""
    return datetime.fromtimestamp(ts).astimezone().isoformat()
