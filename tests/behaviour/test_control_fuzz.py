"""The control plane under a randomized run of thousands, on both backends.

A few hundred runs of tests/fuzz_flows.py (counters of signals, actions that fail transiently or for
good, durable sleeps, children awaited and started without waiting, gathers) go at once while
operators hit random runs with pause, resume, cancel, retry and (many) signals. Every answer is
recorded and checked against the run-state machine (an IllegalTransition is a legitimate answer from
some states). Then everything is brought to rest (runs paused by the fuzz resumed, each counter told
to stop), checked, the fix "deployed", every run paused on an error or failed retried, and checked
again, against what a user relies on:

- every run settles; no step is left open in a finished run;
- a counter that completes received exactly the signals accepted for it, each once;
- a run's status never changes once completed or cancelled (watched during the fuzz, and read twice
  at the end with operations on it in between, which change nothing);
- `result()` agrees with the status; the events agree with it as well, and say every accepted signal;
- the children a completed or cancelled run awaited have ended, and all of a run cancelled by a
  control operation have (a failed run's children go on: its retry takes their results).

The bugs it found each have a small test below that forces their interleaving: a failed parent
that could not be retried once the child it awaited had been retried on its own; a control
operation that lost a PostgreSQL deadlock to a group commit and raised it; a run paused before its
first activation that never said it had started.

The plan of operations comes from a seeded `random.Random` (CAIRN_FUZZ_SEED overrides the seed;
CAIRN_FUZZ_SCALE scales the number of runs and operations; CAIRN_FUZZ_DEBUG=1 prints what is still
busy while everything is brought to rest); the interleaving is whatever the machine makes of it, so
a failure says its seed, and the runs at fault as they are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

import cairn
from cairn import IllegalTransition, RunNotFound, RunStatus, StepKind, StepStatus, WorkflowCancelled
from cairn.records import RunRow
from cairn.store import sql_store
from tests import control_flows as cf
from tests import fuzz_flows as ff
from tests.conftest import _admin, _with_db, eventually
from tests.helpers import status_is, waits_for_a_lock

pytestmark = pytest.mark.timeout(300)

SEED = int(os.environ.get("CAIRN_FUZZ_SEED", "20250611"))
SCALE = float(os.environ.get("CAIRN_FUZZ_SCALE", "1"))
ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)
ABSORBING = (RunStatus.COMPLETED, RunStatus.CANCELLED)
LIFECYCLE = {"started", "paused", "resumed", "retried", "completed", "failed", "cancelled"}
ILLEGAL = re.compile(r"cannot (\w+) run '(.*)': it is (\w+);")

# From which statuses an operation may answer IllegalTransition (cairn.transitions), and what it
# returns when it is legal (a no-op returns the status the run has, which the rule allows).
ILLEGAL_FROM = {
    "pause": {"completed", "failed", "cancelled"},
    "resume": {"completed", "failed", "cancelled"},
    "cancel": {"completed", "failed"},
    "retry": {"completed", "cancelled"},
    "signal": {"completed", "failed", "cancelled"},
}
RETURNS = {"pause": {RunStatus.PAUSED}, "resume": set(ACTIVE), "cancel": {RunStatus.CANCELLED}, "retry": set(ACTIVE)}


async def each(items: Any, work: Any, width: int = 16) -> None:
    """`await work(item)` for every item, `width` at a time."""
    gate = asyncio.Semaphore(width)

    async def one(item: Any) -> None:
        async with gate:
            await work(item)

    await asyncio.gather(*(one(item) for item in items))


@pytest.fixture(autouse=True)
def _broken_until_fixed() -> Iterator[None]:
    ff.FIXED.update(half=False, all=False)
    yield
    ff.FIXED.update(half=False, all=False)


@dataclass
class Tracked:
    """A run the fuzz knows of: what it was started with and what was done to it."""

    id: str
    kind: str
    counter: bool
    started: bool = False
    """The start returned (a top-level run) or the run was seen to exist (a child)."""
    accepted: list[int] = field(default_factory=list)
    """The numbers of the "tick" signals accepted for it, in the order the sends returned."""
    next_n: int = 0
    stop_sent: bool = False
    ops: list[tuple[str, str]] = field(default_factory=list)

    def tick(self) -> int:
        n = self.next_n
        self.next_n += 1
        return n


class Fuzz:
    def __init__(self, client: cairn.Client, seed: int, label: str) -> None:
        self.client = client
        self.seed = seed
        self.label = label
        self.rng = random.Random(seed)
        self.runs: dict[str, Tracked] = {}
        self.starts: dict[str, tuple[Any, tuple[Any, ...]]] = {}
        self.problems: list[str] = []
        self.seen: dict[str, RunStatus] = {}
        self.outcomes: Counter[str] = Counter()
        self.done_ops = 0
        self.relayed: set[str] = set()
        self.midway: Callable[[], Awaitable[None]] | None = None
        """What the test does when the plan says "midway" (the two-worker test: replace a worker)."""
        self.watching = asyncio.Lock()
        """One snapshot at a time: each is read after the last was taken in, so none is older."""

    # --- reporting ----------------------------------------------------------------------------

    def problem(self, run_id: str | None, what: str) -> None:
        self.problems.append(f"{run_id}: {what}" if run_id else what)

    async def verdict(self, phase: str) -> str:
        """What went wrong, with the seed to run it again and the first runs at fault as they are."""
        shown = "\n  ".join(self.problems[:25])
        more = f"\n  ... and {len(self.problems) - 25} more" if len(self.problems) > 25 else ""
        at_fault = list(dict.fromkeys(p.split(": ", 1)[0] for p in self.problems))[:2]
        try:
            details = await self.explain(at_fault)
        except RunNotFound as exc:
            details = str(exc)
        return (
            f"{phase}: {len(self.problems)} invariant violation(s), seed={self.seed} ({self.label}; "
            f"rerun with CAIRN_FUZZ_SEED={self.seed})\n  {shown}{more}\n{details}"
        )

    async def explain(self, run_ids: list[str]) -> str:
        """Each run as it is: its row, journal, last events, children and what was done to it."""
        lines = []
        for run_id in run_ids:
            handle = self.client.get(run_id)
            row = await handle.describe()
            lines.append(
                f"{run_id}: {row.status.value} (pause_reason={row.pause_reason}, lease={row.lease_owner}, "
                f"activations={row.activations}); diagnose: {await handle.diagnose()}"
            )
            lines += [
                f"    step {s.seq} {s.kind.value} {s.name} {s.status.value} attempt={s.attempt}"
                for s in await handle.steps()
            ]
            lines += [f"    event {e.kind} {e.step or ''} {e.detail}" for e in (await handle.events())[-15:]]
            lines += [f"    child {c.id} {c.status.value} seq={c.parent_seq}" for c in await handle.children()]
            tracked = self.runs.get(run_id)
            if tracked is not None:
                lines.append(f"    ops {tracked.ops[-20:]}; accepted {tracked.accepted}")
        return "\n".join(lines)

    # --- the plan ---------------------------------------------------------------------------

    def plan(self, n_runs: int, n_ops: int) -> list[tuple[str, str]]:
        """Starts and operations, in the order operators take them (drawn from the seed alone)."""
        rng = self.rng
        kinds = ["counter"] * 6 + ["raw_counter"] * 3 + ["batch"] * 3 + ["batch_pausing"] * 3 + ["parent"] * 5
        kinds += ["relay"] * 2
        pending = []
        for i in range(n_runs):
            kind = rng.choice(kinds)
            run_id = f"{kind}-{i}"
            self.starts[run_id] = self._start_args(kind, run_id)
            self.runs[run_id] = Tracked(run_id, kind, counter=kind.endswith("counter"))
            if kind == "parent":  # its children: a counter it does not wait for, and a batch it awaits
                self.runs[ff.counter_id(run_id)] = Tracked(ff.counter_id(run_id), "child", counter=True)
                self.runs[ff.batch_id(run_id)] = Tracked(ff.batch_id(run_id), "child", counter=False)
            pending.append(run_id)
        plan: list[tuple[str, str]] = []
        known: list[str] = []
        events = {"fix": int(n_ops * rng.uniform(0.5, 0.85)), "midway": int(n_ops * rng.uniform(0.3, 0.6))}
        share = 1.2 * n_runs / (n_runs + n_ops)  # starts spread over the whole plan
        while pending or len(plan) < n_ops + n_runs:
            if pending and (not known or rng.random() < share):
                run_id = pending.pop()
                plan.append(("start", run_id))
                known.append(run_id)
                if run_id.startswith("parent"):
                    known += [ff.counter_id(run_id), ff.batch_id(run_id)]
                continue
            for event, at in list(events.items()):
                if len(plan) >= at:
                    plan.append((event, ""))
                    del events[event]
            recent = rng.random() < 0.6  # runs just started are mid-flight: most races are there
            target = self.runs[rng.choice(known[-12:] if recent else known)]
            plan.append((self._op(target), target.id))
        return plan

    def _start_args(self, kind: str, run_id: str) -> tuple[Any, tuple[Any, ...]]:
        rng = self.rng
        if kind in ("counter", "raw_counter"):
            return (ff.Counter if kind == "counter" else ff.RawCounter), (run_id, rng.choice([0, 0, 1, 2, 3]))
        if kind in ("batch", "batch_pausing"):
            fails = [rng.choice([0, 0, 1, 2]) for _ in range(rng.randint(1, 3))]
            flow = ff.batch if kind == "batch" else ff.batch_pausing
            return flow, (run_id, fails, rng.random() < 0.3, rng.choice([0.001, 0.003, 0.006]))
        if kind == "relay":
            counters = [tr.id for tr in self.runs.values() if tr.counter]
            targets = rng.sample(counters, min(2, len(counters))) or ["nowhere"]
            return ff.relay, (targets, 1_000_000 + 1000 * int(run_id.split("-")[1]), rng.randint(2, 8))
        patience = rng.choice([0.001, 0.005, 0.02, 5.0])
        return ff.parent, (run_id, rng.choice([0, 1, 2]), rng.random() < 0.3, rng.random() < 0.5, patience)

    def _op(self, target: Tracked) -> str:
        if target.counter:
            weights = {"signal": 60, "boom": 2, "pause": 10, "resume": 12, "cancel": 2, "retry": 8, "status": 6}
        else:
            weights = {"signal": 5, "pause": 28, "resume": 32, "cancel": 5, "retry": 22, "status": 8}
        (op,) = self.rng.choices(list(weights), list(weights.values()))
        return op

    # --- operations ---------------------------------------------------------------------------

    async def operate(self, ops: Iterator[tuple[str, str]]) -> None:
        for op, run_id in ops:
            if op == "start":
                await self.start(run_id)
            elif op == "fix":
                ff.FIXED["half"] = True
            elif op == "midway":
                if self.midway is not None:
                    await self.midway()
            else:
                await self.control(op, self.runs[run_id])
            self.done_ops += 1
            if self.done_ops % 40 == 0:
                await self.watch()

    async def start(self, run_id: str) -> None:
        flow, args = self.starts[run_id]
        handle = await self.client.start(flow, *args, id=run_id)
        assert handle.created, f"{run_id} existed already (seed={self.seed})"
        self.runs[run_id].started = True

    async def control(self, op: str, tr: Tracked) -> str:
        handle = self.client.get(tr.id)
        existed = tr.started  # before the operation: a start may return while it is under way
        try:
            if op in ("signal", "boom"):
                n = tr.tick()
                payload = {"n": n, "boom": True} if op == "boom" else {"n": n}
                await handle.signal("tick", payload)
                tr.accepted.append(n)
                outcome = "accepted"
            elif op == "status":
                outcome = (await handle.status()).value
            else:
                status = await getattr(handle, op)()
                outcome = status.value
                if status not in RETURNS[op]:
                    self.problem(tr.id, f"{op} returned {status.value}; expected one of {sorted(RETURNS[op])}")
        except IllegalTransition as exc:
            outcome = self._illegal(op if op != "boom" else "signal", tr, exc)
        except RunNotFound:
            outcome = "not found"
            if existed:
                self.problem(tr.id, f"{op}: RunNotFound for a run that exists")
        except Exception as exc:
            outcome = f"error {type(exc).__name__}"
            self.problem(tr.id, f"{op} raised {type(exc).__name__}: {exc}")
        else:
            tr.started = True
        tr.ops.append((op, outcome))
        self.outcomes[f"{op}:{outcome}"] += 1
        return outcome

    def _illegal(self, op: str, tr: Tracked, exc: IllegalTransition) -> str:
        tr.started = True
        found = ILLEGAL.match(str(exc))
        if found is None:
            self.problem(tr.id, f"{op}: IllegalTransition without the usual explanation: {exc}")
            return "illegal ?"
        verb, named, status = found.groups()
        if (verb, named) == (op, tr.id):
            if status not in ILLEGAL_FROM[op]:
                self.problem(tr.id, f"{op} refused from {status}, which the rules allow: {exc}")
            return f"illegal from {status}"
        self.problem(tr.id, f"{op} refused because of another run: {exc}")
        return f"illegal via {verb} of a child that is {status}"

    async def watch(self) -> None:
        """A snapshot of every run's status: a run once completed or cancelled stays so."""
        async with self.watching:
            for row in await self.client.list_runs(limit=10_000):
                self.saw(row)

    def saw(self, row: RunRow) -> None:
        before = self.seen.get(row.id)
        if before in ABSORBING and row.status != before:
            self.problem(row.id, f"status went from {before.value} to {row.status.value}")
        self.seen[row.id] = row.status
        if row.id in self.runs:
            self.runs[row.id].started = True

    async def run_plan(self, plan: list[tuple[str, str]], operators: int) -> None:
        ops = iter(plan)
        await asyncio.gather(*(self.operate(ops) for _ in range(operators)))
        await self.watch()

    # --- bringing everything to rest --------------------------------------------------------------

    async def rows(self) -> dict[str, RunRow]:
        return {r.id: r for r in await self.client.list_runs(limit=10_000)}

    async def rest(self, after_fix: bool) -> dict[str, RunRow]:
        """Resume what the fuzz paused, tell each counter to stop and, `after_fix`, retry what failed
        or paused on an error, until every run has ended (before the fix: or is paused on an error,
        or waits for a child that is); the rows as they are then."""
        retries: Counter[str] = Counter()
        busy: list[str] = []

        async def settled() -> dict[str, RunRow] | None:
            await self._nudge(await self.rows(), after_fix, retries)
            rows = await self.rows()
            for row in rows.values():
                self.saw(row)
            busy[:] = [r.id for r in rows.values() if not self._resting(r, rows, after_fix)]
            if os.environ.get("CAIRN_FUZZ_DEBUG"):
                kinds = Counter(f"{rows[r].status.value}{'+lease' if rows[r].lease_owner else ''}" for r in busy)
                print(f"{time.monotonic():.2f} {len(busy)} busy: {dict(kinds)} e.g. {busy[:3]}")
            return None if busy else rows

        try:
            result: dict[str, RunRow] = await eventually(settled, timeout=90, what="every run at rest")
        except AssertionError:
            raise AssertionError(
                f"seed={self.seed} ({self.label}): {len(busy)} run(s) never came to rest "
                f"({'after' if after_fix else 'before'} the fix), e.g.\n{await self.explain(busy[:4])}"
            ) from None
        return result

    async def _nudge(self, rows: dict[str, RunRow], after_fix: bool, retries: Counter[str]) -> None:
        async def nudge(row: RunRow) -> None:
            tr = self.runs.get(row.id)
            if row.status == RunStatus.PAUSED and (row.pause_reason == "user" or after_fix):
                await self.control("resume", self._tracked(row))
            elif row.status == RunStatus.FAILED and after_fix and self._retry_now(row, rows, retries):
                retries[row.id] += 1
                await self.control("retry", self._tracked(row))
            if tr is not None and tr.counter and not tr.stop_sent and not row.status.is_terminal:
                if any(not rows[r].status.is_terminal for r in self.relays_to(row.id) if r in rows):
                    return  # its stop must be the last tick it gets
                tr.stop_sent = True
                n = tr.tick()
                try:
                    await self.client.get(row.id).signal("tick", {"n": n, "stop": True})
                    tr.accepted.append(n)
                except IllegalTransition:
                    tr.stop_sent = False

        await each(rows.values(), nudge)

    def relays_to(self, run_id: str) -> list[str]:
        return [r for r, (flow, args) in self.starts.items() if flow is ff.relay and run_id in args[0]]

    async def take_relayed(self, rows: dict[str, RunRow]) -> None:
        """Count the ticks relays sent as accepted for their targets: each send a relay's journal
        records as completed (a refused one is a failed step)."""
        for run_id, (flow, _) in self.starts.items():
            if flow is not ff.relay or run_id not in rows or run_id in self.relayed:
                continue
            assert rows[run_id].status.is_terminal, f"relay {run_id} is {rows[run_id].status} (seed={self.seed})"
            self.relayed.add(run_id)
            for step in await self.client.get(run_id).steps():
                if step.kind == StepKind.SEND_SIGNAL and step.status == StepStatus.COMPLETED:
                    self.runs[step.args["run_id"]].accepted.append(int(step.args["payload"]["n"]))

    def _retry_now(self, row: RunRow, rows: dict[str, RunRow], retries: Counter[str]) -> bool:
        """A failed run is retried after the fix (a few times at most), unless its parent failed as
        well: the parent's retry retries it."""
        parent = rows.get(row.parent_id or "")
        return retries[row.id] < 3 and not (parent is not None and parent.status == RunStatus.FAILED)

    def _tracked(self, row: RunRow) -> Tracked:
        if row.id not in self.runs:
            self.runs[row.id] = Tracked(row.id, row.workflow, counter=False, started=True)
        return self.runs[row.id]

    def _resting(self, row: RunRow, rows: dict[str, RunRow], after_fix: bool) -> bool:
        if row.status.is_terminal:
            return not after_fix or row.status != RunStatus.FAILED
        if row.status == RunStatus.PAUSED:
            return row.pause_reason != "user" and not after_fix
        return not after_fix and self._waits_on_paused(row, rows)

    def _waits_on_paused(self, row: RunRow, rows: dict[str, RunRow]) -> bool:
        kids = [r for r in rows.values() if r.parent_id == row.id]
        return any(k.status == RunStatus.PAUSED or self._waits_on_paused(k, rows) for k in kids)


