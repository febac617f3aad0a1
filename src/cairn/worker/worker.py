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
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from cairn import forks
from cairn.errors import DatabaseUnusable
from cairn.names import check_name
from cairn.policies import retention as retention_of
from cairn.policies import seconds as as_seconds
from cairn.queues import declared
from cairn.records import NewRun, RunRow
from cairn.registry import Registry, WorkflowDef, registry
from cairn.schedules import Schedule
from cairn.serialization import max_payload_bytes
from cairn.store.base import CANCELLED, LEFT_BY, QUEUES, SCHEDULES, WORK, Started, call_soon_here
from cairn.store.open import open_store
from cairn.store.protocol import ActionClaim, ActionInfo, RunClaim, Store, WorkerInfo, WorkflowInfo
from cairn.types import RunStatus
from cairn.worker import dispatch
from cairn.worker.actions import ActionExecutor
from cairn.worker.defaults import DEFAULT_CONCURRENCY, DEFAULT_DEADLOCK_TIMEOUT, DEFAULT_GRACE
from cairn.worker.isolate import refuse_while_a_child_imports_main
from cairn.worker.runner import InFlight, Runner
from cairn.worker.watchdog import Watchdog

T = TypeVar("T")

log = logging.getLogger("cairn.worker")

STOP_WAIT = 10.0
"""Seconds a stop waits for cancelled work to unwind (an isolated action's process to be reaped)."""

PRUNE_BATCH = 500
PRUNE_BATCHES = 4
"""Retention deletes at most this many batches of finished runs per heartbeat of the worker that does it."""


