"""Formatting for the `cairn` command line: rich tables, times, durations and JSON views.

Nothing here touches the database; every function turns rows the client returned into text.
Cells are built as `Text` so names and values are never read as rich markup.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from cairn import redaction
from cairn.client.handle import RunEvent, StepInfo
from cairn.records import RunRow
from cairn.redaction import MASK, is_secret_key, redact
from cairn.serialization import error_summary, loads
from cairn.store.protocol import WorkerInfo
from cairn.types import RunStatus, StepStatus

ARGS_WIDTH = 60
VALUE_WIDTH = 60
STALE_AFTER = 30.0
"""Seconds without a heartbeat after which a worker is shown as stale."""

_RUN_STYLES = {
    RunStatus.PENDING: "cyan",
    RunStatus.RUNNING: "blue",
    RunStatus.WAITING: "magenta",
    RunStatus.PAUSED: "yellow",
    RunStatus.COMPLETED: "green",
    RunStatus.FAILED: "bold red",
    RunStatus.CANCELLED: "dim",
}
_STEP_STYLES = {
    StepStatus.SCHEDULED: "cyan",
    StepStatus.RUNNING: "blue",
    StepStatus.COMPLETED: "green",
    StepStatus.FAILED: "bold red",
    StepStatus.CANCELLED: "dim",
}


# --- consoles ---------------------------------------------------------------------------------


def console(stderr: bool = False) -> Console:
    """A console on the current stdout/stderr; wide when piped so ids are not folded."""
    out = Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 200
    return out


# --- scalars ----------------------------------------------------------------------------------


def fmt_time(ts: float | None, offset: bool = False) -> str:
    """Epoch seconds as local ISO time without microseconds (with the UTC offset if asked)."""
    if ts is None:
        return "-"
    try:
        moment = datetime.fromtimestamp(ts).astimezone().replace(microsecond=0)
    except (OverflowError, OSError, ValueError):  # a timer of `asyncio.sleep(1e300)`: past year 9999
        return f"epoch {ts:.6g}s (beyond the calendar)"
    return moment.isoformat() if offset else moment.replace(tzinfo=None).isoformat()


YEAR = 365.25 * 86400


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1000 * YEAR:
        return f"{seconds / YEAR:.3g}y"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f}"


def truncate(text: str, width: int) -> str:
    text = " ".join(text.split())  # one line in a table cell
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"


# Tables show a run's data to a person: secret-looking fields masked, as the dashboard shows them
# (`cairn.redaction`); `--json` gives the data as stored, as the JSON API does.


def compact_json(value: Any) -> str:
    return printable_json(redact(value), separators=(",", ":"))


def pretty_json(value: Any) -> str:
    return printable_json(redact(value), indent=2)


def printable_json(value: Any, **options: Any) -> str:
    """JSON as a person reads it (non-ASCII as itself, not escaped), which a terminal can print: a
    lone surrogate (a payload may hold one: the engine and the HTTP API carry it) is written as its
    JSON escape, where printing it failed the command after the run had been made."""
    text = json.dumps(value, ensure_ascii=False, default=str, **options)
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return text.encode("utf-8", "backslashreplace").decode()
    return text


def format_args(args: Any) -> str:
    """Arguments stored by name as `x=1, y="a"`; anything else as compact JSON."""
    if args is None:
        return ""
    if isinstance(args, dict):
        return ", ".join(f"{k}={MASK if is_secret_key(str(k)) else compact_json(v)}" for k, v in args.items())
    return compact_json(args)


def format_error(error: Any) -> str:
    """`Type: message` from a recorded error (`{"type", "message", ...}`), else its JSON."""
    summary = error_summary(error)
    return compact_json(error) if summary is None else summary


def error_traceback(error: Any) -> str:
    return str(error.get("traceback") or "") if isinstance(error, dict) else ""


def run_status(status: RunStatus) -> Text:
    return Text(status.value, style=_RUN_STYLES.get(status, ""))


def step_status(status: StepStatus) -> Text:
    return Text(status.value, style=_STEP_STYLES.get(status, ""))


def run_duration(row: RunRow, now: float) -> str:
    """Wall time from start (or creation) to completion; running runs get a trailing `…`."""
    start = row.started_at or row.created_at
    if row.completed_at is not None:
        return fmt_duration(max(0.0, row.completed_at - start))
    if row.started_at is None:
        return "-"
    return fmt_duration(max(0.0, now - start)) + "…"


# --- runs -------------------------------------------------------------------------------------


NARROW = 100
"""Below this many columns, tables drop their low-value columns (and show short names) rather
than fold names mid-word."""


def short_name(name: str) -> str:
    """`billing.flows.Checkout` → `Checkout`: what a narrow table shows of a dotted id."""
    return name.rsplit(".", 1)[-1] or name


def runs_table(rows: list[RunRow], now: float, blocked: dict[str, str] | None = None, width: int = 200) -> Table:
    """Runs, one a line; a run that cannot progress (`blocked`: no live worker can do its work)
    has its status marked with "!" and the reason in a note under the table. Narrower than
    `NARROW`, the creation time and activations are dropped and workflows shown by short name."""
    narrow = width < NARROW
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    # Too narrow for whole lines, an id folds onto a second line rather than lose its end (it is
    # what `cairn show` is given), and a status keeps its width.
    table.add_column("id", style="bold", overflow="fold")
    table.add_column("workflow", no_wrap=True, overflow="ellipsis")
    blocked = blocked or {}
    widest = max((len(run_status_text(r)) + (2 if r.id in blocked else 0) for r in rows), default=0)
    table.add_column("status", no_wrap=True, min_width=widest)
    if not narrow:
        table.add_column("created", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    if not narrow:
        table.add_column("activations", justify="right")
    for row in rows:
        status = Text(run_status_text(row), style=_RUN_STYLES.get(row.status, ""))
        if row.id in blocked:
            status.append(" !", style="bold yellow")
        cells = [Text(row.id), Text(short_name(row.workflow) if narrow else row.workflow), status]
        if not narrow:
            cells.append(Text(fmt_time(row.created_at)))
        cells.append(Text(run_duration(row, now)))
        if not narrow:
            cells.append(Text(str(row.activations)))
        table.add_row(*cells)
    return table


def counts_line(counts: dict[str, int]) -> Text:
    """`52 runs: 40 completed, 10 pending, 2 failed` (the statuses that have runs)."""
    total = sum(counts.values())
    parts = [f"{n} {status}" for status, n in counts.items() if n]
    return Text(f"{total} run{'' if total == 1 else 's'}" + (f": {', '.join(parts)}" if parts else ""))


def run_status_text(row: RunRow) -> str:
    """The status a table shows: a run paused on an error says so (`paused (error)`)."""
    if row.status == RunStatus.PAUSED and row.pause_reason not in (None, "user"):
        return f"{row.status.value} ({row.pause_reason})"
    return row.status.value


def blocked_note(blocked: dict[str, str], shown: int = 5) -> Text:
    """Why the runs marked "!" cannot progress (the first few)."""
    note = Text()
    for run_id, reason in list(blocked.items())[:shown]:
        note.append("! ", style="bold yellow")
        note.append(f"{run_id}: {reason}\n")
    if len(blocked) > shown:
        note.append(f"! ... and {len(blocked) - shown} more (cairn show RUN says why)\n")
    return note


def run_header(row: RunRow, now: float, traceback: bool = False, blocked: str | None = None) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row("run", Text(row.id))
    grid.add_row("workflow", Text(row.workflow))
    grid.add_row("status", run_status(row.status))
    if blocked is not None:
        grid.add_row("blocked", Text(blocked, style="bold yellow"))
    if row.pause_reason is not None and row.status == RunStatus.PAUSED:
        grid.add_row("paused", Text(row.pause_reason))
    grid.add_row("queue", Text(row.queue))
    if row.parent_id is not None:
        grid.add_row("parent", Text(f"{row.parent_id} (step {row.parent_seq})"))
    grid.add_row("created", Text(fmt_time(row.created_at, offset=True)))
    grid.add_row("started", Text(fmt_time(row.started_at, offset=True)))
    grid.add_row("completed", Text(fmt_time(row.completed_at, offset=True)))
    grid.add_row("duration", Text(run_duration(row, now)))
    grid.add_row("activations", Text(str(row.activations)))
    grid.add_row("input", Text(format_args(loads(row.input))))
    properties = loads(row.properties)
    if properties:
        grid.add_row("properties", Text(format_args(properties)))
    if row.status == RunStatus.COMPLETED:
        grid.add_row("result", Text(pretty_json(loads(row.result))))
    error = loads(row.error)
    if error is not None:
        grid.add_row("error", Text(format_error(error), style="red"))
        if traceback and error_traceback(error):
            grid.add_row("traceback", Text(error_traceback(error).rstrip(), style="dim"))
    return grid


def steps_table(
    steps: list[StepInfo], width: int = 200, labels: dict[str, str] | None = None, now: float | None = None
) -> Table:
    """The journal, a step a line. `labels` gives actions' human names (`@action(name=...)`,
    as workers registered them); narrower than `NARROW`, arguments and attempts are dropped.
    A timer not yet fired says when it falls due."""
    narrow = width < NARROW
    labels = labels or {}
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("name", no_wrap=True, overflow="ellipsis")
    if not narrow:
        table.add_column("arguments", overflow="fold")
    table.add_column("status", no_wrap=True)
    if not narrow:
        table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("result / error", no_wrap=narrow, overflow="ellipsis" if narrow else "fold")
    for step in steps:
        name = short_name(step.name) if narrow and step.kind.value == "action" else step.name
        label = labels.get(step.name)
        cells: list[Text] = [Text(str(step.seq)), Text(step.kind.value), Text(label or name)]
        if not narrow:
            args = redaction.step_args(step.kind.value, step.name, step.args)
            cells.append(Text(truncate(format_args(args), ARGS_WIDTH), style="dim"))
        cells.append(step_status(step.status))
        if not narrow:
            cells.append(Text(str(step.attempt)))
        cells += [Text(fmt_ms(step.duration)), _outcome(step, now)]
        table.add_row(*cells)
    return table


TIMELINE_KINDS = {"action": "█", "timer": "░", "signal": "▒", "child": "▓"}


def timeline(steps: list[StepInfo], until: float, width: int = 200) -> RenderableType | None:
    """The steps drawn to scale in time, a bar each from when it was scheduled to when it ended (or
    `until` while it runs): parallel steps show as overlapping bars. None when there are no steps."""
    timed = [s for s in steps if s.kind.value in TIMELINE_KINDS]
    if not timed:
        return None
    start = min(s.created_at for s in timed)
    end = max([until if s.completed_at is None else s.completed_at for s in timed] + [start])
    span = max(end - start, 1e-6)
    label_width = min(24, max(len(f"{s.seq} {short_name(s.name)}") for s in timed))
    bar_width = max(10, min(60, width - label_width - 12))
    lines = Table.grid(padding=(0, 1))
    lines.add_column(no_wrap=True, overflow="ellipsis", width=label_width)
    lines.add_column(no_wrap=True)
    lines.add_column(justify="right", no_wrap=True)
    for s in timed:
        finished = s.completed_at if s.completed_at is not None else until
        first = int((s.created_at - start) / span * (bar_width - 1))
        last = max(first, int((finished - start) / span * (bar_width - 1)))
        bar = Text(" " * first)
        bar.append(TIMELINE_KINDS[s.kind.value] * (last - first + 1), style=_STEP_STYLES.get(s.status, ""))
        bar.append(" " * (bar_width - last - 1))
        took = fmt_duration(max(0.0, finished - s.created_at)) + ("" if s.completed_at is not None else "…")
        lines.add_row(Text(f"{s.seq} {short_name(s.name)}"), bar, Text(took))
    legend = Text("  ".join(f"{mark} {kind}" for kind, mark in TIMELINE_KINDS.items()), style="dim")
    scale = Text(f"0 … {fmt_duration(span)} from the first step", style="dim")
    return Group(Text("Timeline", style="bold"), lines, legend, scale)


def _outcome(step: StepInfo, now: float | None = None) -> Text:
    if step.due_at is not None and step.kind.value == "timer" and step.status == StepStatus.SCHEDULED:
        when = fmt_time(step.due_at)
        return Text(f"due {when}" + ("" if now is None else f" (in {fmt_duration(max(0.0, step.due_at - now))})"))
    if step.error is not None:
        return Text(truncate(format_error(step.error), VALUE_WIDTH), style="red")
    if step.status == StepStatus.COMPLETED:
        result = redaction.step_result(step.kind.value, step.name, step.result)
        return Text(truncate(compact_json(result), VALUE_WIDTH))
    return Text("")


def step_logs(steps: list[StepInfo]) -> RenderableType | None:
    """Each step's log lines under a `seq name` heading, or None when no step logged anything."""
    parts: list[RenderableType] = []
    for step in steps:
        if not step.logs:
            continue
        parts.append(Text(f"step {step.seq} {step.name}", style="bold"))
        parts.extend(Text(f"  {line}") for line in step.logs)
    return Group(*parts) if parts else None