# --- the checks ---------------------------------------------------------------------------------


async def check_run(fuzz: Fuzz, row: RunRow, rows: dict[str, RunRow]) -> None:
    """What a user relies on of one run as it rests."""
    handle = fuzz.client.get(row.id)
    steps = await handle.steps()
    events = await handle.events()
    tr = fuzz.runs.get(row.id)
    if row.status.is_terminal:
        open_steps = [(s.seq, s.kind.value, s.status.value) for s in steps if not s.status.is_resolved]
        if open_steps:
            fuzz.problem(row.id, f"{row.status.value} with open steps {open_steps}")
        await check_result(fuzz, row, tr)
        check_children(fuzz, row, rows, events)
    check_events(fuzz, row, events, tr)


async def check_result(fuzz: Fuzz, row: RunRow, tr: Tracked | None) -> None:
    handle = fuzz.client.get(row.id)
    try:
        value = await handle.result(timeout=5)
    except WorkflowCancelled as exc:
        if row.status != RunStatus.CANCELLED and not (
            row.status == RunStatus.FAILED and _error_type(row) == "WorkflowCancelled"
        ):
            fuzz.problem(row.id, f"{row.status.value}, yet result() raised WorkflowCancelled: {exc}")
        return
    except Exception as exc:
        if row.status != RunStatus.FAILED:
            fuzz.problem(row.id, f"{row.status.value}, yet result() raised {type(exc).__name__}: {exc}")
        elif type(exc).__name__ != _error_type(row):
            fuzz.problem(row.id, f"failed with {_error_type(row)}, yet result() raised {type(exc).__name__}")
        return
    if row.status != RunStatus.COMPLETED:
        fuzz.problem(row.id, f"{row.status.value}, yet result() returned {value!r}")
        return
    if tr is not None and tr.counter:
        check_counted(fuzz, tr, value)


