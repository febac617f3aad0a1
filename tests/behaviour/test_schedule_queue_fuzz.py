"""Schedules and queues under randomized everyday use, on both backends.

Three seeded randomized tests, each checked against what the contract promises:

- `test_queue_claims_against_a_model`: the claims of limited queues (concurrency, per_key,
  priority, rate limits, several at once) driven one transaction at a time on a clock the test
  holds still, by several "workers", among starts, cancels, pauses and resumes, and compared with a
  model of what each claim must take: exactly the runs the limits allow, in priority order, never
  more than a limit (bursts of claims at once, from several clients, are checked for the limits),
  and every queued run taken in the end.
- `test_queue_fuzz_with_workers`: jobs in queues of every kind (concurrency, per_key, priority,
  rate, an action queue) run by several workers (on PostgreSQL, worker processes as well) while
  operators pause, resume, cancel, retry and signal them. Each job marks its steps in a log; the
  stretches a run was certainly in flight never overlap beyond a limit; every job ends; none
  starts twice.
- `test_schedule_fuzz`: schedules of every overlap and catchup policy, fired by several workers
  as the test moves the database's clock on by hours (a `SkippingClock`), while it pauses, resumes,
  updates, deletes and creates schedules, cancels scheduled runs, lets gated ones end, and restarts
  workers; compared with a model of the ticks that must start: the tick sets of "allow" and
  "cancel_previous" exactly, the others' within them; a tick never starts twice nor early, a paused
  or deleted schedule starts nothing, runs of "skip", "buffer_one" and "cancel_previous" never
  overlap, the next tick is always in the future once fired, and every schedule fires again once
  its runs have ended.

The bugs found have a small deterministic test each below: a key at its per_key limit held back
the other keys behind it; a run paused while queued held a slot, and once resumed started outside
its queue's limits; so did a failed run's retry; a tick that fell due while a worker was up is
dropped by catchup="none" when a newer worker fires it; a frequent schedule's firing
after a long downtime walked every missed tick inside the firing transaction (with a check that
the ticks reached directly are those of that walk).

The plan comes from `random.Random(seed)` (CAIRN_FUZZ_SEED overrides the seed, CAIRN_FUZZ_SCALE
scales the work, CAIRN_FUZZ_DEBUG=1 prints the schedule fuzz's pace); a failure says its seed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn import IllegalTransition, RunStatus, StepKind
from cairn.clock import SYSTEM, Clock, SkippingClock
from cairn.queues import QueueSpec
from cairn.records import RunRow
from cairn.schedules import MAX_CATCHUP_TICKS, NONE_GRACE, ScheduleSpec
from cairn.store.protocol import WorkerInfo
from tests import schedule_queue_fuzz_flows as sf
from tests.conftest import eventually
from tests.helpers import FixedClock, raw_sql, status_is

pytestmark = pytest.mark.timeout(240)

SEED = int(os.environ.get("CAIRN_FUZZ_SEED", "20250612"))
SCALE = float(os.environ.get("CAIRN_FUZZ_SCALE", "1"))
JOB = "tests.schedule_queue_fuzz_flows.job"
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def clocked(clock: Clock, *clients: cairn.Client) -> Iterator[None]:
    for c in clients:
        c.store.clock = clock
    try:
        yield
    finally:
        for c in clients:
            c.store.clock = SYSTEM


def verdict(problems: list[str], seed: int, what: str) -> str:
    shown = "\n  ".join(problems[:30])
    more = f"\n  ... and {len(problems) - 30} more" if len(problems) > 30 else ""
    return f"{what}: {len(problems)} problem(s), seed={seed} (rerun with CAIRN_FUZZ_SEED={seed})\n  {shown}{more}"


def peak(stretches: Sequence[tuple[float, float, str]]) -> tuple[int, float, list[str]]:
    """The most stretches open at once (a stretch ending when another begins does not overlap it)."""
    kept = [(a, b, run) for a, b, run in stretches if b > a]
    edges = sorted([(a, 1, run) for a, _, run in kept] + [(b, -1, run) for _, b, run in kept], key=lambda e: e[:2])
    best, at, now, open_runs, best_runs = 0, 0.0, 0, Counter[str](), list[str]()  # ends first at a tie
    for t, d, run in edges:
        now += d
        open_runs[run] += d
        if now > best:
            best, at, best_runs = now, t, sorted(r for r, n in open_runs.items() if n > 0)
    return best, at, best_runs


def windows_over(times: Sequence[float], n: int, period: float) -> list[tuple[float, float]]:
    """Where `n + 1` of the sorted `times` fall within less than `period`."""
    s = sorted(times)
    return [(s[i], s[i + n]) for i in range(len(s) - n) if s[i + n] - s[i] < period - 1e-5]


# --- 1. the queue claim against a model ---------------------------------------------------------

MODEL_QUEUES = [
    cairn.Queue("m-conc", concurrency=3, register=False),
    cairn.Queue("m-key", concurrency=5, per_key=2, register=False),
    cairn.Queue("m-prio", concurrency=2, priority=True, register=False),
    cairn.Queue("m-rate", rate_limit=cairn.RateLimit(3, per=1.0), register=False),
    cairn.Queue(
        "m-mix", concurrency=4, per_key=1, rate_limit=cairn.RateLimit(10, per=1.0), priority=True, register=False
    ),
]
FLIGHT = ("taken", "resumed", "claimed")
"""A model run's states in flight: taken by a queue's claim (pending, leased), resumed (running,
unleased: any claim takes it again, outside the queue's claim) and claimed so. A run paused before
its first activation (every run here: no claim is activated) holds no slot, and resumed it is
queued again."""


@dataclass
class MRun:
    id: str
    queue: str
    key: str | None
    priority: int
    order: int
    state: str = "queued"
    holder: str | None = None
    starts: int = 0
    requeued: int = 0
    """Times it was resumed before any activation: back in its queue, to be started again."""


class QueueModel:
    """What each claim of the limited queues must take, from the starts, claims and controls so far."""

    def __init__(self, specs: Sequence[QueueSpec], seed: int) -> None:
        self.specs = {s.name: s for s in specs}
        self.runs: dict[str, MRun] = {}
        self.next_at: dict[str, float | None] = dict.fromkeys(self.specs)
        self.starts: dict[str, list[float]] = defaultdict(list)
        self.order = 0
        self.problems: list[str] = []
        self.seed = seed

    def add(self, run_id: str, queue: str, key: str | None, priority: int | None) -> None:
        self.order += 1
        self.runs[run_id] = MRun(run_id, queue, key, priority or 0, self.order)

    def in_flight(self, queue: str) -> list[MRun]:
        return [r for r in self.runs.values() if r.queue == queue and r.state in FLIGHT]

    def busy(self, worker: str) -> list[str]:
        """The runs `worker` holds (its claims must not take them again, as a worker passes them)."""
        return [r.id for r in self.runs.values() if r.state == "claimed" and r.holder == worker]

    def expect(self, room: int, now: float) -> tuple[int, set[str]]:
        """(resumed runs taken again, new runs started) a claim with `room` must give."""
        resumed = sum(1 for r in self.runs.values() if r.state == "resumed")
        retaken = min(room, resumed)
        room -= retaken
        chosen: set[str] = set()
        next_at = dict(self.next_at)
        for name in sorted(self.specs):
            if room <= 0:
                break
            spec = self.specs[name]
            flight = self.in_flight(name)
            per_key = Counter(r.key for r in flight)
            q_room = room
            if spec.concurrency is not None:
                q_room = min(q_room, spec.concurrency - len(flight))
            if spec.rate_n is not None:
                due = next_at[name]
                q_room = min(q_room, 1 if due is None or due <= now + 1e-9 else 0)
            taken: list[str] = []
            queued = sorted(
                (r for r in self.runs.values() if r.queue == name and r.state == "queued"),
                key=lambda r: (r.priority, r.order),
            )
            for r in queued:
                if len(taken) >= q_room:
                    break
                if spec.per_key is not None and r.key is not None and per_key[r.key] >= spec.per_key:
                    continue
                per_key[r.key] += 1
                taken.append(r.id)
            if taken and spec.rate_n is not None and spec.rate_period is not None:
                next_at[name] = now + spec.rate_period / spec.rate_n
            chosen.update(taken)
            room -= len(taken)
        return retaken, chosen

    def took(self, worker: str, claim: cairn.store.protocol.WorkClaim, now: float, where: str) -> tuple[int, set[str]]:
        """Apply what a claim took; (resumed runs taken again, new runs started)."""
        retaken, new = 0, set()
        for rc in claim.runs:
            r = self.runs.get(rc.run.id)
            if r is None:
                self.problems.append(f"{where}: {worker} took {rc.run.id}, a run the model does not know")
                continue
            if r.state == "queued":
                r.state, r.holder = "taken", worker
                r.starts += 1
                new.add(r.id)
                self.starts[r.queue].append(now)
                spec = self.specs[r.queue]
                if spec.rate_n is not None and spec.rate_period is not None:
                    self.next_at[r.queue] = now + spec.rate_period / spec.rate_n
            elif r.state == "resumed":
                r.state, r.holder = "claimed", worker
                retaken += 1
            else:
                self.problems.append(f"{where}: {worker} took {r.id}, which is {r.state} (held by {r.holder})")
        self.check_limits(where)
        return retaken, new

    def check_limits(self, where: str) -> None:
        for name, spec in self.specs.items():
            flight = self.in_flight(name)
            if spec.concurrency is not None and len(flight) > spec.concurrency:
                self.problems.append(f"{where}: {name} has {len(flight)} in flight, over {spec.concurrency}")
            if spec.per_key is not None:
                for key, n in Counter(r.key for r in flight if r.key is not None).items():
                    if n > spec.per_key:
                        self.problems.append(f"{where}: {name} key {key} has {n} in flight, over {spec.per_key}")
            if spec.rate_n is not None and spec.rate_period is not None:
                over = windows_over(self.starts[name], spec.rate_n, spec.rate_period)
                if over:
                    self.problems.append(f"{where}: {name} started {spec.rate_n + 1} within {over[-1]}")
                    self.starts[name].clear()  # said once


class ModelDriver:
    """Starts, claims and controls on the store, from a seed, each checked against the model."""

    WORKERS = ("w0", "w1", "w2")

    def __init__(self, clients: list[cairn.Client], clock: FixedClock, log: str, seed: int) -> None:
        self.clients = clients
        self.client = clients[0]
        self.clock = clock
        self.log = log
        self.rng = random.Random(seed)
        self.model = QueueModel([q.spec for q in MODEL_QUEUES], seed)
        self.t0 = clock.t
        self.counts: Counter[str] = Counter()

    async def step(self, i: int) -> None:
        rng, model = self.rng, self.model
        ops = {"start": 34, "claim": 28, "burst": 6, "cancel": 10, "pause": 5, "resume": 5, "tick": 12}
        (op,) = rng.choices(list(ops), list(ops.values()))
        self.counts[op] += 1
        where = f"op {i} ({op}, t+{self.clock.t - self.t0:.3f})"
        if op == "start":
            await self.start(f"m{i}")
        elif op == "claim":
            await self.claim(rng.choice(self.WORKERS), rng.randint(1, 4), where)
        elif op == "burst":
            await self.burst(where)
        elif op == "cancel":
            live = [r for r in model.runs.values() if r.state != "ended"]
            in_flight = [r for r in live if r.state in FLIGHT]
            pool = in_flight if in_flight and rng.random() < 0.7 else live
            if pool:
                await self.cancel(rng.choice(pool))
        elif op == "pause":
            pool = [r for r in model.runs.values() if r.state in ("queued", "taken", "claimed", "resumed")]
            if pool:
                r = rng.choice(pool)
                assert await self.client.get(r.id).pause() == RunStatus.PAUSED
                r.state, r.holder = "paused", None
        elif op == "resume":
            pool = [r for r in model.runs.values() if r.state == "paused"]
            if pool:
                r = rng.choice(pool)
                self.clock.t += 0.001  # resumed runs are taken again oldest first
                status = await self.client.get(r.id).resume()
                if status == RunStatus.PENDING:  # never activated: queued again, last in
                    model.order += 1
                    r.state, r.order, r.requeued = "queued", model.order, r.requeued + 1
                else:
                    assert status == RunStatus.RUNNING
                    r.state = "resumed"
        elif op == "tick":
            self.clock.t += rng.choice([0.05, 0.1, 0.2, 1 / 3, 0.5])

    async def start(self, run_id: str) -> None:
        rng = self.rng
        spec = rng.choice(list(self.model.specs.values()))
        key = rng.choice(["k1", "k2", "k3", None]) if spec.per_key is not None or rng.random() < 0.2 else None
        priority = rng.choice([None, 0, 1, 2, 5]) if spec.priority else None
        self.clock.t += 0.001  # first in, first out: each run its own ready_at
        handle = await self.client.start(
            sf.job, self.log, run_id, [], id=run_id, queue=spec.name, key=key, priority=priority
        )
        assert handle.created
        self.model.add(run_id, spec.name, key, priority)

    async def cancel(self, r: MRun) -> None:
        assert await self.client.get(r.id).cancel() == RunStatus.CANCELLED
        r.state = "ended"

    async def claim(self, worker: str, room: int, where: str) -> None:
        model = self.model
        retaken, expected = model.expect(room, self.clock.t)
        work = await self.client.store.claim_work(worker, [JOB], [], None, room, 0, 1000.0, busy=model.busy(worker))
        got_retaken, got = model.took(worker, work, self.clock.t, where)
        if got != expected or got_retaken != retaken:

            def named(ids: set[str]) -> list[str]:
                return sorted(f"{i}({model.runs[i].queue},{model.runs[i].key},p{model.runs[i].priority})" for i in ids)

            flight = {q: sorted(f"{r.id}:{r.key}" for r in model.in_flight(q)) for q in model.specs}
            model.problems.append(
                f"{where}: {worker} with room {room} took {named(got)} (+{got_retaken} resumed); the limits "
                f"allow {named(expected)} (+{retaken} resumed); in flight {flight}"
            )

    async def burst(self, where: str) -> None:
        """Claims at once from several clients: only the limits are checked (who wins is the database's)."""
        rng, model = self.rng, self.model
        chosen = rng.sample(self.WORKERS, rng.randint(2, len(self.WORKERS)))
        claims = await asyncio.gather(
            *(
                self.clients[self.WORKERS.index(w)].store.claim_work(
                    w, [JOB], [], None, rng.randint(1, 4), 0, 1000.0, busy=model.busy(w)
                )
                for w in chosen
            )
        )
        for w, work in zip(chosen, claims, strict=True):
            model.took(w, work, self.clock.t, f"{where} by {w}")

    async def drain(self) -> None:
        """Everything still queued is taken in the end, as slots free up and the rates allow."""
        model = self.model
        for r in [r for r in model.runs.values() if r.state == "paused"]:
            await self.cancel(r)
        for _ in range(4000):
            if not any(r.state == "queued" for r in model.runs.values()) or model.problems:
                break
            self.clock.t += 0.05
            await self.claim(self.rng.choice(self.WORKERS), 8, "draining")
            for r in [r for r in model.runs.values() if r.state in FLIGHT]:
                await self.cancel(r)
        left = [r.id for r in model.runs.values() if r.state == "queued"]
        if left:
            model.problems.append(f"never taken: {left[:10]}")


async def test_queue_claims_against_a_model(client: cairn.Client, db_url: str, tmp_path: Path) -> None:
    await client.store.upsert_queues([q.spec for q in MODEL_QUEUES], "test")
    clients = [client, cairn.Client(db_url), cairn.Client(db_url)]
    clock = FixedClock(await client.store.now())
    driver = ModelDriver(clients, clock, str(tmp_path / "model.log"), SEED)
    try:
        with clocked(clock, *clients):
            for i in range(int(800 * SCALE)):
                await driver.step(i)
            await driver.drain()
    finally:
        for c in clients[1:]:
            await c.close()
    model = driver.model
    label = f"queue claims on {db_url.split(':')[0]} ({dict(driver.counts)})"
    assert not model.problems, verdict(model.problems, SEED, label)
    stored = {r.id: r.status for r in await client.list_runs(limit=10_000)}
    assert all(stored[r.id] == RunStatus.CANCELLED for r in model.runs.values()), "the model and the store disagree"
    assert all(r.starts <= 1 + r.requeued for r in model.runs.values()), "a run started twice"


# --- 2. queues under workers, in this process and others -----------------------------------------

LIMITS = {"fz-conc": 2, "fz-keyed": 3, "fz-prio": 1, "fz-rated": 4}
"""Each queue's concurrency (tests/schedule_queue_fuzz_flows.py); fz-keyed: one at a time per key."""
QUEUES = [None, "fz-conc", "fz-conc", "fz-keyed", "fz-keyed", "fz-prio", "fz-rated"]


@dataclass
class Job:
    id: str
    queue: str | None
    key: str | None
    priority: int | None
    plan: list[tuple[str, float]]
    gated: bool
    go_sent: bool = False
    cancel_at: float | None = None
    """The machine's clock when a cancel was first asked (the run was in flight, if at all, until then)."""
    paused_by_us: bool = False
    started: bool = False
    ops: list[tuple[str, str]] = field(default_factory=list)


class QueueFuzz:
    def __init__(self, client: cairn.Client, log: str, seed: int, label: str) -> None:
        self.client = client
        self.log = log
        self.seed = seed
        self.label = label
        self.rng = random.Random(seed)
        self.jobs: dict[str, Job] = {}
        self.problems: list[str] = []
        self.outcomes: Counter[str] = Counter()
        self._read = 0
        self.begun: set[str] = set()
        """Jobs whose "begin" mark is in the log (a claim took them: they are no longer queued)."""
        self.failed: set[str] = set()
        """Jobs whose "fail" mark is in the log and that were not retried since."""
        self.ended: set[str] = set()

    def plan(self, n_jobs: int, n_ops: int) -> list[tuple[str, str]]:
        rng = self.rng
        for i in range(n_jobs):
            queue = rng.choice(QUEUES)
            steps: list[tuple[str, float]] = []
            for _ in range(rng.randint(0, 3)):
                kind = rng.choice(["hold", "hold", "act", "sleep", "gate"])
                if kind == "gate" and any(k == "gate" for k, _ in steps):
                    kind = "hold"
                steps.append((kind, round(rng.uniform(0.002, 0.03), 4)))
            # Not in a limited queue: a failed run's retry waits for a slot again (it goes back to
            # pending), while the marks count it in flight from its first start to its end.
            if queue is None and rng.random() < 0.25:
                steps.insert(rng.randint(0, len(steps)), ("flaky", 0.0))
            key = rng.choice(["a", "b", "c", "d"]) if queue == "fz-keyed" else None
            priority = rng.choice([None, 0, 1, 3, 7]) if queue == "fz-prio" else None
            job_id = f"job-{i}"
            self.jobs[job_id] = Job(job_id, queue, key, priority, steps, any(k == "gate" for k, _ in steps))
        pending = list(self.jobs)
        rng.shuffle(pending)
        plan: list[tuple[str, str]] = []
        known: list[str] = []
        share = 1.3 * n_jobs / (n_jobs + n_ops)
        while pending or len(plan) < n_jobs + n_ops:
            if pending and (not known or rng.random() < share):
                job_id = pending.pop()
                plan.append(("start", job_id))
                known.append(job_id)
                continue
            target = rng.choice(known[-10:] if rng.random() < 0.5 else known)
            weights = {"pause": 14, "resume": 14, "cancel": 6, "retry": 8, "signal": 20, "status": 6}
            (op,) = rng.choices(list(weights), list(weights.values()))
            plan.append((op, target))
        return plan

    def marks(self) -> list[dict[str, Any]]:
        return sf.read_log(self.log)

    def refresh_begun(self) -> None:
        path = Path(self.log)
        if not path.exists():
            return
        with path.open() as f:
            f.seek(self._read)
            chunk = f.read()
        complete = chunk[: chunk.rfind("\n") + 1]
        self._read += len(complete.encode())
        for line in complete.splitlines():
            m = json.loads(line)
            if m["kind"] == "begin":
                self.begun.add(m["run"])
            elif m["kind"] == "fail":
                self.failed.add(m["run"])
            elif m["kind"] == "end":
                self.ended.add(m["run"])

    async def operate(self, ops: Iterator[tuple[str, str]], think: random.Random) -> None:
        for op, job_id in ops:
            try:
                await self.do(op, self.target(op, self.jobs[job_id], think))
            except Exception as exc:
                self.problems.append(f"{job_id}: {op} raised {type(exc).__name__}: {exc}")
            await asyncio.sleep(think.uniform(0, 0.01))  # an operator's pace, not a wait for anything

    def target(self, op: str, job: Job, pick: random.Random) -> Job:
        """The planned job, or another one the operation suits better now (one paused to resume...)."""
        if op in ("start", "status", "cancel"):
            return job
        self.refresh_begun()
        pools: dict[str, Callable[[Job], bool]] = {
            "pause": lambda j: j.started and not j.paused_by_us,
            "resume": lambda j: j.paused_by_us,
            "retry": lambda j: j.id in self.failed,
            "signal": lambda j: j.started and j.gated and not j.go_sent,
        }
        suits = pools[op]
        if job.cancel_at is None and job.id not in self.ended and suits(job):
            return job
        pool = [j for j in self.jobs.values() if j.cancel_at is None and j.id not in self.ended and suits(j)]
        return pick.choice(pool) if pool else job

    async def do(self, op: str, job: Job) -> None:
        try:
            if op == "start":
                h = await self.client.start(
                    sf.job, self.log, job.id, job.plan, id=job.id, queue=job.queue, key=job.key, priority=job.priority
                )
                assert h.created, f"{job.id} existed already"
                job.started = True
                outcome = "started"
            else:
                outcome = await self.control(op, job) if job.started else "skipped"
        except IllegalTransition as exc:
            outcome = f"illegal: {str(exc).split(':')[1].strip()}"
        job.ops.append((op, outcome))
        self.outcomes[f"{op}:{outcome.split(';')[0]}"] += 1

    async def control(self, op: str, job: Job) -> str:
        handle = self.client.get(job.id)
        if op == "pause":
            job.paused_by_us = True
            return (await handle.pause()).value
        if op == "resume" and job.paused_by_us:
            job.paused_by_us = False
            return (await handle.resume()).value
        if op == "cancel":
            if job.cancel_at is None:
                job.cancel_at = time.time()
            return (await handle.cancel()).value
        if op == "retry" and job.id in self.failed:
            self.failed.discard(job.id)
            return (await handle.retry()).value
        if op == "signal" and job.gated and not job.go_sent:
            await handle.signal("go", "ok")  # refused (IllegalTransition) while the run has failed
            job.go_sent = True
            return "sent"
        if op == "status":
            status = await handle.status()
            if status == RunStatus.FAILED:
                self.failed.add(job.id)
            return status.value
        return "skipped"

    async def rest(self) -> dict[str, RunStatus]:
        """Let everything end: the fix deployed, paused runs resumed, failed ones retried, gates opened."""
        Path(self.log + ".fixed").touch()
        statuses: dict[str, RunStatus] = {}

        async def settled() -> bool:
            rows = {r.id: r for r in await self.client.list_runs(limit=10_000)}
            for job in self.jobs.values():
                row = rows[job.id]
                statuses[job.id] = row.status
                with contextlib.suppress(IllegalTransition):
                    if row.status == RunStatus.PAUSED:
                        await self.client.get(job.id).resume()
                    elif row.status == RunStatus.FAILED:
                        await self.client.get(job.id).retry()
                    elif job.gated and not job.go_sent and not row.status.is_terminal:
                        await self.do("signal", job)
            return all(s in (RunStatus.COMPLETED, RunStatus.CANCELLED) for s in statuses.values())

        try:
            await eventually(settled, timeout=90, what="every job ended")
        except AssertionError:
            busy = {j: s.value for j, s in statuses.items() if s not in (RunStatus.COMPLETED, RunStatus.CANCELLED)}
            details = [f"{j}: {s} {self.jobs[j]}" for j, s in list(busy.items())[:6]]
            raise AssertionError(
                f"seed={self.seed} ({self.label}): {len(busy)} job(s) never ended: {busy}\n" + "\n".join(details)
            ) from None
        return statuses

    async def check(self, statuses: dict[str, RunStatus]) -> None:
        by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in sorted(self.marks(), key=lambda m: m["t"]):
            by_run[m["run"]].append(m)
        # Every job that was not cancelled ran to its end, once; none began twice.
        for job in self.jobs.values():
            kinds = Counter(m["kind"] for m in by_run.get(job.id, []))
            if statuses[job.id] == RunStatus.COMPLETED and (kinds["begin"] != 1 or kinds["end"] != 1):
                self.problems.append(f"{job.id}: completed with {kinds['begin']} begin(s), {kinds['end']} end(s)")
            if statuses[job.id] == RunStatus.CANCELLED and (kinds["begin"] > 1 or job.cancel_at is None):
                asked = job.cancel_at is not None
                self.problems.append(f"{job.id}: cancelled (asked: {asked}), {kinds['begin']} begins")
        await each(list(self.jobs.values()), self.check_events)
        flight, attempts = self.stretches(by_run)
        for name, stretches in flight.items():
            limit = LIMITS.get(name, 1 if ":" in name else None)
            most, at, runs = peak(stretches)
            if limit is not None and most > limit:
                self.problems.append(f"{name}: {most} runs in flight at once (limit {limit}) at {at:.3f}: {runs}")
        most, at, runs = peak(attempts)
        if most > 2:
            self.problems.append(f"fz-acts: {most} attempts at once (limit 2) at {at:.3f}: {runs}")
        # RateLimit(5, per 1 s): claims at least 0.2 s apart, so six begin within 0.4 s only if
        # some began 0.6 s later after its claim than another: a burst, not the rate.
        rated = [ms[0]["t"] for run, ms in by_run.items() if self.jobs[run].queue == "fz-rated"]
        if windows_over(rated, 5, 0.4):
            self.problems.append(f"fz-rated: six runs began within 0.4 s: {windows_over(rated, 5, 0.4)[:3]}")

    def stretches(
        self, by_run: dict[str, list[dict[str, Any]]]
    ) -> tuple[dict[str, list[tuple[float, float, str]]], list[tuple[float, float, str]]]:
        """When each run was certainly in flight, by queue (and queue:key): between two of its
        marks, unless it failed in between, and never after its cancel was asked; and when each
        attempt of the action queue was (from its start to its end)."""
        flight: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
        attempts: list[tuple[float, float, str]] = []
        for run, ms in by_run.items():
            job = self.jobs[run]
            cut = job.cancel_at if job.cancel_at is not None else float("inf")
            for a, b in itertools.pairwise(ms):
                if a["kind"] != "fail":
                    flight[job.queue or "default"].append((a["t"], min(b["t"], cut), run))
                    if job.key is not None:
                        flight[f"{job.queue}:{job.key}"].append((a["t"], min(b["t"], cut), run))
            opened = [m["t"] for m in ms if m["kind"] == "act"]
            closed = [m["t"] for m in ms if m["kind"] == "acted"]
            for i, t in enumerate(opened):
                end = min(closed[i] if i < len(closed) else float("inf"), cut)
                if end == float("inf"):
                    self.problems.append(f"{run}: an attempt of hold_limited began and never ended")
                attempts.append((t, end, run))
        return flight, attempts

    async def check_events(self, job: Job) -> None:
        events = await self.client.get(job.id).events()
        started = sum(1 for e in events if e.kind == "started")
        if started > 1:
            self.problems.append(f"{job.id}: {started} 'started' events")


async def each(items: Sequence[Any], work: Any, width: int = 16) -> None:
    gate = asyncio.Semaphore(width)

    async def one(item: Any) -> None:
        async with gate:
            await work(item)

    await asyncio.gather(*(one(i) for i in items))


@asynccontextmanager
async def worker_processes(db_url: str, n: int, tmp_path: Path, rng: random.Random) -> AsyncIterator[None]:
    """`cairn worker tests.schedule_queue_fuzz_flows` in `n` processes of their own."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(n):
            args = ["worker", "tests.schedule_queue_fuzz_flows", "--db", db_url, "--poll", "0.1", "--lease", "5"]
            args += ["--concurrency", str(rng.choice([2, 4, 8])), "--grace", "2"]
            with open(tmp_path / f"worker-{i}.log", "wb") as out:
                procs.append(
                    subprocess.Popen([sys.executable, "-m", "cairn.cli.main", *args], cwd=ROOT, stdout=out, stderr=out)
                )
        yield
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


async def test_queue_fuzz_with_workers(client: cairn.Client, db_url: str, tmp_path: Path) -> None:
    seed = SEED + 1
    rng = random.Random(seed)
    backend = db_url.split(":")[0]
    log = str(tmp_path / "marks.log")
    fuzz = QueueFuzz(client, log, seed, "")
    plan = fuzz.plan(int(200 * SCALE) or 5, int(800 * SCALE))
    in_process = 3 if backend == "sqlite" else 2
    processes = 0 if backend == "sqlite" else 2
    fuzz.label = f"{in_process} workers and {processes} worker processes on {backend}"
    async with AsyncExitStack() as stack:
        for i in range(in_process):
            c = client if i == 0 else cairn.Client(db_url)
            if i:
                stack.push_async_callback(c.close)
            worker = cairn.Worker(c, concurrency=rng.choice([2, 4, 8]), poll_interval=0.05, lease=5.0)
            await stack.enter_async_context(worker)
        if processes:
            await stack.enter_async_context(worker_processes(db_url, processes, tmp_path, rng))

            async def all_up() -> bool:
                return len(await client.store.list_workers()) >= in_process + processes

            await eventually(all_up, timeout=60, what="the worker processes up")
        ops = iter(plan)
        thinking = random.Random(seed + 7)
        await asyncio.gather(*(fuzz.operate(ops, thinking) for _ in range(4)))
        assert not fuzz.problems, verdict(fuzz.problems, seed, f"during the fuzz ({fuzz.label})")
        statuses = await fuzz.rest()
    await fuzz.check(statuses)
    assert not fuzz.problems, verdict(fuzz.problems, seed, f"at rest ({fuzz.label})")
    pids = Counter(m["pid"] for m in fuzz.marks())
    print(f"\n{fuzz.label} seed={seed}: {len(plan)} operations; {Counter(s.value for s in statuses.values())}")
    print(f"  marks by process: {sorted(pids.values(), reverse=True)}")
    print(f"  outcomes: {dict(sorted(fuzz.outcomes.items()))}")


# --- 3. schedules fired by several workers as hours pass -----------------------------------------

GRID = 300.0
"""Every tick of the fuzz's schedules falls on a multiple of five minutes; the test's clock always
stands half way between two, so that the ticks that fall due are those it moves the clock past."""
EXPRESSIONS: list[dict[str, Any]] = [
    {"every": timedelta(minutes=5)},
    {"every": timedelta(minutes=10)},
    {"every": timedelta(minutes=15)},
    {"every": timedelta(minutes=30)},
    {"every": timedelta(hours=1)},
    {"cron": "*/5 * * * *"},
    {"cron": "*/15 * * * *", "tz": "Europe/Paris"},
    {"cron": "0 * * * *", "tz": "Asia/Kolkata"},  # on the half hour, in UTC
    {"cron": "10,40 * * * *"},
    {"cron": "*/20 * * * *", "tz": "America/New_York"},
]
OVERLAPS = ["skip", "allow", "cancel_previous", "buffer_one"]
CATCHUPS = ["none", "latest", "all"]
WINDOWS = [None, None, timedelta(minutes=45), timedelta(minutes=90)]
"""No window is shorter than the longest a latest tick can be old when fired (40 minutes: see the
last jump of the fuzz), so that every schedule fires then."""


@dataclass
class Sched:
    """A schedule of the fuzz and its story: what the test did to it, in the order of its clock."""

    id: str
    overlap: str
    gated: bool
    spec: ScheduleSpec
    events: list[tuple[float, str, ScheduleSpec | None]] = field(default_factory=list)
    paused: bool = False
    deleted: bool = False
    forbidden: list[tuple[float, float]] = field(default_factory=list)
    """Spans of its clock in which it must start nothing (paused or deleted)."""
    stopped_at: float | None = None

    @property
    def active(self) -> bool:
        return not self.paused and not self.deleted


@dataclass
class Expected:
    started: set[float] = field(default_factory=set)
    """The ticks its catchup starts (each once), were nothing going on."""
    due: set[float] = field(default_factory=set)
    """Every tick that fell due while it was active (catchup or not)."""
    optional: set[float] = field(default_factory=set)
    """Ticks a firing that raced an operation on the schedule may have started, or not."""
    last_fire: list[float] = field(default_factory=list)
    """The ticks the last firing started."""
    next_fire: float | None = None


def expected(s: Sched) -> Expected:
    """What the schedule must have started, from its story: its ticks as its catchup takes them,
    at each firing after the clock moved, from the next tick after it was created, changed its
    expression or was resumed."""
    out = Expected()
    spec: ScheduleSpec | None = None
    nxt: float | None = None
    active = False
    for i, (t, kind, new) in enumerate(s.events):
        if kind in ("create", "update"):
            assert new is not None
            moved = spec is None or (spec.cron, spec.every, spec.tz) != (new.cron, new.every, new.tz)
            spec = new
            if moved:
                nxt = spec.next_after(t)
            active = active or kind == "create"
        elif kind == "resume":
            assert spec is not None
            active, nxt = True, spec.next_after(t)
        elif kind in ("pause", "delete"):
            active = False
        elif kind in ("fire", "fire?") and active:
            assert spec is not None and nxt is not None
            out.last_fire = []
            if nxt > t:
                continue
            if kind == "fire":
                out.last_fire = _picks(spec, nxt, t, out.due)
                out.started.update(out.last_fire)
            else:  # the firing raced the operation that follows: it may have fired before it, or not
                out.optional.update(_picks(spec, nxt, t, out.due))
                after = s.events[i + 1][2]
                if after is not None:  # an update that kept the expression: its catchup may have fired
                    out.optional.update(_picks(after, nxt, t, out.due))
            nxt = spec.next_after(t)
    out.next_fire = nxt
    return out


def _picks(spec: ScheduleSpec, nxt: float, t: float, due_ever: set[float]) -> list[float]:
    """The ticks a firing at `t` starts, from the next tick `nxt`, by the catchup (were nothing going on)."""
    window = spec.catchup_window if spec.catchup_window is not None else float("inf")
    due, tick = [], nxt
    while tick <= t:
        due_ever.add(tick)
        if t - tick <= window:
            due.append(tick)
        tick = spec.next_after(tick)
    return due if spec.catchup == "all" else due[-1:]


def tick_of(run_id: str) -> float:
    return datetime.fromisoformat(run_id.split("@", 1)[1]).timestamp()


class ScheduleFuzz:
    def __init__(self, client: cairn.Client, clock: SkippingClock, log: str, seed: int, label: str) -> None:
        self.client = client
        self.clock = clock
        self.log = log
        self.seed = seed
        self.label = label
        self.rng = random.Random(seed)
        self.scheds: dict[str, Sched] = {}
        self.workers: list[cairn.Worker] = []
        self.clients: list[cairn.Client] = []
        self.problems: list[str] = []
        self.ops: Counter[str] = Counter()
        self.cancel_asked: dict[str, float] = {}
        self.signalled: set[str] = set()
        self.made = 0
        self.last_op = ""
        self.held: dict[str, set[float]] = defaultdict(set)
        """Every tick each schedule was seen holding."""

    def new_spec(self, sid: str, overlap: str, gated: bool) -> cairn.Schedule:
        rng = self.rng
        return cairn.Schedule(
            sid,
            sf.scheduled,
            args=(self.log, gated),
            overlap=overlap,  # type: ignore[arg-type]
            catchup=rng.choice(CATCHUPS),  # type: ignore[arg-type]
            catchup_window=rng.choice(WINDOWS),
            register=False,
            **rng.choice(EXPRESSIONS),
        )

    async def create(self) -> None:
        sid = f"s{self.made}"
        self.made += 1
        overlap = self.rng.choice(OVERLAPS)
        gated = self.rng.random() < 0.5
        schedule = self.new_spec(sid, overlap, gated)
        t = self.clock.now()
        await self.client.create_schedule(schedule)
        self.scheds[sid] = Sched(sid, overlap, gated, schedule.spec(), [(t, "create", schedule.spec())])

    def jump_target(self, steps: int) -> float:
        return (self.clock.now() // GRID + steps) * GRID + GRID / 2

    async def jump(self, target: float) -> None:
        """Move the clock on to `target`, fire the ticks passed (on some workers at once, beside
        their own loops), and wait until every schedule has fired: its next tick is ahead. As a
        test environment's clock, it never jumps under work in hand: an attempt's lease, judged by
        this clock, would run out under it, and the attempt be run again elsewhere."""
        t0 = time.monotonic()
        await eventually(self.at_rest, timeout=30, what="every scheduled run at rest before the clock moves")
        t1 = time.monotonic()
        going_before = {r.id.split("@", 1)[0] for r in await self.going()}
        holding = {r.spec.id: r.buffered_at for r in await self.client.list_schedules()}
        self.clock.advance_to(target)
        firing = self.rng.sample(self.workers, self.rng.randint(1, len(self.workers)))
        racing = []
        if self.rng.random() < 0.4:  # an operator changes a schedule while the workers fire it
            op = self.rng.choice(["pause", "resume", "update", "update", "delete"])
            self.ops[f"{op} racing"] += 1
            racing.append(self.control(op, racing=target))
        results: list[Any] = await asyncio.gather(*(w.fire_schedules() for w in firing), *racing)
        raced_id = results[-1] if racing else None
        now = self.clock.now()
        if self.client.url.startswith("sqlite"):
            # Firings take turns there: each of those just made left every schedule's next tick
            # ahead of the clock (on PostgreSQL one may have passed over a schedule another worker
            # was firing: the wait below is for that one).
            rows = await self.client.list_schedules()
            behind = [(r.spec.id, r.next_fire_at) for r in rows if not r.paused and not (r.next_fire_at or 0) > now]
            if behind:
                self.problems.append(f"after a firing at {now}, next ticks not ahead: {behind}")

        async def fired() -> list[str] | None:
            rows = await self.client.list_schedules()
            late = [
                f"{r.spec.id} next at {r.next_fire_at}"
                for r in rows
                if not r.paused and not (r.next_fire_at or 0) > now
            ]
            return None if late else [r.spec.id for r in rows]

        try:
            await eventually(fired, timeout=30, what="every schedule fired")
        except AssertionError:
            rows = await self.client.list_schedules()
            self.problems.append(f"never fired at {now}: {[(r.spec.id, r.next_fire_at, r.paused) for r in rows]}")
            raise
        if os.environ.get("CAIRN_FUZZ_DEBUG"):
            print(f"  at rest {t1 - t0:.2f}s, fired {time.monotonic() - t1:.2f}s")
        for s in self.scheds.values():
            s.events.append((target, "fire", None))
        await self.check_firing(target, going_before, holding, raced_id)

    async def check_firing(
        self, target: float, going_before: set[str], holding: dict[str, float | None], raced: str | None
    ) -> None:
        """What a firing did to the schedules whose last run was going on: "skip" and "buffer_one"
        started nothing, and "buffer_one" holds the first tick that fell due meanwhile."""
        rows = {r.spec.id: r for r in await self.client.list_schedules()}
        fresh = [r.id for r in await self.client.list_runs(limit=10_000) if "@" in r.id and r.created_at >= target]
        for sid, s in self.scheds.items():
            if sid == raced or not s.active:
                continue
            row = rows[sid]
            held = holding.get(sid)
            if s.overlap == "skip" and row.buffered_at is not None:
                self.problems.append(f"{sid} (skip): holds the tick {row.buffered_at}")
            picked = expected(s).last_fire
            if sid in going_before and picked and s.overlap in ("skip", "buffer_one"):
                new = [r for r in fresh if r.startswith(f"{sid}@")]
                if new:
                    self.problems.append(f"{sid} ({s.overlap}): started {new} while its last run was going on")
                want = (held if held is not None else picked[0]) if s.overlap == "buffer_one" else None
                if row.buffered_at != want:
                    self.problems.append(f"{sid} ({s.overlap}): holds {row.buffered_at}, not {want} (of {picked})")
            if row.buffered_at is not None:
                self.held[sid].add(row.buffered_at)

    async def at_rest(self) -> bool:
        """Whether every scheduled run has ended or waits for its signal, not sent yet, with no attempt
        of it in flight, and no held tick is to start (what will not move by itself)."""
        for row in await self.client.list_schedules():
            ended = row.last_status is None or RunStatus(row.last_status).is_terminal
            if row.buffered_at is not None and not row.paused and ended:
                return False
        for run in await self.going():
            if run.status != RunStatus.WAITING or run.id in self.signalled:
                return False
            steps = await self.client.get(run.id).steps()
            if any(st.kind == StepKind.ACTION and not st.status.is_resolved for st in steps):
                return False
        return True

    async def going(self) -> list[RunRow]:
        return [r for r in await self.client.list_runs(limit=10_000) if "@" in r.id and not r.status.is_terminal]

    async def op(self) -> None:
        rng = self.rng
        started = time.monotonic()
        try:
            await self._op(rng)
        finally:
            if os.environ.get("CAIRN_FUZZ_DEBUG"):
                print(f"{self.last_op}: {time.monotonic() - started:.2f}s")

    async def _op(self, rng: random.Random) -> None:
        weights = {
            "jump": 30, "finish": 18, "cancel": 6, "pause": 6, "resume": 6, "update": 8, "delete": 2, "create": 3,
            "restart": 2,
        }  # fmt: skip
        (op,) = rng.choices(list(weights), list(weights.values()))
        self.ops[op] += 1
        self.last_op = op
        if op == "jump":
            await self.jump(self.jump_target(rng.choice([1, 1, 1, 2, 3, 6, 12, 24])))
        elif op == "finish":
            going = [r for r in await self.going() if r.id not in self.signalled]
            for run in rng.sample(going, min(len(going), rng.randint(1, 4))):
                await self.signal(run.id)
        elif op == "cancel":
            going = await self.going()
            if going:
                run = rng.choice(going)
                self.cancel_asked.setdefault(run.id, self.clock.now())
                with contextlib.suppress(IllegalTransition):
                    await self.client.get(run.id).cancel()
        elif op in ("pause", "resume", "update", "delete"):
            await self.control(op)
        elif op == "create":
            await self.create()
        elif op == "restart":
            i = rng.randrange(len(self.workers))
            await self.workers[i].stop(grace=10.0)  # its stamps end: no attempt handed over and run twice
            self.workers[i] = cairn.Worker(self.clients[i], poll_interval=0.05, lease=5.0)
            await self.workers[i].start()

    async def control(self, op: str, racing: float | None = None) -> str | None:
        """Pause, resume, update or delete a schedule; `racing`: while the workers fire the ticks
        due at that time, which may then have fired before the operation or not."""
        rng = self.rng
        live = [s for s in self.scheds.values() if not s.deleted]
        pool = {
            "pause": [s for s in live if not s.paused],
            "resume": [s for s in live if s.paused],
            "update": live,
            "delete": live if len(live) > 3 else [],
        }[op]
        if not pool:
            return None
        s = rng.choice(pool)
        if racing is not None and op != "resume":  # a resume moves the next tick past those due now
            s.events.append((racing, "fire?", None))
        if op == "pause":
            await self.client.pause_schedule(s.id)
            t = self.clock.now()
            s.paused, s.stopped_at = True, t
            s.events.append((t, "pause", None))
        elif op == "resume":
            t = self.clock.now()
            s.events.append((t, "resume", None))
            assert s.stopped_at is not None
            s.forbidden.append((s.stopped_at, t))
            await self.client.resume_schedule(s.id)
            s.paused = False
        elif op == "update":
            schedule = self.new_spec(s.id, s.overlap, s.gated)
            t = self.clock.now()
            await self.client.create_schedule(schedule)
            s.spec = schedule.spec()
            s.events.append((t, "update", s.spec))
        elif op == "delete":
            await self.client.delete_schedule(s.id)
            t = self.clock.now()
            s.deleted, s.stopped_at = True, t
            s.events.append((t, "delete", None))
        return s.id

    async def signal(self, run_id: str) -> None:
        self.signalled.add(run_id)
        with contextlib.suppress(IllegalTransition):
            await self.client.get(run_id).signal("go", "ok")

    async def quiesce(self) -> None:
        """Let every run end and every buffered tick start and end, firing as the workers do (a paused
        schedule keeps the tick it holds until it is resumed)."""

        async def quiet() -> bool:
            for run in await self.going():
                if run.id not in self.signalled:
                    await self.signal(run.id)
            await asyncio.gather(*(w.fire_schedules() for w in self.workers))
            rows = await self.client.list_schedules()
            return not await self.going() and all(r.buffered_at is None for r in rows if not r.paused)

        try:
            await eventually(quiet, timeout=30, what="every scheduled run ended, nothing buffered")
        except AssertionError:
            going = [(r.id, r.status.value, r.lease_owner) for r in await self.going()]
            rows = await self.client.list_schedules()
            held = [(r.spec.id, r.buffered_at, r.last_run_id, r.last_status, r.paused) for r in rows if r.buffered_at]
            raise AssertionError(
                f"seed={self.seed} ({self.label}): never quiet at {self.clock.now()}: going {going}; held {held}"
            ) from None

    async def check(self) -> None:
        marks: dict[str, dict[str, float]] = defaultdict(dict)
        for m in sf.read_log(self.log):
            if m["kind"] in marks[m["run"]]:
                self.problems.append(f"{m['run']}: marked {m['kind']} twice")
            marks[m["run"]][m["kind"]] = m["t"]
        by_sched: dict[str, list[RunRow]] = defaultdict(list)
        for r in await self.client.list_runs(limit=10_000):
            if "@" in r.id:
                by_sched[r.id.split("@", 1)[0]].append(r)
        rows = {r.spec.id: r for r in await self.client.list_schedules()}
        for sid, s in self.scheds.items():
            mine = by_sched.get(sid, [])
            self.check_ticks(s, mine)
            self.check_when(s, mine)
            if s.overlap != "allow":
                self.check_no_overlap(s, mine, marks)
            if s.deleted and sid in rows:
                self.problems.append(f"{sid}: deleted, yet listed")
            elif s.active and rows[sid].next_fire_at != expected(s).next_fire:
                self.problems.append(f"{sid}: next fires at {rows[sid].next_fire_at}, not {expected(s).next_fire}")

    def check_ticks(self, s: Sched, mine: list[RunRow]) -> None:
        """The ticks it started: each once, only ticks that fell due, as its catchup takes them
        (all of them for "allow" and "cancel_previous"), every tick it held, and at the last firing
        (nothing going on then) the first of them at least."""
        exp = expected(s)
        ticks = Counter(tick_of(r.id) for r in mine)
        started = set(ticks)
        where = f"{s.id} ({s.overlap}, {s.spec.expression()}, catchup {s.spec.catchup})"
        if any(n > 1 for n in ticks.values()):
            self.problems.append(f"{where}: a tick started twice: {ticks}")
        if not started <= exp.due:
            self.problems.append(f"{where}: started ticks that never fell due: {sorted(started - exp.due)}")
        extra = started - exp.started - exp.optional
        if extra:
            self.problems.append(f"{where}: started {len(extra)} tick(s) its catchup drops: {sorted(extra)[:5]}")
        if s.active and not self.held[s.id] <= started:
            self.problems.append(f"{where}: held {sorted(self.held[s.id] - started)}, never started")
        if s.overlap in ("allow", "cancel_previous") and exp.started - started:
            missing = sorted(exp.started - started)
            self.problems.append(f"{where}: {len(missing)} tick(s) never started: {missing[:5]}")
        # The first tick of the last firing starts, and the others as its overlap says.
        last = {"skip": 1, "buffer_one": 2}.get(s.overlap, len(exp.last_fire))
        if s.active and not set(exp.last_fire[:last]) <= started:
            self.problems.append(
                f"{where}: the last firing, with nothing going on, started none of {exp.last_fire}; "
                f"started {sorted(started)[-5:]}; story {s.events[-6:]}"
            )

    def check_when(self, s: Sched, mine: list[RunRow]) -> None:
        """No run before its tick, nor while its schedule was paused or after it was deleted."""
        spans = list(s.forbidden)
        if s.stopped_at is not None and not s.active:
            spans.append((s.stopped_at, float("inf")))
        for r in mine:
            tick = tick_of(r.id)
            if r.created_at < tick:
                self.problems.append(f"{r.id}: started {tick - r.created_at:.1f}s early")
            for a, b in spans:
                if a < r.created_at < b:
                    self.problems.append(f"{r.id}: started at {r.created_at}, while paused or deleted ({a}..{b})")

    def check_no_overlap(self, s: Sched, mine: list[RunRow], marks: dict[str, dict[str, float]]) -> None:
        """Never two runs at once: each from its first mark to its last, or its cancel."""
        stretches = []
        for r in mine:
            m = marks.get(r.id, {})
            if "begin" in m:
                end = m.get("end", float("inf"))
                if r.status == RunStatus.CANCELLED and r.completed_at is not None:
                    end = min(end, r.completed_at)
                stretches.append((m["begin"], end, r.id))
        most, at, ids = peak(stretches)
        if most > 1:
            self.problems.append(f"{s.id} ({s.overlap}): {most} runs at once at {at}: {ids}")


async def test_schedule_fuzz(client: cairn.Client, db_url: str, tmp_path: Path) -> None:
    seed = SEED + 2
    backend = db_url.split(":")[0]
    clock = SkippingClock()
    clock.advance_to((clock.now() // GRID + 1) * GRID + GRID / 2)
    fuzz = ScheduleFuzz(client, clock, str(tmp_path / "stamps.log"), seed, f"three workers on {backend}")
    fuzz.clients = [client, cairn.Client(db_url), cairn.Client(db_url)]
    sf.CLOCK[0] = clock
    try:
        with clocked(clock, *fuzz.clients):
            for c in fuzz.clients:
                w = cairn.Worker(c, poll_interval=0.05, lease=5.0)
                await w.start()
                fuzz.workers.append(w)
            try:
                for _ in range(6):
                    await fuzz.create()
                for _ in range(int(200 * SCALE)):
                    await fuzz.op()
                # Everything ends; then, with nothing going on, every schedule fires again.
                await fuzz.quiesce()
                await fuzz.jump((clock.now() // 3600 + 2) * 3600 + GRID / 2)
                await fuzz.quiesce()
            finally:
                for w in fuzz.workers:
                    await w.stop(grace=1.0)
            await fuzz.check()
    finally:
        sf.CLOCK[0] = SYSTEM
        for c in fuzz.clients[1:]:
            await c.close()
    assert not fuzz.problems, verdict(fuzz.problems, seed, fuzz.label)
    runs = [r for r in await client.list_runs(limit=10_000) if "@" in r.id]
    print(f"\n{fuzz.label} seed={seed}: {dict(fuzz.ops)}; {len(runs)} runs of {len(fuzz.scheds)} schedules")


# --- the interleavings the fuzz found, forced ------------------------------------------------------

SOLO = cairn.Queue("fz-solo", concurrency=1, register=False)
KEYED_ONE = cairn.Queue("fz-key-one", per_key=1, register=False)


async def start_in(client: cairn.Client, queue: str, label: str, plan: list[Any] | None = None, **place: Any) -> str:
    handle = await client.start(sf.job, "/dev/null", label, plan or [], id=label, queue=queue, **place)
    assert handle.created
    return handle.id


async def claim(client: cairn.Client, worker: str, room: int = 4) -> list[str]:
    work = await client.store.claim_work(worker, [JOB], [], None, room, 0, 60.0)
    return sorted(r.run.id for r in work.runs)


async def test_a_key_at_its_limit_does_not_hold_back_the_keys_behind_it(client: cairn.Client) -> None:
    """per_key=1, one customer's 40 runs queued ahead of another's: the other's run starts at once
    beside the first customer's (it waited until all but a few of the 40 had run: a claim read only
    `room * 4` runs ahead, all of a key at its limit, and took none)."""
    await client.store.upsert_queues([KEYED_ONE.spec], "test")
    for i in range(40):
        await start_in(client, "fz-key-one", f"a{i:02}", key="a")
    await start_in(client, "fz-key-one", "b0", key="b")
    assert await claim(client, "w1", room=2) == ["a00", "b0"]
    assert await claim(client, "w2", room=2) == []  # both keys at their limit
    await client.get("a00").cancel()
    assert await claim(client, "w2", room=2) == ["a01"]


async def test_a_run_paused_while_queued_lets_the_others_start(client: cairn.Client) -> None:
    """concurrency=1: a run paused before its turn no longer waits in the queue, and the one behind
    it starts when the slot frees."""
    await client.store.upsert_queues([SOLO.spec], "test")
    for label in ("first", "paused", "next"):
        await start_in(client, "fz-solo", label)
    assert await claim(client, "w1") == ["first"]
    assert await client.get("paused").pause() == RunStatus.PAUSED
    await client.get("first").cancel()
    assert await claim(client, "w1") == ["next"]  # the paused run held the slot: nothing started


async def test_a_run_resumed_after_a_pause_while_queued_waits_for_its_slot(client: cairn.Client) -> None:
    """concurrency=1: a run paused while queued, then resumed, waits for the slot like any other."""
    await client.store.upsert_queues([SOLO.spec], "test")
    for label in ("first", "second"):
        await start_in(client, "fz-solo", label)
    assert await claim(client, "w1") == ["first"]
    await client.get("second").pause()
    await client.get("second").resume()
    assert await claim(client, "w2") == []  # "first" holds the one slot (it took "second")


async def test_a_failed_run_retried_waits_for_its_slot(client: cairn.Client, tmp_path: Path) -> None:
    """concurrency=1: a run failed, the next took the slot; the failed run's retry waits for it."""
    await client.store.upsert_queues([SOLO.spec], "test")
    log = str(tmp_path / "marks.log")
    failing = await client.start(sf.job, log, "failing", [("flaky", 0)], id="failing", queue="fz-solo")
    async with cairn.Worker(client, poll_interval=0.05):
        await eventually(lambda: status_is(failing, RunStatus.FAILED), what="the first run failed")
        holding = await client.start(sf.job, log, "holding", [("gate", 0)], id="holding", queue="fz-solo")
        await eventually(lambda: status_is(holding, RunStatus.WAITING), what="the next run holding the slot")
    Path(log + ".fixed").touch()
    assert await failing.retry() == RunStatus.PENDING  # it waits for the slot "holding" took
    assert await claim(client, "w2") == []


async def test_a_tick_due_while_another_worker_was_up_is_late_not_missed(client: cairn.Client, db_url: str) -> None:
    """catchup="none" drops the ticks that fell due while no worker was up; one that fell due while
    a worker was up (it went on heartbeating, in its shutdown grace) runs, late, whoever fires it."""
    from tests import flows

    await client.create_schedule("while-up", flows.tick, every=timedelta(hours=1), args=("u",), catchup="none")
    now = await client.store.now()
    old = WorkerInfo("old", "host", 1, "*", now - 600, now, 0, workflows=("tests.flows.tick",))
    await client.store.heartbeat(old, 30.0)  # up ten minutes, and still
    raw_sql(db_url, "UPDATE cairn_schedules SET next_fire_at = ?", now - 30)  # due half a minute ago
    await client.store.fire_schedules(["tests.flows.tick"], [], now - 1)  # by a worker up for a second
    assert [r.id.split("@")[0] for r in await client.list_runs()] == ["while-up"]


@pytest.mark.parametrize("other", ["stopped before the tick", "started after it", "serves another workflow"])
async def test_a_tick_due_while_no_worker_of_its_workflow_was_up_is_missed(
    client: cairn.Client, db_url: str, other: str
) -> None:
    """The other side of the test above: a worker that was not up when the tick fell due (its last
    heartbeat before it, or its start after it), or that does not run the schedule's workflow,
    does not make the tick late; catchup="none" drops it."""
    from tests import flows

    await client.create_schedule("while-down", flows.tick, every=timedelta(hours=1), args=("d",), catchup="none")
    now = await client.store.now()
    started, beat, serves = {
        "stopped before the tick": (now - 600, now - 60, ("tests.flows.tick",)),
        "started after it": (now - 20, now, ("tests.flows.tick",)),
        "serves another workflow": (now - 600, now, ("tests.flows.other",)),
    }[other]
    await client.store.heartbeat(WorkerInfo("old", "host", 1, "*", started, beat, 0, workflows=serves), 30.0)
    raw_sql(db_url, "UPDATE cairn_workers SET heartbeat_at = ?", beat)
    raw_sql(db_url, "UPDATE cairn_schedules SET next_fire_at = ?", now - 30)
    await client.store.fire_schedules(["tests.flows.tick"], [], now - 1)
    assert await client.list_runs() == []
    (schedule,) = await client.store.list_schedules()
    assert schedule.next_fire_at is not None and schedule.next_fire_at > now


def walked_due_ticks(spec: ScheduleSpec, next_fire: float, now: float, up_since: float | None) -> list[float]:
    """`ScheduleSpec.due_ticks` as it was written first: tick by tick from `next_fire` (the reference)."""
    ticks: list[float] = []
    window = spec.catchup_window if spec.catchup_window is not None else float("inf")
    t = next_fire
    while t <= now:
        if now - t <= window:
            ticks.append(t)
            if len(ticks) > MAX_CATCHUP_TICKS:
                ticks.pop(0)
        t = spec.next_after(t)
    if not ticks or spec.catchup == "all":
        return ticks
    latest = ticks[-1]
    if spec.catchup == "none" and (latest < up_since if up_since is not None else now - latest > NONE_GRACE):
        return []
    return [latest]


def test_due_ticks_are_those_of_the_walk_tick_by_tick() -> None:
    """The ticks a firing starts, reached directly, are those of a walk from the next tick, tick by
    tick: for intervals and cron expressions (across daylight-saving changes), windows, every
    catchup, and more missed ticks than are ever caught up."""
    rng = random.Random(SEED + 3)
    crons = [("30 2 * * *", "Europe/Paris"), ("30 1 * * *", "America/New_York"), ("*/7 * * * *", "UTC")]
    crons += [("0 * * * *", "Asia/Kolkata"), ("15,45 */2 * * *", "Europe/Paris"), ("0 0 * * 1", "UTC")]
    changes = [datetime(2025, m, d, tzinfo=UTC).timestamp() for m, d in ((3, 9), (3, 30), (10, 26), (11, 2))]
    for case in range(int(1000 * SCALE)):
        every: float | None = rng.choice([None, 0.25, 1.0, 1 / 3, 7.5, 60.0, 300.0, 3600.0, 0.1])
        cron, tz = rng.choice(crons) if every is None else (None, "UTC")
        window = rng.choice([None, None, 0.5, 30.0, 3600.0, 86400.0])
        catchup = rng.choice(["none", "latest", "all"])
        spec = ScheduleSpec(f"c{case}", "w", "default", cron, every, tz, "{}", "allow", catchup, window)
        base = rng.choice(changes) + rng.uniform(-2 * 86400, 2 * 86400)
        step = every if every is not None else 3600.0
        next_fire = spec.next_after(base) if rng.random() < 0.8 else base  # a raw update may leave any time
        now = next_fire + rng.choice([-1.0, 0.0, rng.uniform(0, 20), rng.uniform(0, 1300)]) * step
        up_since = rng.choice([None, now - rng.uniform(0, 10 * step)])
        assert spec.due_ticks(next_fire, now, up_since) == walked_due_ticks(spec, next_fire, now, up_since), (
            case,
            spec,
            next_fire,
            now,
            up_since,
        )


async def test_a_frequent_schedule_fires_at_once_after_a_long_downtime(client: cairn.Client, db_url: str) -> None:
    """A schedule every 10 ms, after two days without a worker: the firing passed over its 17
    million missed ticks one by one (seven seconds holding the firing transaction, SQLite's one
    writer; days of downtime of one a millisecond held it for hours) to start the latest."""
    from tests import flows

    every = timedelta(milliseconds=10)
    await client.create_schedule("busy", flows.tick, every=every, args=("b",), catchup="latest", overlap="allow")
    now = await client.store.now()
    raw_sql(db_url, "UPDATE cairn_schedules SET next_fire_at = ?", now - 2 * 86400)
    began = time.monotonic()
    await client.store.fire_schedules(["tests.flows.tick"], [])
    assert time.monotonic() - began < 1.5
    (run,) = await client.list_runs()
    assert now - 0.1 < tick_of(run.id) <= now + 0.5  # the latest tick, none of the others
