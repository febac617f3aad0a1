"""The worker: claims activations and action attempts, runs them, heartbeats, and hands over on stop.

The main loop has one shape: wait for whichever comes first of a wake-up (a commit in this process,
or in another: NOTIFY on PostgreSQL, the data_version watcher on SQLite), the next due time
(timers, retries) capped by the safety poll, or stop; then claim as much work as there is free
capacity for. Side tasks (heartbeat) are supervised: if one dies, the worker stops loudly rather
than running without leases.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from cairn.names import check_name
from cairn.policies import parse_duration
from cairn.queues import declared
from cairn.records import NewRun, RunRow
from cairn.registry import Registry, WorkflowDef, registry
from cairn.schedules import Schedule
from cairn.store.base import SCHEDULES, WORK, call_soon_here
from cairn.store.open import open_store
from cairn.store.protocol import ActionClaim, ActionInfo, RunClaim, Store, WorkerInfo, WorkflowInfo
from cairn.types import RunStatus
from cairn.worker import dispatch
from cairn.worker.actions import ActionExecutor
from cairn.worker.defaults import DEFAULT_CONCURRENCY
from cairn.worker.runner import InFlight, Runner

T = TypeVar("T")

log = logging.getLogger("cairn.worker")

PRUNE_BATCH = 500
PRUNE_BATCHES = 4
"""Retention deletes at most this many batches of finished runs per heartbeat of the worker that does it."""


class Worker:
    """Runs workflows and actions registered in this process against one database.

    `async with cairn.Worker(client):` embeds one in an app or a test; `cairn worker MODULE` runs
    one as a process.
    """

    def __init__(
        self,
        client: Any = None,
        *,
        url: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        queues: Sequence[str] | None = None,
        lease: float = 10.0,
        poll_interval: float | None = None,
        registry: Registry = registry,
        cache_size: int = 1000,
        retention: timedelta | float | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if lease <= 0 or (poll_interval is not None and poll_interval <= 0):
            raise ValueError("lease and poll_interval must be positive seconds")
        self.store: Store = client.store if client is not None else open_store(url)
        self.retention = _retention(retention, client)
        """Finished runs older than this are deleted by the longest-running worker; None: kept."""
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.queues = [check_name(q, "queue name") for q in queues] if queues else None
        self.lease = lease
        # The safety poll. PostgreSQL wakes workers with NOTIFY, so it is only a backstop there.
        # SQLite's watcher wakes an idle worker when another process commits, but not one busy
        # committing itself (it cannot tell the two apart), so there the poll stays short.
        self.poll_interval = poll_interval or (0.1 if self.store.url.startswith("sqlite") else 1.0)
        self.registry = registry
        self._runner = Runner(self.store, registry, self.id, lease, cache_size, self.queues)
        self._executor = ActionExecutor(self.store, registry, concurrency)
        self._action_slots = Slots(concurrency)
        self._run_slots = Slots(concurrency)
        self._runner.reserve_slot = self._action_slots.take
        self._runner.release_slot = self._action_slots.release
        self._runner.start_action = self._start_action
        self._tasks: set[asyncio.Task[Any]] = set()
        self._attempts: InFlight[tuple[str, int]] = InFlight()
        """Attempts running here (run id, step): the heartbeat extends exactly their leases."""
        self._wakeup = asyncio.Event()
        self._starved = False
        self._admitting = 0
        """New runs taken and not yet activated: their first actions will take action slots."""
        self._runs_actions = False
        """Whether this worker runs actions (registered here when it started), so new runs need room."""
        self._stopping = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._side: list[asyncio.Task[None]] = []
        self._unsubscribe: Any = None
        self._started_at = time.time()
        self._serves: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        """The workflows and actions this worker runs (read from the registry when it starts)."""
        self._reported: dict[str, str] = {}
        self._declared: tuple[Schedule, ...] = ()
        """Schedules declared in code for the workflows this worker serves: it upserts and fires them."""
        """Runs reported as unserved, with the reason (see `_report_unserved`)."""
        self.failure: BaseException | None = None
        self.on_idle: Callable[[float], float] | None = None
        """Called when this worker has nothing in hand and its next work falls due in the given
        seconds; returns how long to wait instead. A test environment skips its clock ahead there."""

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        loop = asyncio.get_running_loop()

        def wake(_detail: object) -> None:
            call_soon_here(loop, self._wakeup.set)

        self._unsubscribe = self.store.subscribe_key(WORK, wake)
        self._serves = (tuple(w.id for w in self.registry.workflows()), tuple(a.id for a in self.registry.actions()))
        dispatch.register(self.store, self)
        await self.store.register_workflows(
            [WorkflowInfo(w.id, w.description, _schema(w), w.queue) for w in self.registry.workflows()]
        )
        await self.store.register_actions(
            [ActionInfo(a.id, a.name, a.description, a.queue) for a in self.registry.actions()]
        )
        served = set(self._serves[0])
        self._declared = tuple(s for s in self.registry.schedules() if s.workflow_id in served)
        await self.store.upsert_schedules([s.spec() for s in self._declared], "code")
        await self._upsert_queues()
        await self.store.heartbeat(self._info(), self.lease)
        self._runs_actions = bool(self.registry.actions())
        self._main = asyncio.create_task(self._loop(), name=f"cairn-worker-{self.id}")
        self._side = [asyncio.create_task(self._heartbeat(), name="cairn-heartbeat")]
        if self._serves[0]:
            self._side.append(asyncio.create_task(self._fire_schedules(), name="cairn-schedules"))
        for task in (self._main, *self._side):
            task.add_done_callback(self._supervise)

    def _supervise(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stopping.is_set():
            return
        exc = task.exception()
        if exc is not None:
            log.error("worker task %s died: %r; stopping the worker", task.get_name(), exc)
            self.failure = exc
            self._stopping.set()

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming, let running work finish for `grace` seconds, then hand the rest over."""
        self._stopping.set()
        self._wakeup.set()
        dispatch.unregister(self.store, self)
        if self._main is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._main
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for t in self._side:
            t.cancel()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._runner.cache.clear()
        self._executor.shutdown()
        with contextlib.suppress(Exception):
            await self.store.remove_worker(self.id)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def run(self) -> None:
        """Run until cancelled or stopped (the CLI's `cairn worker`)."""
        await self.start()
        await self.serve_until_stopped()

    async def serve_until_stopped(self) -> None:
        """After `start()` (which registers this worker's workflows: the ready point), serve until stopped."""
        try:
            await self._stopping.wait()
        finally:
            await self.stop()
        if self.failure is not None:
            raise self.failure

    def request_stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    # --- the loop -------------------------------------------------------------------------------

    async def _loop(self) -> None:
        workflows = [w.id for w in self.registry.workflows()]
        actions = [a.id for a in self.registry.actions()]
        delay = 0.05
        while not self._stopping.is_set():
            self._wakeup.clear()
            try:
                due_in = await self._claim(workflows, actions)
                delay = 0.05
            except Exception as exc:  # database down or busy: back off, never die of it
                log.warning("claiming work failed (%s); retrying in %.2fs", exc, delay)
                await self._wait(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self._starved:
                # Capacity cut the claim short: more is waiting. Claim again while there is room
                # (action slots that new runs taken already will not use); when there is none, the
                # next slot to free up wakes us (due work would only spin).
                if self._run_slots.free and self._action_slots.free > self._admitting:
                    continue
                due_in = None
            # Otherwise all that was claimable has been taken, and new work brings a wake-up (set
            # since the clear above); timers and retries fall due at `due_in`.
            if due_in is not None and self.on_idle is not None and not self._tasks and not self._wakeup.is_set():
                due_in = self.on_idle(due_in)
            poll = self._safety_poll()
            await self._wait(poll if due_in is None else min(poll, due_in + 0.001))

    def _safety_poll(self) -> float:
        """The safety poll: `poll_interval` while work is in hand; idle, at most a quarter lease and
        1 s (on SQLite the commit watcher wakes an idle worker, and the short poll, which covers
        commits of other processes made while this one commits too, cost an idle worker 2% of a
        core)."""
        if self._tasks:
            return self.poll_interval
        return max(self.poll_interval, min(1.0, self.lease / 4))

    async def _claim(self, workflows: list[str], actions: list[str]) -> float | None:
        """Claim as much as there is capacity for; seconds until the next due work."""
        free_runs, free_actions = self._run_slots.free, self._action_slots.free
        new_runs = self._new_run_room(free_runs)
        work = await self.store.claim_work(
            self.id,
            workflows,
            actions,
            self.queues,
            free_runs,
            free_actions,
            self.lease,
            self._runner.cache.expected_tokens(),
            self._runner.busy(),
            new_runs,
        )
        for claim in work.runs:
            self._run_slots.take()
            self._spawn(self._runner.claimed(claim), self._run_releaser(claim.run.status == RunStatus.PENDING))
        for attempt, memory in work.actions:
            self._action_slots.take()
            self._start_action(attempt, memory)
        new = sum(1 for claim in work.runs if claim.run.status == RunStatus.PENDING)
        runs_full = bool(workflows) and (len(work.runs) == free_runs or new == new_runs)
        actions_full = bool(actions) and len(work.actions) == free_actions
        self._starved = runs_full or actions_full
        return work.next_due_in

    def _new_run_room(self, free_runs: int) -> int:
        """How many new runs to take: no more than there are action slots free for their first
        actions (less those that new runs taken earlier and not yet activated will take), when this
        worker runs actions. A new run taken without one would have its first action scheduled for
        any worker to claim; under load another process takes it, records its result apart, and
        this worker claims the run again to go on: three transactions' worth of work where an
        action born here costs none. Runs under way are taken whenever a run slot is free, so that
        timers, signals and results keep moving while every action slot is busy."""
        if not self._runs_actions:
            return free_runs
        return max(0, min(free_runs, self._action_slots.free - self._admitting))

    def _run_releaser(self, new: bool) -> Callable[[], None]:
        """Gives the run slot of an activation back when it ends; a new run's activation also
        stops counting against the action slots (its first actions have taken theirs by then)."""
        release = self._releaser(self._run_slots)
        if not new:
            return release
        self._admitting += 1
        counted = True

        def admitted() -> None:
            nonlocal counted
            if counted:
                counted = False
                self._admitting -= 1
            release()

        return admitted

    # --- runs started in this process (a LocalDispatcher: see cairn.worker.dispatch) ---------------

    async def start_run(self, run: NewRun) -> tuple[RunRow, bool] | None:
        """Take a run started in this process: create it leased to this worker (one statement,
        which is all `start()` waits for) and activate it here from memory, with no claim. If this
        process dies first, the lease runs out and any worker takes the run over."""
        if not self._reserve_run(run.workflow, run.queue):
            return None
        release = self._run_releaser(new=True)
        now = self._runner.now()
        with self._runner.expecting(run.id):  # this worker's own claims leave it alone meanwhile
            try:
                existing = await self.store.insert_run(run, self.id, self.lease, now)
            except BaseException:
                release()
                raise
            if existing is not None:
                release()
                return existing, False
            born = run.born(self.id, now)
            if run.trace is not None:  # tracing on: the run's spans join the starter's trace
                self._runner.traces.remember(run.id, run.workflow, run.trace)
            self._spawn(self._runner.claimed(RunClaim(born, 1, [], [], False, now)), release)
        return born, True

    def _reserve_run(self, workflow: str, queue: str) -> bool:
        """Take a run started in this process at birth when it is ours to run and we have room (a
        run slot, and an action slot for its first action), and nothing is waiting for us in the
        database (our last claim was not cut short), so that a new run never overtakes a backlog."""
        if self._main is None or self._stopping.is_set() or self._starved:
            return False
        if asyncio.get_running_loop() is not self._main.get_loop():
            return False  # started from another thread's loop (a blocking client): claimed as usual
        if self.registry.workflow(workflow) is None:
            return False
        if self.queues is not None and queue not in self.queues:
            return False
        if queue in self._runner.limited:  # its queue's claim starts it, within the limits
            return False
        if self._new_run_room(self._run_slots.free) < 1:
            return False
        return self._run_slots.take()

    def _start_action(self, claim: ActionClaim, memory: dict[str, str]) -> None:
        """Run an attempt whose slot is already taken; its result goes with the run's next activation
        when this worker holds the run, else in a completion transaction of its own."""
        # The slot is for running the action: it is given back as soon as the action has run, not
        # when its result is recorded (which waits for the run's next commit). Held until then, it
        # would keep that very commit from starting the run's next action here.
        release = self._releaser(self._action_slots)
        attempt = self._executor.execute(claim, memory, record=self._runner.record, ran=release)
        self._spawn(self._attempts.track((claim.run_id, claim.seq), attempt), release)

    async def _wait(self, timeout: float) -> None:
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()

    def _spawn(self, coro: Coroutine[Any, Any, T], release: Callable[[], None]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[T]) -> None:
            self._tasks.discard(t)
            release()
            if not t.cancelled() and t.exception() is not None:
                log.error("work item failed: %r", t.exception())

        task.add_done_callback(done)
        return task

    def _releaser(self, slots: Slots) -> Callable[[], None]:
        """Gives one slot back to `slots` on its first call (later calls do nothing)."""
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            slots.release()
            # The last claim was cut short by capacity, or a limited queue may have a slot again.
            if self._starved or self._runner.limited:
                self._wakeup.set()

        return release

    async def _heartbeat(self) -> None:
        while not self._stopping.is_set():
            await self._wait_stop(self.lease / 3)
            if self._stopping.is_set():
                return
            try:
                await self.store.heartbeat(self._info(), self.lease, self._runner.held(), self._attempts.keys())
                await self._refresh_queues()
                await self._housekeeping()
            except Exception as exc:
                log.warning("heartbeat failed (%s); will retry", exc)

    async def _fire_schedules(self) -> None:
        """Start the runs of due schedule ticks, waking at the next tick (at least every second, and
        at once when a schedule is declared, paused or resumed anywhere)."""
        news = asyncio.Event()
        loop = asyncio.get_running_loop()
        unsubscribe = self.store.subscribe_key(SCHEDULES, lambda _d: call_soon_here(loop, news.set))
        declared = [s.id for s in self._declared]
        try:
            while not self._stopping.is_set():
                news.clear()
                try:
                    due_in = await self.store.fire_schedules(self._serves[0], declared)
                except Exception as exc:
                    log.warning("firing schedules failed (%s); will retry", exc)
                    due_in = 1.0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(1.0, due_in if due_in is not None else 1.0) + 0.001):
                        await news.wait()
        finally:
            unsubscribe()

    async def _wait_stop(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._stopping.wait()

    def _info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=",".join(self.queues) if self.queues else "*",
            started_at=self._started_at,
            heartbeat_at=time.time(),
            in_flight=len(self._tasks),
            workflows=self._serves[0],
            actions=self._serves[1],
            schedules=tuple(s.id for s in self._declared),
        )

    async def _upsert_queues(self) -> None:
        """Store the limits of the queues this code declares, so every worker and every claim reads
        the same ones; a queue another worker declared with other limits takes ours (logged)."""
        specs = {q.name: q.spec for q in self.registry.queues()}
        used = {w.queue for w in self.registry.workflows()} | {a.queue for a in self.registry.actions()}
        for name in used - set(specs):
            spec = declared(name)
            if spec is not None:
                specs[name] = spec
        for name in await self.store.upsert_queues(list(specs.values()), self.id):
            log.warning(
                "queue %s was declared elsewhere with other limits; now %s (the last declaration wins)",
                name,
                specs[name].describe(),
            )
        await self._refresh_queues()

    async def _refresh_queues(self) -> None:
        """Which queues have limits (declared anywhere): their work is never born running or
        claimed at birth here, only by the queue's claim."""
        queues = await self.store.list_queues(counts=False)
        self._runner.limited = frozenset(q.spec.name for q in queues if q.spec.limited)

    async def _housekeeping(self) -> None:
        """Retention (every worker given one), and what one worker does for all, the longest
        running: reporting unserved work."""
        if self.retention is not None:
            before = await self.store.now() - self.retention.total_seconds()
            for _ in range(PRUNE_BATCHES):  # a few small batches a heartbeat: never a long lock
                if await self.store.prune(before, None, PRUNE_BATCH) < PRUNE_BATCH:
                    break
        workers = await self.store.list_workers()
        if not workers or min(workers, key=lambda w: (w.started_at, w.id)).id != self.id:
            self._reported.clear()
            return
        await self._report_unserved()

    async def _report_unserved(self) -> None:
        """Say, once, of each run with work due that no live worker can do, why (an event on the
        run and a warning here)."""
        unserved = await self.store.unserved()
        for run_id, reason in unserved.items():
            if self._reported.get(run_id) != reason:
                log.warning("run %s cannot progress: %s", run_id, reason)
                await self.store.add_event(run_id, "blocked", reason=reason)
        self._reported = unserved

    @property
    def in_flight(self) -> int:
        """Activations and action attempts this worker has in hand now (0: idle)."""
        return len(self._tasks)

    def wake(self) -> None:
        """Claim again now (e.g. after a test environment moved its clock on)."""
        self._wakeup.set()

    @property
    def cached_runs(self) -> int:
        return len(self._runner.cache)


class Slots:
    """Capacity counted in slots: taken before work is claimed (or born), given back when it ends."""

    def __init__(self, size: int) -> None:
        self.free = size

    def take(self) -> bool:
        if self.free <= 0:
            return False
        self.free -= 1
        return True

    def release(self) -> None:
        self.free += 1


def _retention(given: timedelta | float | None, client: Any) -> timedelta | None:
    """The worker's own retention, else its client's, else CAIRN_RETENTION, else None (keep all)."""
    if given is not None:
        return given if isinstance(given, timedelta) else timedelta(seconds=given)
    if client is not None:
        kept: timedelta | None = client.retention
        return kept
    env = os.environ.get("CAIRN_RETENTION")
    return parse_duration(env, "CAIRN_RETENTION") if env else None


def _schema(w: WorkflowDef) -> str:
    """The input schema as stored: its keys in the order given (parameters in signature order)."""
    return json.dumps(w.input_schema())