def _error_type(row: RunRow) -> str | None:
    import json

    try:
        return str(json.loads(row.error or "{}").get("type"))
    except ValueError:
        return None


def check_counted(fuzz: Fuzz, tr: Tracked, value: dict[str, Any]) -> None:
    """A counter that completed received every signal accepted for it, each exactly once."""
    seen = value["seen"]
    if value["count"] != len(seen):
        fuzz.problem(tr.id, f"count {value['count']} but {len(seen)} ticks seen")
    duplicated = sorted(n for n, c in Counter(seen).items() if c > 1)
    lost = sorted(set(tr.accepted) - set(seen))
    extra = sorted(set(seen) - set(tr.accepted))
    if duplicated or lost or extra:
        fuzz.problem(
            tr.id,
            f"signals: {len(tr.accepted)} accepted, {len(seen)} received; lost {lost}, received twice "
            f"{duplicated}, received but never accepted {extra}; ops {tr.ops}",
        )


def check_events(fuzz: Fuzz, row: RunRow, events: list[Any], tr: Tracked | None) -> None:
    """The events say the run's story: its last change of state is its status, and every signal."""
    life = [e.kind for e in events if e.kind in LIFECYCLE]
    if life.count("started") > 1:
        fuzz.problem(row.id, f"started more than once: {life}")
    expected = {
        RunStatus.COMPLETED: "completed",
        RunStatus.FAILED: "failed",
        RunStatus.CANCELLED: "cancelled",
        RunStatus.PAUSED: "paused",
    }.get(row.status)
    if expected is not None and (not life or life[-1] != expected):
        fuzz.problem(row.id, f"{row.status.value}, but its last lifecycle events are {life[-4:]}")
    for final in ("completed", "cancelled"):
        if life.count(final) > 1:
            fuzz.problem(row.id, f"{life.count(final)} {final!r} events: {life}")
    received = sum(1 for e in events if e.kind == "signal.received" and e.detail.get("name") == "tick")
    accepted = len(tr.accepted) if tr is not None else 0
    if received != accepted:
        fuzz.problem(row.id, f"{accepted} signals accepted, {received} signal.received events")


