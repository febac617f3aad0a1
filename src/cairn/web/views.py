"""What the pages show, computed from client data: timeline lanes, property changes, forms, text.

Pure functions (no I/O), so the shapes are easy to test and the templates stay simple. Every value
that reaches a page goes through `redact` first, and templates escape it (autoescape); nothing
here returns markup.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cairn import redaction
from cairn.client.handle import StepInfo
from cairn.redaction import MASK, is_secret_key, redact
from cairn.serialization import error_summary

MAX_LANES = 40
"""Timeline lanes drawn; steps beyond share the last lane (a gather of thousands stays readable)."""
TIMELINE_WIDTH = 1000.0
"""Width of the timeline's SVG user space; the SVG scales to the page."""
LANE_HEIGHT = 18
MIN_BAR = 2.0
"""Narrowest bar drawn, in SVG units. Steps narrower than this that follow each other in a lane are
drawn as one bar saying how many, up to MAX_JOINED wide (a loop of 5,000 quick steps: about a
hundred bars, not 5,000)."""
MAX_JOINED = 10.0
STATUS_SHOWN = ("failed", "running", "scheduled", "cancelled", "completed")
"""The status a bar of several steps takes: the first of these that one of them has (any other
status comes after them)."""

SHOWN_MAX = 64 * 1024
"""Characters of a run's input or result a run page shows, as indented JSON: a longer value is cut
there, with a note of how much of it is shown and a link to the whole of it (redacted) as JSON."""
STEP_SHOWN_MAX = 16 * 1024
"""The same for each step's arguments, result, traceback and logs (a page lists up to 200 steps)."""
STEPS_SHOWN_BUDGET = 160 * 1024
"""Characters of step arguments, results, tracebacks and logs one run page shows in all: once spent,
the steps after show SHOWN_MIN characters of each (with its size and link), so a page of 200 steps
with large values stays about as light as one with a single large step."""
SHOWN_MIN = 200
"""Characters any value may show, budget spent or not: a small result is shown, not linked to."""
ERROR_SHOWN_MAX = 2000
"""Characters of an error's `Type: message` a page shows (a message may quote a whole payload)."""


def pretty(value: Any) -> str:
    """Redacted, indented JSON text (escaped by the template when shown); whole, however long:
    for small values (a workflow's input schema). Run data goes through `preview`."""
    return json.dumps(redact(value), indent=2, ensure_ascii=False, sort_keys=False, default=str)


def compact(value: Any, width: int = 80) -> str:
    """Redacted one-line JSON, cut to `width` characters (ending in `…` when cut). Only what is
    shown is encoded: a cell of a 1 MB value costs what a cell of a small one does."""
    return cell(value, width)[0]


def cell(value: Any, width: int) -> tuple[str, bool]:
    """(`compact(value, width)`, whether it was cut)."""
    text, _, more = _take(value, width, indent=False)
    return (text[: width - 1] + "…", True) if more else (text, False)


def _pieces(value: Any, indent: bool, depth: int = 0) -> Iterator[tuple[str, bool]]:
    """The JSON of `value`, redacted as `redact` does, piece by piece, lazily: `(text, layout)`,
    layout being the whitespace of indentation. Joined, the pieces are `json.dumps(redact(value),
    ensure_ascii=False, default=str)` with `indent=2` (or compact separators): the same text,
    but a caller wanting its first 64 KB encodes (and redacts) no more than those."""
    if isinstance(value, dict | list | tuple) and not value:
        yield ("{}" if isinstance(value, dict) else "[]"), False
        return
    if isinstance(value, dict):
        yield "{", False
        inner = "\n" + "  " * (depth + 1)
        for i, (key, item) in enumerate(value.items()):
            if i:
                yield ",", False
            if indent:
                yield inner, True
            name = key if isinstance(key, str) else _scalar(key).strip('"')
            yield _scalar(name) + ":", False
            if indent:
                yield " ", True
            if isinstance(key, str) and is_secret_key(key):
                yield _scalar(MASK), False
            else:
                yield from _pieces(item, indent, depth + 1)
        if indent:
            yield "\n" + "  " * depth, True
        yield "}", False
    elif isinstance(value, list | tuple):
        yield "[", False
        inner = "\n" + "  " * (depth + 1)
        for i, item in enumerate(value):
            if i:
                yield ",", False
            if indent:
                yield inner, True
            yield from _pieces(item, indent, depth + 1)
        if indent:
            yield "\n" + "  " * depth, True
        yield "]", False
    else:
        yield _scalar(value), False


def _scalar(value: Any) -> str:
    """`json.dumps(value, ensure_ascii=False, default=str)`, without building an encoder for the
    common cases (a large value has tens of thousands of scalars)."""
    kind = type(value)
    if kind is str:
        return _encode_str(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is bool:
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False, default=str)


_encode_str: Callable[[str], str] = json.encoder.encode_basestring
"""The C function `json.dumps(..., ensure_ascii=False)` quotes a string with."""


def _size(text: str) -> int:
    """Bytes of `text` as UTF-8 (a lone surrogate, which JSON may carry, counted as one)."""
    return len(text.encode("utf-8", "replace"))


