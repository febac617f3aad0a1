"""Firing schedules: the transaction in which a worker starts the runs of the ticks that fell due.

Each due schedule is taken by one worker at a time (SKIP LOCKED). Its tick's run id is the schedule's
id and the tick's time, inserted if absent: a tick fired twice (two workers, a retried transaction)
starts one run. What a tick does while the schedule's last run is still going is its `overlap`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from cairn.records import NewRun
from cairn.schedules import ScheduleSpec
from cairn.store import control
from cairn.store.base import Tx, run_row, start_note
from cairn.store.journal_tx import event, insert_params


def spec_of(row: Sequence[Any]) -> ScheduleSpec:
    """A `due_schedules` row's first ten columns."""
    sid, workflow, queue, cron, every, tz, input_, overlap, catchup, window = row[:10]
    every_ = None if every is None else float(every)
    window_ = None if window is None else float(window)
    return ScheduleSpec(sid, workflow, queue, cron, every_, tz, input_, overlap, catchup, window_)


def fire(tx: Tx, workflows: Sequence[str], declared: Sequence[str], up_since: float | None = None) -> float:
    """Fire the due schedules of `workflows`, by a worker up since `up_since` (see `due_ticks`), and
    say when that was. The clock is read once their rows are locked: a clock read before could be
    older than what another worker committed meanwhile, and its runs would start before a tick that
    worker had held, or before the end of the run it had seen going."""
    due = tx.all("due_schedules", {"workflows": list(workflows), "declared": list(declared)})
    now = tx.now()
    for row in due:
        _fire_one(tx, spec_of(row), float(row[10]), row[11], row[12], now, up_since)
    return now


def _fire_one(
    tx: Tx, spec: ScheduleSpec, next_fire: float, last_id: str | None, buffered: Any, now: float, up_since: float | None
) -> None:
    last = tx.one("get_run", {"id": last_id}) if last_id else None
    going = last is not None and not run_row(last).status.is_terminal
    fired: float | None = None
    if buffered is not None and not going:  # overlap="buffer_one": the held tick starts now
        last_id, fired, buffered, going = _start(tx, spec, float(buffered), now), float(buffered), None, True
    ticks = spec.due_ticks(next_fire, now, up_since) if next_fire <= now else []
    if not ticks and next_fire <= now and spec.catchup == "none" and up_since is not None:
        ticks = _late_not_missed(tx, spec, next_fire, now)
    for tick in ticks:
        if going and spec.overlap == "skip":
            event(tx, last_id or "", "schedule.skipped", now, None, schedule=spec.id, tick=tick)
            continue
        if going and spec.overlap == "buffer_one":
            buffered = tick if buffered is None else buffered  # one waits; later ticks are dropped
            continue
        if going and spec.overlap == "cancel_previous" and last_id is not None:
            control.cancel(tx, last_id)
        last_id, fired, going = _start(tx, spec, tick, now), tick, True
    following = spec.next_after(max(now, next_fire)) if next_fire <= now else next_fire
    params = {"id": spec.id, "next_fire_at": following, "last_fire_at": fired, "last_run_id": last_id}
    tx.execute("schedule_fired", {**params, "buffered_at": buffered, "now": now})


def _late_not_missed(tx: Tx, spec: ScheduleSpec, next_fire: float, now: float) -> list[float]:
    """The latest due tick, which the firing worker's own start made missed under `catchup="none"`,
    when another worker running the schedule's workflow was up as it fell due (registered before
    it, heartbeating since): it is late, not missed. A worker started during a deploy, while the
    old one was in its shutdown grace (heartbeating, no longer firing), must not drop that tick."""
    latest = spec.due_ticks(next_fire, now, -math.inf)
    if not latest:
        return []
    for (serves,) in tx.all("workers_up_at", {"at": latest[-1]}):
        if spec.workflow in json.loads(serves or "{}").get("workflows", ()):
            return latest
    return []


def _start(tx: Tx, spec: ScheduleSpec, tick: float, now: float) -> str:
    """The run of one tick, unless it exists (a second firing of the tick starts nothing)."""
    run = NewRun(spec.run_id(tick), spec.workflow, spec.input, spec.queue)
    if tx.one("insert_run", {**insert_params(run), "now": now, "lease_owner": None, "lease": None}) is not None:
        event(tx, run.id, "scheduled", now, None, schedule=spec.id, tick=tick)
        tx.notify(start_note(run.workflow, run.queue))
    return run.id