def check_children(fuzz: Fuzz, row: RunRow, rows: dict[str, RunRow], events: list[Any]) -> None:
    """The children a completed or cancelled run awaited have ended, and all of a run cancelled by
    a control operation have. (A failed run's go on: its retry takes their results.)"""
    if row.status == RunStatus.FAILED:
        return
    by_control = row.status == RunStatus.CANCELLED and any(
        e.kind == "cancelled" and "error" not in e.detail for e in events
    )
    for kid in (r for r in rows.values() if r.parent_id == row.id):
        if not kid.status.is_terminal and (kid.parent_seq is not None or by_control):
            fuzz.problem(row.id, f"{row.status.value}, but its child {kid.id} is {kid.status.value}")


async def check_all(fuzz: Fuzz, rows: dict[str, RunRow]) -> None:
    await each(rows.values(), lambda row: check_run(fuzz, row, rows))


async def check_frozen(fuzz: Fuzz, rows: dict[str, RunRow]) -> None:
    """Operations on finished runs change nothing: their status and events are as they were."""
    finished = [r for r in rows.values() if r.status in ABSORBING]
    before = {}

    async def read(row: RunRow) -> None:
        before[row.id] = await fuzz.client.get(row.id).events()

    async def poke(row: RunRow) -> None:
        for op in ("pause", "resume", "cancel", "retry", "signal"):
            await fuzz.control(op, fuzz._tracked(row))

    async def compare(row: RunRow) -> None:
        now = await fuzz.client.get(row.id).events()
        if now != before[row.id]:
            fuzz.problem(row.id, f"events changed after it ended: {[e.kind for e in now[len(before[row.id]) :]]}")

    await each(finished, read)
    await each(finished, poke)
    after = await fuzz.rows()
    for row in finished:
        if after[row.id].status != row.status:
            fuzz.problem(row.id, f"was {row.status.value}, now {after[row.id].status.value}")
    await each(finished, compare)