def properties_table(history: list[dict[str, Any]]) -> RenderableType:
    """The properties after each activation that changed them (`cairn show RUN --properties`)."""
    if not history:
        return Text("no properties recorded", style="dim")
    table = Table(title="Properties", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("after activation", justify="right", no_wrap=True)
    table.add_column("properties", overflow="fold")
    for entry in history:
        table.add_row(Text(str(entry["activation"])), Text(format_args(entry["properties"])))
    return table


def events_table(events: list[RunEvent], since: float) -> RenderableType:
    """Every state change of the run, with its offset from the run's creation."""
    table = Table(title="Events", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("+ms", justify="right", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("step", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for e in events:
        table.add_row(
            Text(f"{(e.at - since) * 1000:.0f}"),
            Text(e.kind),
            Text("" if e.step is None else str(e.step)),
            Text(format_args(e.detail) if e.detail else "", style="dim"),
        )
    return table


def run_json(row: RunRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "workflow": row.workflow,
        "status": row.status.value,
        "pause_reason": row.pause_reason,
        "queue": row.queue,
        "parent_id": row.parent_id,
        "parent_seq": row.parent_seq,
        "created_at": row.created_at,
        "started_at": row.started_at,
        "completed_at": row.completed_at,
        "updated_at": row.updated_at,
        "activations": row.activations,
        "input": loads(row.input),
        "result": loads(row.result),
        "error": loads(row.error),
        "properties": loads(row.properties),
        "code_version": row.code_version,
        "lease_owner": row.lease_owner,
    }


def step_json(step: StepInfo) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "kind": step.kind.value,
        "name": step.name,
        "args": step.args,
        "status": step.status.value,
        "attempt": step.attempt,
        "result": step.result,
        "error": step.error,
        "created_at": step.created_at,
        "started_at": step.started_at,
        "completed_at": step.completed_at,
        "duration_ms": None if step.duration is None else round(step.duration * 1000, 3),
        "due_at": step.due_at,
        "logs": step.logs,
    }


def event_json(e: RunEvent) -> dict[str, Any]:
    """An event as `GET /api/runs/{id}/events` gives it."""
    return {"id": e.id, "at": e.at, "kind": e.kind, "step": e.step, "detail": e.detail}


def memory_table(memory: dict[str, Any]) -> RenderableType:
    """The run's memory (`cairn show RUN --memory`), a key a line."""
    if not memory:
        return Text("no memory written", style="dim")
    table = Table(title="Memory", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("key", no_wrap=True, overflow="fold")
    table.add_column("value", overflow="fold")
    for key, value in memory.items():
        shown = MASK if is_secret_key(key) else truncate(compact_json(value), 4 * VALUE_WIDTH)
        table.add_row(Text(key), Text(shown))
    return table


# --- workers ----------------------------------------------------------------------------------


def workers_table(workers: list[WorkerInfo], now: float, width: int = 200) -> Table:
    """Workers and their heartbeats; narrower than `NARROW`, host, pid and start time are dropped
    (the id holds host and pid)."""
    narrow = width < NARROW
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("id", no_wrap=True, style="bold", overflow="ellipsis")
    if not narrow:
        table.add_column("host", no_wrap=True, overflow="ellipsis")
        table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("queues", overflow="fold")
    table.add_column("in flight", justify="right", no_wrap=True)
    if not narrow:
        table.add_column("started", no_wrap=True)
    table.add_column("heartbeat age (s)", justify="right", no_wrap=True)
    for w in workers:
        age = max(0.0, now - w.heartbeat_at)
        heartbeat = Text(
            f"{age:.1f}" + (" (stale)" if age > STALE_AFTER else ""), style="yellow" if age > STALE_AFTER else ""
        )
        if narrow:
            table.add_row(Text(w.id), Text(w.queues), Text(str(w.in_flight)), heartbeat)
        else:
            table.add_row(
                Text(w.id),
                Text(w.host),
                Text(str(w.pid)),
                Text(w.queues),
                Text(str(w.in_flight)),
                Text(fmt_time(w.started_at)),
                heartbeat,
            )
    return table


def worker_json(w: WorkerInfo, now: float) -> dict[str, Any]:
    return {
        "id": w.id,
        "host": w.host,
        "pid": w.pid,
        "queues": w.queues,
        "in_flight": w.in_flight,
        "started_at": w.started_at,
        "heartbeat_at": w.heartbeat_at,
        "heartbeat_age": round(max(0.0, now - w.heartbeat_at), 3),
        "workflows": list(w.workflows),
        "actions": list(w.actions),
    }


def schedules_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("id", "workflow", "expression", "next", "last run", "paused"):
        table.add_column(name, overflow="fold")
    for row in rows:
        last = "-" if row["last_run_id"] is None else f"{row['last_run_id']} ({row['last_status'] or 'gone'})"
        paused = "paused" if row["paused"] else ""
        table.add_row(
            Text(row["id"]),
            Text(row["workflow"]),
            Text(f"{row['expression']} {row['tz']}"),
            Text(fmt_time(row["next_fire_at"])),
            Text(last),
            Text(" ".join(x for x in (paused, row["note"]) if x), style="yellow"),
        )
    return table


def undeclared_queue(name: str, counts: dict[str, int]) -> dict[str, Any]:
    """A queue runs use that no cairn.Queue declares: no limits, nothing counted but its runs."""
    return {
        "name": name,
        **dict.fromkeys(["concurrency", "per_worker", "per_key", "rate_limit", "rate_next_at", "declared_by"]),
        "priority": False,
        **dict.fromkeys(["runs_waiting", "runs_in_flight", "attempts_waiting", "attempts_in_flight", "rate_starts"], 0),
        "counts": counts,
    }


def queues_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in (
        "queue",
        "limits",
        "runs waiting",
        "in flight",
        "attempts waiting",
        "in flight",
        "rate: next start",
        "runs by status",
    ):
        table.add_column(name, overflow="fold")
    for row in rows:
        limits = [f"{k}={row[k]}" for k in ("concurrency", "per_worker", "per_key", "rate_limit") if row[k] is not None]
        if row["priority"]:
            limits.append("priority")
        if row["declared_by"] is None and not limits:
            limits.append("none (not declared)")
        by_status = ", ".join(f"{status} {n}" for status, n in row["counts"].items() if n) or "-"
        window = (
            "-" if row["rate_next_at"] is None else f"{fmt_time(row['rate_next_at'])} ({row['rate_starts']} started)"
        )
        table.add_row(
            Text(row["name"]),
            Text(", ".join(limits) or "none"),
            Text(str(row["runs_waiting"])),
            Text(str(row["runs_in_flight"])),
            Text(str(row["attempts_waiting"])),
            Text(str(row["attempts_in_flight"])),
            Text(window),
            Text(by_status),
        )
    return table
