"""What the pages show, computed from client data: timeline lanes, property changes, forms, text.

Pure functions (no I/O), so the shapes are easy to test and the templates stay simple. Every value
that reaches a page goes through `redact` first, and templates escape it (autoescape); nothing
here returns markup.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cairn.client.handle import StepInfo
from cairn.serialization import error_summary
from cairn.web.security import MASK, is_secret_key, redact

MAX_LANES = 40
"""Timeline lanes drawn; steps beyond share the last lane (a gather of thousands stays readable)."""
TIMELINE_WIDTH = 1000.0
"""Width of the timeline's SVG user space; the SVG scales to the page."""
LANE_HEIGHT = 18


def pretty(value: Any) -> str:
    """Redacted, indented JSON text (escaped by the template when shown)."""
    return json.dumps(redact(value), indent=2, ensure_ascii=False, sort_keys=False, default=str)


def compact(value: Any, width: int = 80) -> str:
    text = json.dumps(redact(value), separators=(",", ":"), ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "—"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"
    except (OverflowError, OSError, ValueError):  # a timer of `asyncio.sleep(1e300)`: past year 9999
        return f"epoch {ts:.6g} s (beyond the calendar)"


YEAR = 365.25 * 86400


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 1000 * YEAR:
        return f"{seconds / YEAR:.3g} years"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} m {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} m"
    return f"{hours // 24} d {hours % 24} h"


def error_text(error: Any) -> str:
    """`Type: message` of a recorded error."""
    if isinstance(error, dict):
        return error_summary(error) or "Error"
    return "" if error is None else compact(error, 400)


def error_traceback(error: Any) -> str:
    return str(error.get("traceback") or "") if isinstance(error, dict) else ""


def step_args(step: StepInfo) -> Any:
    """A step's arguments as a page may show them: a memory write under a secret-looking key
    carries the secret itself (its key is the step's name), so it is masked as in the memory table."""
    if step.kind.value == "memory" and is_secret_key(step.name):
        return MASK
    return redact(step.args)


def step_result(step: StepInfo) -> Any:
    """A step's result as a page may show it: the payload of a signal with a secret-looking name
    is masked, like a property or memory entry of that name."""
    if step.kind.value == "signal" and is_secret_key(step.name):
        return MASK
    return redact(step.result)


# --- timeline ------------------------------------------------------------------------------------


@dataclass
class Bar:
    seq: int
    name: str
    kind: str
    status: str
    lane: int
    x: float
    width: float
    start: float
    end: float | None
    label: str


@dataclass
class Timeline:
    bars: list[Bar] = field(default_factory=list)
    lanes: int = 0
    total: float = 0.0
    overflow: int = 0
    """Steps drawn in the last lane because there were more parallel lanes than MAX_LANES."""

    @property
    def height(self) -> int:
        return max(1, self.lanes) * LANE_HEIGHT

    @property
    def ticks(self) -> list[tuple[float, str]]:
        """Five labels along the time axis: (x in SVG units, offset text)."""
        return [(TIMELINE_WIDTH * i / 4, fmt_duration(self.total * i / 4)) for i in range(5)]