# --- the tests ----------------------------------------------------------------------------------


async def fuzz_control(
    client: cairn.Client, label: str, seed: int = SEED, midway: Callable[[], Awaitable[None]] | None = None
) -> None:
    fuzz = Fuzz(client, seed, label)
    fuzz.midway = midway
    plan = fuzz.plan(n_runs=max(10, int(240 * SCALE)), n_ops=int(2600 * SCALE))
    clock = [time.monotonic()]

    def lap() -> str:
        clock.append(time.monotonic())
        return f"{clock[-1] - clock[-2]:.1f}s"

    await fuzz.run_plan(plan, operators=16)
    laps = [f"fuzz {lap()}"]
    assert not fuzz.problems, await fuzz.verdict("during the fuzz")

    rows = await fuzz.rest(after_fix=False)
    await fuzz.take_relayed(rows)
    laps.append(f"rest {lap()}")
    resting = Counter(f"{r.status.value}{':' + r.pause_reason if r.pause_reason else ''}" for r in rows.values())
    await check_all(fuzz, rows)
    laps.append(f"checks {lap()}")
    assert not fuzz.problems, await fuzz.verdict("at rest, before the fix")

    ff.FIXED["all"] = True
    rows = await fuzz.rest(after_fix=True)
    await fuzz.take_relayed(rows)
    laps.append(f"retries {lap()}")
    await check_all(fuzz, rows)
    await check_frozen(fuzz, rows)
    laps.append(f"checks {lap()}")
    assert not fuzz.problems, await fuzz.verdict("at rest, after the fix and retries")
    statuses = Counter(r.status.value for r in rows.values())
    print(f"\n{label} seed={seed}: {len(plan)} operations on {len(rows)} runs ({', '.join(laps)})")
    print(f"  at rest before the fix: {dict(resting)}; after: {dict(statuses)}")
    print(f"  outcomes: {dict(sorted(fuzz.outcomes.items()))}")


