"""Scenario 6: SIGTERM in the middle of actions, sync (plain `def`) and async, shorter and longer
than the worker's grace (`cairn worker --grace SECONDS`), with a second worker waiting to take
over. SPEC 6: a graceful shutdown hands work over at once, and actions run at least once: but
never two executions of one action at once (each records its start and end with its pid), an
action shorter than the grace runs once (the stopping worker finishes it and takes nothing new), and
the stopped worker does not linger once its grace and its work are over. Resume: SIGTERM to the
waiting worker's first start of a handed-over action."""

from __future__ import annotations

import asyncio
import collections
import itertools
import signal
import subprocess
import time
from pathlib import Path

import pytest

import cairn
from tests.chaos import flows
from tests.chaos.harness import Effect, Figures, Workers, pick, read_effects, record, resume_times
from tests.chaos.invariants import check
from tests.conftest import eventually
from tests.helpers import registered

GRACE = pick(2.0, 5.0)
SHORT = pick(0.5, 2.0)  # finishes within the grace
LONG = pick(5.0, 15.0)  # does not
EACH = pick(2, 5)  # runs of each kind x length
pytestmark = [pytest.mark.process, pytest.mark.timeout(pick(120, 300))]


async def test_sigterm_mid_action_never_runs_one_action_twice_at_once(db_url: str, tmp_path: Path) -> None:
    began = time.monotonic()
    workers = Workers(db_url, tmp_path, lease=2, poll=0.2, concurrency=4 * EACH)
    figures = Figures("sigterm", "postgres" if db_url.startswith("postgres") else "sqlite")
    client = cairn.Client(db_url)
    try:
        stopping = workers.start(extra=["--grace", str(GRACE)])
        await eventually(lambda: _up_or_dead(client, stopping), timeout=30, what="worker registered (or exited)")
        assert stopping.poll() is None, f"the worker did not start: {workers.log_of(stopping)}"
        kinds = [(kind, secs) for kind in ("sync", "async") for secs in (SHORT, LONG)]
        handles = {
            await client.start(flows.one_action, kind, secs, id=f"{kind}-{secs}-{i}"): (kind, secs)
            for kind, secs in kinds
            for i in range(EACH)
        }
        await eventually(lambda: _started(workers.effects, len(handles)), timeout=30, what="every action under way")
        waiting = workers.start(extra=["--grace", str(GRACE)])
        await eventually(lambda: _workers_seen(client, 2), timeout=30, what="the second worker waiting")
        stopping.send_signal(signal.SIGTERM)
        term_at = time.time()
        await asyncio.to_thread(stopping.wait, GRACE + 30)
        exited_at = time.time()
        assert waiting.poll() is None
        problems = await check(
            client,
            {h.id: secs for h, (_, secs) in handles.items()},
            workers.effects,
            figures,
            bound=len(handles),  # one stopped worker x its concurrency
            deadline=time.monotonic() + 60,
        )
        effects = read_effects(workers.effects)
        overlaps = _overlaps(effects, stopping.pid, exited_at)
        figures.notes["overlaps"] = len(overlaps)
        problems += [f"two executions at once: {o}" for o in overlaps]
        starts = collections.Counter(e.run_id for e in effects if e.kind == "S")
        twice = [h.id for h, (_, secs) in handles.items() if secs == SHORT and starts[h.id] != 1]
        figures.notes["short_rerun"] = len(twice)
        problems += [f"{rid}: shorter than the grace, yet started {starts[rid]} times" for rid in twice]
        # A plain-def action's thread cannot be stopped: the worker may wait for it, but not linger
        # once its grace is over and its own executions have ended.
        own_end = max((e.at for e in effects if e.pid == stopping.pid and e.kind in ("E", "C")), default=term_at)
        lingered = exited_at - max(term_at + GRACE, own_end)
        figures.notes["exit_after_term"] = round(exited_at - term_at, 2)
        figures.notes["lingered"] = round(max(lingered, 0.0), 2)
        if lingered > 5:
            problems.append(f"the stopped worker exited {lingered:.1f}s after its grace and its work were over")
        figures.kills = 1
        figures.resumed(resume_times([term_at], [e for e in effects if e.pid == waiting.pid]))
        record(figures, began)
        assert not problems, "\n".join(problems[:20]) + "\n" + workers.logs()
    finally:
        workers.close()
        await client.close()


def _overlaps(effects: list[Effect], stopped_pid: int, exited_at: float) -> list[str]:
    """Executions of one action (run, step) whose [start, end] intervals intersect. An execution
    with no end line ended at the latest when its process exited."""
    spans: dict[tuple[str, int], list[tuple[float, float, int, int]]] = collections.defaultdict(list)
    ends = {(e.run_id, e.step, e.attempt, e.pid): e.at for e in effects if e.kind in ("E", "C")}
    for e in effects:
        if e.kind == "S":
            end = ends.get((e.run_id, e.step, e.attempt, e.pid), exited_at if e.pid == stopped_pid else float("inf"))
            spans[(e.run_id, e.step)].append((e.at, end, e.attempt, e.pid))
    found = []
    for (rid, step), runs in spans.items():
        runs.sort()
        for (s1, e1, a1, p1), (s2, _, a2, p2) in itertools.pairwise(runs):
            if s2 < e1:
                found.append(
                    f"{rid} step {step}: attempt {a1} (pid {p1}) ran until +{e1 - s1:.2f}s, "
                    f"attempt {a2} (pid {p2}) from +{s2 - s1:.2f}s"
                )
    return found


async def _up_or_dead(client: cairn.Client, proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None or await registered(client, ".one_action")


async def _started(path: Path, n: int) -> bool:
    return sum(1 for e in read_effects(path) if e.kind == "S") >= n


async def _workers_seen(client: cairn.Client, n: int) -> bool:
    return len(await client.list_workers(seen_within=10)) >= n