def _take(value: Any, limit: int, indent: bool) -> tuple[str, int, bool]:
    """(the first `limit` characters of the redacted JSON of `value`, the bytes of JSON they show
    (indentation not counted), whether there is more)."""
    out: list[str] = []
    room, layout_chars, more = limit, 0, False
    for text, layout in _pieces(value, indent):
        if len(text) > room:
            if not layout:
                out.append(text[:room])
            more = True
            break
        out.append(text)
        room -= len(text)
        if layout:
            layout_chars += len(text)
    shown = "".join(out)
    return shown, _size(shown) - layout_chars, more


@dataclass(frozen=True)
class Shown:
    """A value as a page shows it: its indented, redacted JSON, cut at a limit when longer."""

    text: str
    shown: int
    """Bytes of the value's JSON shown (without the indentation)."""
    size: int
    """Bytes of the whole value as (compact) JSON."""
    truncated: bool
    href: str = ""
    """Where the whole value is, as JSON (set by the page for values it cut)."""
    squeezed: bool = False
    """Cut shorter than its own limit: the page's budget for such values was spent."""


def preview(value: Any, limit: int = SHOWN_MAX) -> Shown:
    """`value` as indented JSON, redacted, at most `limit` characters of it (0: none, its size only).
    Only what is shown is encoded; the size of a value that was cut is measured with the C encoder."""
    text, shown, more = _take(value, limit, indent=True)
    if not more:
        return Shown(text, shown, shown, False)
    whole = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return Shown(text, shown, _size(whole), True)


@dataclass(frozen=True)
class Clipped:
    """Text as a page shows it: at most a limit of characters, and how many more there were."""

    text: str
    more: int
    squeezed: bool = False
    """Cut shorter than its own limit: the page's budget for such text was spent."""


def clip(text: str, limit: int) -> Clipped:
    return Clipped(text, 0) if len(text) <= limit else Clipped(text[:limit], len(text) - limit)


class Room:
    """What is left of a page's budget of characters for values (see STEPS_SHOWN_BUDGET)."""

    def __init__(self, total: int) -> None:
        self.left = total

    def _limit(self, limit: int) -> int:
        return min(limit, max(self.left, SHOWN_MIN))

    def preview(self, value: Any, limit: int) -> Shown:
        allowed = self._limit(limit)
        shown = preview(value, allowed)
        self.left -= len(shown.text)
        return replace(shown, squeezed=shown.truncated and allowed < limit)

    def clip(self, text: str, limit: int) -> Clipped:
        allowed = self._limit(limit)
        clipped = clip(text, allowed)
        self.left -= len(clipped.text)
        return replace(clipped, squeezed=bool(clipped.more) and allowed < limit)


def kb(size: int) -> str:
    """Bytes as whole KB (`1,187 KB`), or one decimal under 10 KB."""
    if size < 10 * 1024:
        return f"{size / 1024:.1f} KB".replace(".0 KB", " KB")
    return f"{size / 1024:,.0f} KB"


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
    """`Type: message` of a recorded error, cut at ERROR_SHOWN_MAX characters."""
    if isinstance(error, dict):
        text = error_summary(error) or "Error"
        return text if len(text) <= ERROR_SHOWN_MAX else text[: ERROR_SHOWN_MAX - 1] + "…"
    return "" if error is None else compact(error, 400)


def error_traceback(error: Any) -> str:
    return str(error.get("traceback") or "") if isinstance(error, dict) else ""


def step_args(step: StepInfo) -> Any:
    """A step's arguments as a page may show them (`redaction.step_args`)."""
    return redaction.step_args(step.kind.value, step.name, step.args)


def step_result(step: StepInfo) -> Any:
    """A step's result as a page may show it (`redaction.step_result`)."""
    return redaction.step_result(step.kind.value, step.name, step.result)


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
    count: int = 1
    """Steps drawn as this bar: more than one when they were too short to draw apart (MIN_BAR);
    `seq` is then the one it links to (the first of those with the status it shows)."""
    first_seq: int = 0
    last_seq: int = 0


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