async def test_control_fuzz(client: cairn.Client, worker: cairn.Worker) -> None:
    await fuzz_control(client, f"one worker on {client.url.split(':')[0]}")


async def test_control_fuzz_two_workers(client: cairn.Client, db_url: str) -> None:
    """The same, with two workers on the database, so that claims race as well; midway through,
    one of them stops (handing its runs over) and a new one starts."""
    other = cairn.Client(db_url)
    await other.store.open()
    options: dict[str, Any] = {"poll_interval": 0.05, "lease": 5.0, "concurrency": 16}
    second = [cairn.Worker(other, **options)]

    async def handover() -> None:
        await second[0].stop(grace=1.0)
        second[0] = cairn.Worker(other, **options)
        await second[0].start()

    try:
        async with cairn.Worker(client, **options):
            await second[0].start()
            try:
                label = f"two workers on {client.url.split(':')[0]}"
                await fuzz_control(client, label, SEED + 1, midway=handover)
            finally:
                await second[0].stop()
    finally:
        await other.close()


async def test_retrying_a_parent_after_its_child_was_retried(client: cairn.Client, worker: cairn.Worker) -> None:
    """The interleaving the fuzz met now and then, forced: a parent fails because the child it
    awaited failed; the child is retried after the fix and completes; then the parent is retried
    (its retry retried that child as well, and raised IllegalTransition: it had completed)."""
    handle = await client.start(ff.parent, "p", 0, True, True, 5.0, id="p")
    with pytest.raises(ff.Doomed):
        await handle.result(timeout=20)
    child = client.get(ff.batch_id("p"))
    assert await child.status() == RunStatus.FAILED
    ff.FIXED["all"] = True
    await child.retry()
    await child.result(timeout=20)
    await client.get(ff.counter_id("p")).signal("tick", {"n": 0, "stop": True})
    assert await handle.retry() == RunStatus.RUNNING
    assert (await handle.result(timeout=20))["counted"] == 1