def timeline(steps: list[StepInfo], t0: float, now: float) -> Timeline:
    """Steps drawn to scale from `t0` (the run's creation): each from when it started (or was
    scheduled) to when it ended (or now), in the first lane free at its start, so steps that ran
    at the same time (a gather) sit side by side. Timers and signal waits are spans too."""
    spans = []
    for s in steps:
        start = s.started_at if s.kind.value == "action" and s.started_at is not None else s.created_at
        end = s.completed_at
        spans.append((max(start, t0), end, s))
    t_end = max([t0, *(e if e is not None else now for _, e, _ in spans)])
    total = max(t_end - t0, 1e-3)
    lane_ends: list[float] = []
    out = Timeline(total=total)
    for start, end, s in sorted(spans, key=lambda x: (x[0], x[2].seq)):
        finish = end if end is not None else now
        lane = next((i for i, e in enumerate(lane_ends) if e <= start), None)
        if lane is None:
            if len(lane_ends) < MAX_LANES:
                lane_ends.append(finish)
                lane = len(lane_ends) - 1
            else:
                lane = MAX_LANES - 1
                out.overflow += 1
        lane_ends[lane] = max(lane_ends[lane], finish)
        x = (start - t0) / total * TIMELINE_WIDTH
        width = max((finish - start) / total * TIMELINE_WIDTH, 2.0)
        label = f"#{s.seq} {s.name} ({s.kind.value}, {s.status.value}, {fmt_duration(finish - start)})"
        out.bars.append(Bar(s.seq, s.name, s.kind.value, s.status.value, lane, x, width, start, end, label))
    out.lanes = len(lane_ends)
    return out


# --- properties ----------------------------------------------------------------------------------


@dataclass
class PropertyRow:
    key: str
    value: str
    change: str
    """"added", "changed", "removed" or "" (as it was)."""


def property_changes(history: list[dict[str, Any]]) -> list[tuple[int, list[PropertyRow]]]:
    """Each snapshot with what changed since the one before (Zenaton's properties view)."""
    out = []
    before: dict[str, Any] = {}
    for entry in history:
        props = entry["properties"] if isinstance(entry["properties"], dict) else {"value": entry["properties"]}
        rows = []
        for key in sorted(set(before) | set(props)):
            if key not in props:
                rows.append(PropertyRow(key, "", "removed"))
                continue
            value = "***" if is_secret_key(key) else compact(props[key], 200)
            change = "added" if key not in before else ("changed" if before[key] != props[key] else "")
            rows.append(PropertyRow(key, value, change))
        out.append((int(entry["activation"]), rows))
        before = props
    return out


# --- workflow forms ------------------------------------------------------------------------------


@dataclass
class Field:
    name: str
    kind: str
    """"string", "integer", "number", "boolean" or "json" (anything else, typed as JSON)."""
    required: bool
    default: str
    title: str
    choices: list[str] = field(default_factory=list)
    secret: bool = False
    """Named like a secret: typed into a password input, its default never written into the page."""


def form_fields(schema: dict[str, Any]) -> list[Field]:
    """Inputs for a workflow's parameters from its JSON schema, in signature order."""
    required = set(schema.get("required", []))
    fields = []
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        kind = prop.get("type")
        choices = [str(c) for c in prop.get("enum", [])] if isinstance(prop.get("enum"), list) else []
        if kind not in ("string", "integer", "number", "boolean") or (choices and kind != "string"):
            kind = "json"
        default = prop.get("default")
        text = "" if default is None else (json.dumps(default) if kind == "json" else str(default))
        if kind == "boolean":
            text = "true" if default else ""
        secret = is_secret_key(name)
        if secret:  # left empty, the run gets the workflow's own default
            text, choices = "", []
        fields.append(Field(name, kind, name in required, text, str(prop.get("title") or name), choices, secret))
    return fields


# --- nondeterminism --------------------------------------------------------------------------------

_DIVERGED = re.compile(
    r"at step (\d+): the journal recorded (.*) but the workflow now calls (.*?)\. The workflow", re.S
)


def divergence(error: Any) -> tuple[int, str, str] | None:
    """(step, recorded call, new call) of a run paused on NonDeterminismError: from the error's
    recorded constructor arguments (run id, step, recorded, attempted) where the engine keeps
    them, else from its message."""
    if not isinstance(error, dict) or error.get("type") != "NonDeterminismError":
        return None
    args = error.get("args")
    if isinstance(args, list) and len(args) == 4 and isinstance(args[1], int):
        return args[1], str(args[2]), str(args[3])
    found = _DIVERGED.search(str(error.get("message", "")))
    if found is None:
        return None
    return int(found.group(1)), found.group(2), found.group(3)