def timeline(steps: list[StepInfo], since: float | None, now: float) -> Timeline:
    """Steps drawn to scale: each from when it started (or was scheduled) to when it ended (or now),
    in the first lane free at its start, so steps that ran at the same time (a gather) sit side by
    side. Timers and signal waits are spans too. The axis starts at `since` (the run's creation) or
    at the earliest step, whichever is first: a fork's copied steps keep the times they ran, before
    the fork was created, and are drawn then (clamped to the fork's creation, they piled up at 0
    with their ends before their starts: negative durations)."""
    spans = []
    for s in steps:
        start = s.started_at if s.kind.value == "action" and s.started_at is not None else s.created_at
        # Never before it began: an end or `now` read by another process's clock can be a little early.
        finish = max(start, s.completed_at if s.completed_at is not None else now)
        spans.append((start, finish, s))
    t0 = min([start for start, _, _ in spans] + ([] if since is None else [since]), default=now)
    t_end = max([t0, *(finish for _, finish, _ in spans)])
    total = max(t_end - t0, 1e-3)
    lane_ends: list[float] = []
    tiny_in: dict[int, Bar | None] = {}
    """Per lane, its last bar while it is of steps too short to draw apart (the next may join it)."""
    out = Timeline(total=total)
    for start, finish, s in sorted(spans, key=lambda x: (x[0], x[2].seq)):
        end = finish if s.completed_at is not None else None
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
        natural = (finish - start) / total * TIMELINE_WIDTH
        tiny = tiny_in.get(lane)
        if natural < MIN_BAR and tiny is not None and x <= tiny.x + tiny.width and tiny.width < MAX_JOINED:
            _join(tiny, s, x, end)
            continue
        label = f"#{s.seq} {s.name} ({s.kind.value}, {s.status.value}, {fmt_duration(finish - start)})"
        bar = Bar(s.seq, s.name, s.kind.value, s.status.value, lane, x, max(natural, MIN_BAR), start, end, label)
        bar.first_seq = bar.last_seq = s.seq
        out.bars.append(bar)
        tiny_in[lane] = bar if natural < MIN_BAR else None
    for bar in out.bars:
        if bar.count > 1:
            span = fmt_duration(max(bar.start, bar.end if bar.end is not None else now) - bar.start)
            of = f" of {bar.name}" if bar.name else ""
            bar.label = f"#{bar.first_seq}-#{bar.last_seq}: {bar.count} steps{of} ({bar.status}, {span} in all)"
    out.lanes = len(lane_ends)
    return out


def _notability(status: str) -> int:
    return STATUS_SHOWN.index(status) if status in STATUS_SHOWN else len(STATUS_SHOWN)


def _join(bar: Bar, step: StepInfo, x: float, end: float | None) -> None:
    """Draw `step`, too short to draw apart, as part of `bar`, the short steps before it in its lane
    (`timeline` labels the bar once all have joined)."""
    bar.count += 1
    bar.last_seq = step.seq
    bar.width = max(bar.x + bar.width, x + MIN_BAR) - bar.x
    bar.end = None if end is None or bar.end is None else max(bar.end, end)
    if bar.kind != step.kind.value:
        bar.kind = "many"
    if bar.name != step.name:
        bar.name = ""  # several names
    if _notability(step.status.value) < _notability(bar.status):
        bar.status = step.status.value
        bar.seq = step.seq  # the bar leads to the step whose status it shows


# --- properties ----------------------------------------------------------------------------------


@dataclass
class PropertyRow:
    key: str
    value: str
    change: str
    """"added", "changed", "removed" or "" (as it was)."""
    cut: bool = False
    """The value is longer than the cell shows (the page links to the whole snapshot)."""


def property_changes(history: list[dict[str, Any]], width: int = 200) -> list[tuple[int, list[PropertyRow]]]:
    """Each snapshot with what changed since the one before (Zenaton's properties view); values cut
    to `width` characters."""
    out = []
    before: dict[str, Any] = {}
    for entry in history:
        props = entry["properties"] if isinstance(entry["properties"], dict) else {"value": entry["properties"]}
        rows = []
        for key in sorted(set(before) | set(props)):
            if key not in props:
                rows.append(PropertyRow(key, "", "removed"))
                continue
            value, cut = (MASK, False) if is_secret_key(key) else cell(props[key], width)
            # As JSON, not Python values: 1 == True == 1.0 in Python, and a change from 1 to true was not shown.
            same = key in before and json.dumps(before[key], sort_keys=True) == json.dumps(props[key], sort_keys=True)
            change = "added" if key not in before else ("" if same else "changed")
            rows.append(PropertyRow(key, value, change, cut))
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
    passed: str = "keyword"
    """How the start sends it: "keyword", "positional" (positional-only, or before a *args), "var_positional"
    (a JSON list spread as more positional arguments) or "var_keyword" (a JSON object spread as more by name).
    All went by name, which Python refuses for all but the first: such workflows could not start from the form."""


def form_fields(schema: dict[str, Any]) -> list[Field]:
    """Inputs for a workflow's parameters from its JSON schema, in signature order."""
    required = set(schema.get("required", []))
    passed = _passed(schema)
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
        title = str(prop.get("title") or name)
        fields.append(Field(name, kind, name in required, text, title, choices, secret, passed.get(name, "keyword")))
    return fields


def _passed(schema: dict[str, Any]) -> dict[str, str]:
    """How each parameter is given in a start's args and kwargs, from the kinds its worker registered
    ("x-cairn-parameters"). Before a *args every parameter goes by position: by name, Python would bind
    the *args' values to it first."""
    params = schema.get("x-cairn-parameters")
    if not isinstance(params, list):
        return {}
    kinds = [(str(p.get("name")), str(p.get("kind"))) for p in params if isinstance(p, dict)]
    has_var_args = any(kind == "var_positional" for _, kind in kinds)
    passed = {}
    for name, kind in kinds:
        if kind in ("var_positional", "var_keyword"):
            passed[name] = kind
        elif kind == "positional_only" or (kind == "positional_or_keyword" and has_var_args):
            passed[name] = "positional"
    return passed


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