async def test_cancel_never_deadlocks_with_a_commit(
    pg_server: str, pg_template: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forced, on PostgreSQL: a transaction locks a child's row and then its parent's, as a worker's
    group commit that fences the child's activation and then writes its end to the parent does,
    while `cancel` of the parent locks the parent and then the child. The cancel waited for the
    child holding the parent: a deadlock, which PostgreSQL ends only after its deadlock_timeout
    (1 s, the commit's whole batch stalled), refusing one of the two (the cancel raised
    DeadlockDetected with nothing cancelled, before it was run again). It now takes the child's
    row NOWAIT and runs again once the commit is through: no deadlock, no victim."""
    monkeypatch.setattr(sql_store, "LOCK_BUSY_ATTEMPTS", 1_000_000)  # never falls back to waiting here
    caplog.set_level(logging.DEBUG, logger="cairn.store")
    name = f"cairn_t_{uuid.uuid4().hex[:12]}"
    _admin(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    url = _with_db(pg_server, name)
    client = cairn.Client(url)
    try:
        async with cairn.Worker(client, poll_interval=0.05):
            parent = await client.start(cf.waits_for_child, 5)
            child = client.get("child-of-5")
            await eventually(lambda: status_is(child, RunStatus.WAITING), what="the child waiting")
        commit = psycopg.connect(url)  # the worker's commit, as it takes its locks: child, then parent
        try:
            commit.execute("SELECT 1 FROM cairn_runs WHERE id = %s FOR NO KEY UPDATE", (child.id,))
            cancel = asyncio.ensure_future(parent.cancel())  # locks the parent, then the child

            async def tried() -> bool:  # the child's row refused (or, before, waited for holding the parent)
                return "held by a commit" in caplog.text or await waits_for_a_lock(url)

            await eventually(tried, what="the cancel trying the child's row")
            lock = f"SELECT 1 FROM cairn_runs WHERE id = '{parent.id}' FOR NO KEY UPDATE"
            await asyncio.to_thread(commit.execute, lock.encode())  # no DeadlockDetected
        finally:
            commit.rollback()
            commit.close()
        assert await cancel == RunStatus.CANCELLED
        assert await child.status() == RunStatus.CANCELLED
        assert "lost a lock conflict" not in caplog.text  # nor was the cancel the deadlock's victim
    finally:
        await client.close()
        _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_run_paused_before_it_began_says_it_started(client: cairn.Client) -> None:
    """A run paused before its first activation, then resumed, says once that it started (it said
    nothing: the event went out only while the run was pending, and resume makes it running)."""
    handle = await client.start(ff.batch, "late", [0], False, 0.001)
    assert await handle.pause() == RunStatus.PAUSED  # no worker yet: before its first activation
    async with cairn.Worker(client, poll_interval=0.05):
        await handle.resume()
        await handle.result(timeout=20)
    assert (await handle.describe()).started_at is not None
    kinds = [e.kind for e in await handle.events()]
    assert kinds.count("started") == 1, kinds  # once: not never, nor again at each activation


async def test_a_run_paused_before_it_began_is_pending_again_once_resumed(client: cairn.Client) -> None:
    """Resumed, a run paused before its first activation is pending, as it was before the pause: it
    never started (it was said to be running, and listed with the running runs, until a worker came)."""
    handle = await client.start(ff.batch, "idle", [0], False, 0.001)
    assert await handle.pause() == RunStatus.PAUSED  # no worker yet: before its first activation
    assert await handle.resume() == RunStatus.PENDING
    assert await handle.status() == RunStatus.PENDING
    assert [r.id for r in await client.list_runs(status="pending")] == [handle.id]
    assert await client.list_runs(status="running") == []
    async with cairn.Worker(client, poll_interval=0.05):
        await handle.result(timeout=20)
    kinds = [e.kind for e in await handle.events()]
    assert kinds.count("started") == 1 and kinds.index("resumed") < kinds.index("started"), kinds