class Worker:
    """Runs workflows and actions registered in this process against one database.

    `async with cairn.Worker(client):` embeds one in an app or a test; `cairn worker MODULE` runs
    one as a process. Leaving the block (or `stop()`) stops it gracefully: running work gets
    `grace` seconds (30 by default) to finish before what can be stopped is handed over.

    `deadlock_timeout` (seconds or a timedelta, 2 by default; None turns it off): an async
    workflow's code that runs longer than this without awaiting blocks the whole worker, so it is
    interrupted and its run paused with WorkflowDeadlock (see `cairn.worker.watchdog`).
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
        grace: timedelta | float = DEFAULT_GRACE,
        deadlock_timeout: timedelta | float | None = DEFAULT_DEADLOCK_TIMEOUT,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        for name, value in (("lease", lease), ("poll_interval", poll_interval)):
            if value is not None and not (isinstance(value, int | float) and 0 < value < math.inf):
                raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
        if isinstance(queues, str):  # a str is a Sequence[str]: "billing" served b, i, l, l, i, n, g
            raise TypeError(f"queues must be a list of queue names, got the string {queues!r}; write [{queues!r}]")
        self.grace = _grace(grace)
        """Seconds a stopping worker lets running work finish before it stops what it can (see `stop`)."""
        self.deadlock_timeout = _deadlock_timeout(deadlock_timeout)
        """Seconds async workflow code may run without awaiting before it is interrupted; None: never."""
        self.watchdog = Watchdog(self.deadlock_timeout) if self.deadlock_timeout is not None else None
        """The thread that interrupts it (started with the worker), or None."""
        self.store: Store = client.store if client is not None else open_store(url)
        self.retention = _retention(retention, client)
        max_payload_bytes()  # a bad CAIRN_MAX_PAYLOAD_BYTES stops the worker at once, naming it
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
        self._runner.reserve_slot = self._reserve_action_slot
        self._runner.release_slot = self._action_slots.release
        self._runner.start_action = self._start_action
        self._runner.reserve_run = self._reserve_born
        self._runner.start_run = self._start_born
        self._runner.commit_sent = lambda: self._claims
        self._runner.landed = self._landed
        self._runner.watch = self.watchdog.run if self.watchdog is not None else None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._attempts: InFlight[tuple[str, int]] = InFlight()
        """Attempts running here (run id, step): the heartbeat extends exactly their leases."""
        self._attempt_tasks: dict[asyncio.Task[Any], tuple[str, int]] = {}
        self._passed_over: set[str] = set()
        """Runs busy here at the last claim and due then, which it could not take (see `_claim`)."""
        self._passed_over_by = 0
        """The claim that passed over `_passed_over` (its number in `_claims`)."""
        self._claims = 0
        """Claims begun so far: a commit notes how many as it goes out (see `_landed`)."""
        self._landed_in_claim: set[str] | None = None
        """While a claim is on its way: the runs a commit sent after it began has landed for."""
        self._drained = asyncio.Event()
        """Set whenever no work item is in hand (a stopping worker waits for it)."""
        self._drained.set()
        self._wakeup = asyncio.Event()
        self._starved = False
        self._retry_in: float | None = None
        """When the last claim asked to look again at limited queues it found held back (a poll)."""
        self._admitting = 0
        """New runs taken and not yet activated: their first actions will take action slots."""
        self._runs_actions = False
        """Whether this worker runs actions (registered here when it started), so new runs need room."""
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        """A second request to stop: stop at once, abandoning what cannot be stopped."""
        self._closed = asyncio.Event()
        """Set when the worker has let go of everything: the heartbeat ends only then."""
        self._beat_now = asyncio.Event()
        """Set when the next heartbeat is not to wait (closing; a run cancelled while attempts run;
        a queue's limits declared)."""
        self._stop_begun = False
        self._started_in: int | None = None
        """The process (as `cairn.forks` counts them) that started it: a forked child's stop leaves it be."""
        self.abandoned = 0
        """Attempts whose thread was still running when a forced stop gave up on them."""
        self._main: asyncio.Task[None] | None = None
        self._side: list[asyncio.Task[None]] = []
        self._unsubscribe: Any = None
        self._unsubscribe_news: list[Callable[[], None]] = []
        self._started_at = time.time()
        self._serves: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())
        """The workflows and actions this worker runs (read from the registry when it starts)."""
        self._reported: dict[str, str] = {}
        """Runs reported as unserved, with the reason (see `_report_unserved`)."""
        self._declared: tuple[Schedule, ...] = ()
        """Schedules declared in code for the workflows this worker serves: it upserts and fires them."""
        self._firing = asyncio.Lock()
        self._up_since: float | None = None
        """When this worker started, by the database's clock: a schedule tick due since then is
        late, not missed (`catchup="none"` drops only ticks that fell due while no worker was up)."""
        self.failure: BaseException | None = None
        self.on_idle: Callable[[float | None], float | None] | None = None
        """Called when this worker has nothing in hand, with the seconds until its next work falls
        due (None: nothing will fall due); returns how long to wait instead. A test environment
        skips its clock ahead there, and learns that the work due so far is done."""

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        refuse_while_a_child_imports_main("cairn.Worker.start()")
        self._started_in = forks.generation()
        await self.store.open()
        self._up_since = await self.store.now()
        loop = asyncio.get_running_loop()

        def wake(detail: object) -> None:
            if detail == (LEFT_BY, self.id):  # what our own full claim left is for the others
                return
            if isinstance(detail, Started) and not self._could_take(detail):
                return  # a run of a workflow or queue not ours: our claim would take nothing
            call_soon_here(loop, self._wakeup.set)

        self._unsubscribe = self.store.subscribe_key(WORK, wake)

        def cancelled(_detail: object) -> None:  # its heartbeat says which attempts to stop
            if self._attempt_tasks:
                call_soon_here(loop, self._beat_now.set)

        def limits(detail: object) -> None:  # its heartbeat reads which queues have limits
            if isinstance(detail, dict):  # declared in this process: which, known before the next start
                self._limits_declared(detail)  # (one frozenset for another: safe from the committing thread)
            call_soon_here(loop, self._beat_now.set)

        self._unsubscribe_news = [
            self.store.subscribe_key(CANCELLED, cancelled),
            self.store.subscribe_key(QUEUES, limits),
        ]
        self._serves = (tuple(w.id for w in self.registry.workflows()), tuple(a.id for a in self.registry.actions()))
        dispatch.register(self.store, self)
        await self.store.register_workflows(
            [
                WorkflowInfo(w.id, w.description, w.input_schema_text, w.queue, w.derives_id)
                for w in self.registry.workflows()
            ]
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
        if self.watchdog is not None:  # before any activation: they start with the claim loop
            self.watchdog.start()
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

    async def stop(self, grace: timedelta | float | None = None) -> None:
        """Stop taking work; let what runs finish and record its result for `grace` seconds (the
        worker's own by default); then stop what can be stopped and hand it over at once (async
        attempts are cancelled, isolated ones' processes killed first), and wait for what cannot:
        a plain `def` action's thread keeps its lease until it returns, so that no other worker
        runs the same attempt meanwhile. A second request (`request_stop(now=True)`) ends the
        wait at once, leaving such attempts to be taken over when their lease runs out."""
        seconds = self.grace if grace is None else _grace(grace)
        if self._started_in is not None and self._started_in != forks.generation():
            # Started in the process this one was forked from: its tasks, threads and database
            # connections are that process's, left to it. Here, stop waited out its grace for
            # work that runs there, and failed to hand over runs that are not this process's.
            return
        if self._stop_begun:
            await self._closed.wait()
            return
        self._stop_begun = True
        self.request_stop()
        self._runner.draining = True
        dispatch.unregister(self.store, self)
        try:
            if self._main is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._main
                # The runs it holds go to others at once (a result recorded elsewhere wakes one
                # for any worker); its own commits, fenced by their token, still land meanwhile.
                with contextlib.suppress(Exception):
                    await self.store.hand_over(self.id, ())
            await self._until(self._drained.wait(), seconds)
            threaded = await self._stop_and_hand_over()
            if threaded:
                await self._wait_for_threads(threaded)
        finally:
            await self._close()

    async def _until(self, awaitable: Awaitable[Any], timeout: float | None) -> None:
        """Wait for `awaitable` for at most `timeout` seconds, or until a forced stop."""
        waits = [asyncio.ensure_future(awaitable), asyncio.ensure_future(self._forced.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _stop_and_hand_over(self) -> dict[asyncio.Task[Any], tuple[str, int]]:
        """Past the grace: cancel every work item but attempts running plain `def` code on a thread,
        then hand the runs and the cancelled attempts over; the attempts left running, returned."""
        threaded = {
            task: key for task, key in self._attempt_tasks.items() if not task.done() and self._executor.on_thread(key)
        }
        recording = {task for task, key in self._attempt_tasks.items() if self._executor.recording(key)}
        stopped = [task for task in self._tasks if task not in threaded and task not in recording]
        handed = [self._attempt_tasks[task] for task in stopped if task in self._attempt_tasks]
        for task in stopped:
            task.cancel()
        if stopped:
            # Cancelled isolated attempts kill their process and reap it before they end.
            await asyncio.wait(stopped, timeout=STOP_WAIT)
            log.info("stopping: %d work items unfinished after the grace were stopped and handed over", len(stopped))
        if recording:  # outcomes already in hand: a commit away from recorded
            await self._until(asyncio.wait(recording, timeout=STOP_WAIT), None)
        self._runner.forget()
        if self._main is None:  # never started: it holds nothing
            return threaded
        try:
            await self.store.hand_over(self.id, handed)
        except Exception as exc:  # their leases run out instead
            log.warning("handing work over failed (%s); other workers take it when its lease expires", exc)
        return threaded

    async def _wait_for_threads(self, threaded: dict[asyncio.Task[Any], tuple[str, int]]) -> None:
        """Keep the leases of attempts whose thread still runs (the heartbeat goes on) until each
        returns and its outcome is recorded; a forced stop abandons them to their lease's expiry."""
        for run_id, seq in threaded.values() if not self._forced.is_set() else ():
            log.warning(
                "stopping: waiting for step %d of run %s, a plain def action still running on its thread "
                "(a thread cannot be stopped; its lease is kept and its result recorded when it returns, "
                "so that it never runs twice at once). To stop now (Ctrl-C again under `cairn worker`; "
                "`worker.request_stop(now=True)` where an app embeds the worker, as its server owns the "
                "signals), it runs again elsewhere once its lease expires (isolate=True actions can be stopped)",
                seq,
                run_id,
            )
        tasks = list(threaded)
        await self._until(asyncio.wait(tasks), None)
        left = [task for task in tasks if not task.done()]
        self.abandoned = len(left)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=STOP_WAIT)
            log.warning(
                "stopped at once: %d plain def actions still running on their thread were abandoned; "
                "they run again elsewhere when their lease expires (%gs)",
                len(left),
                self.lease,
            )

    async def _close(self) -> None:
        """Let go of everything: side tasks, subscriptions, threads not started, and this worker's
        row (a goodbye that hands over whatever it still held, unless it abandoned running threads,
        whose leases must run out instead)."""
        self._closed.set()
        self._beat_now.set()
        for t in self._side:
            t.cancel()
        if self._side:
            await asyncio.wait(self._side, timeout=STOP_WAIT)
        for unsubscribe in [self._unsubscribe, *self._unsubscribe_news]:
            if unsubscribe is not None:
                unsubscribe()
        self._unsubscribe, self._unsubscribe_news = None, []
        self._runner.forget()
        self._executor.shutdown()
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.abandoned:
            return
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

    def request_stop(self, now: bool = False) -> None:
        """Ask the worker to stop (as SIGTERM does `cairn worker`); `now=True` ends a stop's wait for
        running work at once (a second SIGTERM or Ctrl-C)."""
        self._stopping.set()
        self._wakeup.set()
        if now:
            self._forced.set()

    def _reserve_action_slot(self) -> bool:
        """A slot for an action born in a commit of this worker's: none once it stops (the action
        goes to another worker instead of one that would have to hand it over)."""
        return not self._stopping.is_set() and self._action_slots.take()

    # --- the loop -------------------------------------------------------------------------------

    async def _loop(self) -> None:
        known, workflows, actions = -1, list[str](), list[str]()
        delay = 0.05
        while not self._stopping.is_set():
            self._wakeup.clear()
            if len(self.registry) != known:  # read again when one is registered late (a module a test imports)
                known = len(self.registry)
                workflows = [w.id for w in self.registry.workflows()]
                actions = [a.id for a in self.registry.actions()]
                self._serves = (tuple(workflows), tuple(actions))
            try:
                due_in = await self._claim(workflows, actions)
                delay = 0.05
            except DatabaseUnusable:
                raise  # no back-off mends it (a file replaced, a pooler): the worker stops, saying so
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
            if self.on_idle is not None and not self._tasks and not self._wakeup.is_set():
                due_in = self.on_idle(due_in)  # what falls due, not a poll of held-back queues
            waits = [self._safety_poll(), *(() if due_in is None else (due_in + 0.001,))]
            await self._wait(min(waits if self._retry_in is None else [*waits, self._retry_in]))

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
        busy = self._runner.busy()
        self._claims += 1
        self._landed_in_claim = set()
        try:
            work = await self.store.claim_work(
                self.id,
                workflows,
                actions,
                self.queues,
                free_runs,
                free_actions,
                self.lease,
                self._runner.expected_tokens(),
                busy,
                new_runs,
            )
        finally:
            landed, self._landed_in_claim = self._landed_in_claim, None
        if work.clock is not None:
            self._runner.observe_clock(*work.clock)
        for claim in work.runs:
            self._run_slots.take()
            self._spawn(self._runner.claimed(claim), self._run_releaser(claim.run.status == RunStatus.PENDING))
        for attempt, memory in work.actions:
            self._action_slots.take()
            self._start_action(attempt, memory)
        # A busy run is not claimed, and one due already (its own commit matched a signal or found
        # a child ended, another worker recorded a result for it) has no later wake-up: its news
        # came now. Claim again once it is no longer busy (see `_spawn`), unless a commit of ours
        # for it sent after this claim began has landed (see `_landed`).
        self._passed_over = set(work.busy_due) - landed
        self._passed_over_by = self._claims
        self._recheck_passed_over()  # one may have stopped being busy while the claim was on its way
        new = sum(1 for claim in work.runs if claim.run.status == RunStatus.PENDING)
        runs_full = bool(workflows) and (len(work.runs) == free_runs or new == new_runs)
        actions_full = bool(actions) and len(work.actions) == free_actions
        self._starved = runs_full or actions_full
        self._retry_in = work.retry_in
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

    def _landed(self, run_id: str, sent: int) -> None:
        """An activation commit of this worker's for `run_id`, sent once `sent` claims had begun,
        landed. The commit read whatever had made the run due before it went out; were the run due
        after it, the commit sent the wake-up that claims it (`finish_activation`'s `due`, on both
        backends), which came after every claim begun before the commit went out had cleared the
        wake-ups it answers. So such a claim need not claim again for that run. Without this, a
        run started here, due from its birth until its first commit, was passed over by each claim
        made while its first activation was under way, and made the claim loop claim again for
        nothing: under a loop of starts on PostgreSQL, up to 60 claims per 1,000 runs, of 8
        statements each on a connection thread, a fifth of the throughput when it happened. A
        commit sent before a claim began proves nothing to it (its wake-up may have been cleared
        by that claim): the run stays passed over."""
        if sent >= self._passed_over_by:
            self._passed_over.discard(run_id)
        if self._landed_in_claim is not None and sent >= self._claims:
            self._landed_in_claim.add(run_id)

    def _recheck_passed_over(self) -> None:
        """Claim again once a run the last claim passed over, due, is no longer busy here."""
        if self._passed_over and not self._passed_over <= self._runner.busy():
            self._passed_over = set()
            self._wakeup.set()

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
        release = self._reserve_born(run.workflow, run.queue)
        if release is None:
            return None
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
            if run.trace is not None:  # tracing on: the run's spans join the starter's trace
                self._runner.traces.remember(run.id, run.workflow, run.trace)
            return self._start_born(run, now, release), True

    def _reserve_born(self, workflow: str, queue: str) -> Callable[[], None] | None:
        """A run slot for a run to be born leased to this worker (started in its process, or a
        child started by a commit of its own): its release, or None when a claim is to take it."""
        return self._run_releaser(new=True) if self._reserve_run(workflow, queue) else None

    def _start_born(self, run: NewRun, now: float, release: Callable[[], None]) -> RunRow:
        """The first activation of a run created leased to this worker (token 1) at `now`, from
        memory with no claim, in the run slot `release` gives back; the run as it was created."""
        born = run.born(self.id, now)
        self._spawn(self._runner.claimed(RunClaim(born, 1, [], [], False, now)), release)
        return born

    def _could_take(self, started: Started) -> bool:
        """Whether a claim of ours could take a run started so, unheld (called from the listener's
        thread: it reads the registry's definitions and our queues only). Its workflow is looked up
        by id, as the claim matches it, in the registry as it is now: one registered late wakes us,
        and the claim reads it then. A run whose queue has limits is taken as its place allows, and
        a place freed sends its own wake-up."""
        if self.queues is not None and started.queue not in self.queues:
            return False
        return isinstance(self.registry.get(started.workflow), WorkflowDef)

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
        key = (claim.run_id, claim.seq)
        task = self._spawn(self._attempts.track(key, attempt), release)
        self._attempt_tasks[task] = key

    async def _wait(self, timeout: float) -> None:
        if timeout <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()

    def _spawn(self, coro: Coroutine[Any, Any, T], release: Callable[[], None]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        self._drained.clear()

        def done(t: asyncio.Task[T]) -> None:
            self._tasks.discard(t)
            self._attempt_tasks.pop(t, None)
            if not self._tasks:
                self._drained.set()
                if self.on_idle is not None:  # it learns of the idleness now, not a poll later
                    self._wakeup.set()
            release()
            self._recheck_passed_over()
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
            # The last claim was cut short by capacity, which this slot may let it take. A place in
            # a limited queue is given back by a commit, which wakes claim loops as it lands (see
            # `Commit.frees_place`): woken here, before that commit, a claim found the queue full.
            if self._starved:
                self._wakeup.set()

        return release

    async def _heartbeat(self) -> None:
        """Extend the leases of what this worker holds, until it has let go of everything: a stopping
        worker still runs work (for its grace, and threads after it) whose leases must not lapse."""
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lease / 3):
                    await self._beat_now.wait()
            self._beat_now.clear()
            if self._closed.is_set():
                return
            try:
                cancelled = await self.store.heartbeat(
                    self._info(), self.lease, self._runner.held(), self._attempts.keys()
                )
                self._stop_attempts(cancelled)
                if not self._stopping.is_set():
                    await self._refresh_queues()
                    await self._housekeeping()
            except DatabaseUnusable:
                raise  # the worker stops, saying so (see `_supervise`)
            except Exception as exc:
                log.warning("heartbeat failed (%s); will retry", exc)

    def _stop_attempts(self, lost: set[tuple[str, int]]) -> None:
        """Stop attempts this worker no longer holds (their run cancelled or timed out, or their step
        taken over by another worker once their lease lapsed): an async action gets CancelledError,
        an isolated one's process ends, a plain `def` one's thread is left to return (its result is
        dropped, as any late result of a step not held). One whose outcome is being recorded is let
        be: it has run."""
        for task, key in list(self._attempt_tasks.items()):
            if key in lost and not self._executor.recording(key):
                log.info("run %s: stopping the attempt of step %d, no longer this worker's", *key)
                # After its first step, queued before this: cancelled before it, its coroutine never
                # ran (the attempt never awaited, its key counted in flight for ever). A step the
                # workflow stops waiting for is heard of at once, often before its attempt began.
                asyncio.get_running_loop().call_soon(task.cancel)

    async def fire_schedules(self) -> float | None:
        """Start the runs of the schedule ticks due now; seconds until the next tick. A test
        environment calls it as it moves its clock on, so that the ticks passed have fired when
        `env.sleep` returns."""
        if not self._serves[0]:
            return None
        async with self._firing:  # one at a time here: a firing under way has committed on return
            return await self.store.fire_schedules(self._serves[0], [s.id for s in self._declared], self._up_since)

    async def _fire_schedules(self) -> None:
        """Start the runs of due schedule ticks, waking at the next tick (at least every second, and
        at once when a schedule is declared, paused or resumed anywhere)."""
        news = asyncio.Event()
        loop = asyncio.get_running_loop()
        unsubscribe = self.store.subscribe_key(SCHEDULES, lambda _d: call_soon_here(loop, news.set))
        try:
            while not self._stopping.is_set():
                news.clear()
                try:
                    due_in = await self.fire_schedules()
                except DatabaseUnusable:
                    raise
                except Exception as exc:
                    log.warning("firing schedules failed (%s); will retry", exc)
                    due_in = 1.0
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(1.0, due_in if due_in is not None else 1.0) + 0.001):
                        await news.wait()
        finally:
            unsubscribe()

    def _info(self) -> WorkerInfo:
        return WorkerInfo(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=",".join(self.queues) if self.queues else "*",
            started_at=self._up_since if self._up_since is not None else self._started_at,
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

    def _limits_declared(self, limited: dict[str, bool]) -> None:
        """Queues declared in this process just now, and whether each has limits."""
        now_limited = {name for name, has in limited.items() if has}
        self._runner.limited = frozenset((self._runner.limited - set(limited)) | now_limited)

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
        unserved = await self.store.unserved(alive=self.id)  # itself, though a test's clock moved past its heartbeat
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

    def beat(self) -> None:
        """Heartbeat now, not at the next third of the lease: a test environment that moved its clock
        on by hours would otherwise leave this worker's last heartbeat hours old, and the worker
        taken for dead (its runs reported as served by no live worker)."""
        self._beat_now.set()

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
    if given is None and client is not None:
        kept: timedelta | None = client.retention
        return kept
    return retention_of(given)


def _grace(value: timedelta | float) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
        raise ValueError(
            f"grace must be seconds (a number or a timedelta) of 0 or more, got {value!r}; "
            "it is how long a stopping worker lets running work finish"
        )
    return float(seconds)


def _deadlock_timeout(value: object) -> float | None:
    """The deadlock timeout in seconds (None: no watchdog); a clear error naming it otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
        raise TypeError(
            f"deadlock_timeout must be seconds (a number or a timedelta) or None, got {value!r}; it is how long "
            "an async workflow's code may run without awaiting before the worker interrupts it"
        )
    if isinstance(value, float) and math.isinf(value) and value > 0:  # no limit: as None says it
        return None
    secs = as_seconds(value, "deadlock_timeout")
    if secs is None or secs <= 0:  # NaN: refused by as_seconds
        raise ValueError(f"deadlock_timeout must be more than 0 seconds, got {value!r}; None turns the watchdog off")
    return secs
