"""Workflow activations: the journal in, the engine's decision applied in one fenced transaction.

The hot path keeps a step to about one transaction. Runs with actions in flight stay in memory (a
bounded, sticky cache) and stay leased to this worker. New action steps that this worker can run
are inserted already leased to it ("born running") and start at once, with no claim. When such an
action finishes, its result is fed to the run in memory and recorded *together with* the next
activation's decisions in one transaction, fenced by the run's lease token; if anything moved (a
control operation, another worker), that transaction rolls back and the result is recorded the
ordinary way instead.

A run that sleeps or waits for a signal is let go (its lease released: any worker may take it when
it is due), but an async one stays in memory here too, in a second bounded cache (`resting`). When
this worker claims it again and nobody has claimed or controlled it in between (the claim's token
is the one our commit left, plus one), the timer or the signal is fed to that copy, and neither its
journal nor a replay of it is needed. A run that waits in a loop (a signal per order line, a timer
per retry) would otherwise replay its whole history at every wake-up: at 2,000 steps, 133 ms a
signal. Any other claim finds the copy stale and replays, as before. Only runs with a history
worth keeping are kept (`RESTING_MIN_STEPS`), within a memory budget (`RESTING_BYTES`): a hundred
thousand one-step sleepers take no more memory than before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from cairn import telemetry
from cairn.action_context import run_context
from cairn.engine.instance import Watch, WorkflowInstance
from cairn.engine.runtime import Resolution
from cairn.errors import CairnError, LeaseLost
from cairn.records import ActivationResult, NewRun, NewStep, RunRow
from cairn.registry import Registry
from cairn.serialization import error_text, error_text_summary
from cairn.store.protocol import ActionClaim, Commit, Completion, RunClaim, Store
from cairn.types import RunStatus, StepKind, StepStatus
from cairn.worker.actions import Outcome, record_plainly
from cairn.worker.tracing import RunTraces

log = logging.getLogger("cairn.worker")


@dataclass(slots=True)
class Entry:
    inst: WorkflowInstance
    token: int
    """The run's lease token as our last commit left it."""
    run: RunRow
    """The run as our last commit left it (activations, status)."""


def _log_outcome(run: RunRow, result: ActivationResult) -> None:
    """Say what a committed activation decided about the run: a failure or a pause on error as a
    warning, other news at DEBUG (a line per run would flood a busy worker's log)."""
    if result.status == RunStatus.FAILED:
        log.warning("run %s (%s) failed: %s", run.id, run.workflow, error_text_summary(result.error))
    elif result.status == RunStatus.PAUSED and result.error is not None:
        log.warning("run %s (%s) paused on error: %s", run.id, run.workflow, error_text_summary(result.error))
    elif log.isEnabledFor(logging.DEBUG):
        if run.activations == 0:
            log.debug("run %s (%s) started", run.id, run.workflow)
        if result.status.is_terminal or result.status == RunStatus.PAUSED:
            log.debug("run %s (%s) %s", run.id, run.workflow, result.status.value)


CLOCK_SAMPLES = 32
"""How many of the last claims the estimate of the database clock is taken from (see
`Runner.observe_clock`): about half a minute of an idle worker's on PostgreSQL."""
RESTING_BYTES = 16_000_000
"""About how much memory the copies of waiting runs may hold in all (`size_estimate`)."""
RESTING_MIN_STEPS = 16
"""A waiting run's copy is kept only from this many steps: a shorter history replays in about the
time of an activation, and 100,000 short sleepers must not grow a worker's memory."""


class InstanceCache:
    """LRU of in-memory runs. After a claim, an entry is valid only if the claim's token is exactly one
    more than the token we committed under, i.e. nobody else claimed or controlled the run in
    between (a count of activations would not see a rewind)."""

    def __init__(self, capacity: int, max_bytes: int | None = None) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        """With a limit, about how much memory its copies may hold in all (a copy keeps its run's
        journal: a count of runs alone would not bound the memory of long ones)."""
        self._bytes = 0
        self._weights: dict[str, int] = {}
        self._items: collections.OrderedDict[str, Entry] = collections.OrderedDict()

    def expected_tokens(self) -> dict[str, int]:
        return {run_id: e.token + 1 for run_id, e in self._items.items()}

    def take(self, run_id: str, token: int) -> WorkflowInstance | None:
        """The cached instance if it is still current for a claim under `token`; stale ones are closed."""
        entry = self._pop(run_id)
        if entry is None:
            return None
        if token == entry.token + 1:
            return entry.inst
        entry.inst.close()
        return None

    def peek_held(self, run_id: str) -> Entry | None:
        """The entry of a run we hold, left in place (what a span says of it)."""
        return self._items.get(run_id)

    def take_held(self, run_id: str) -> Entry | None:
        """The entry of a run we still hold (sticky lease), for a commit fenced by its own token."""
        return self._pop(run_id)

    def put(self, entry: Entry) -> None:
        size = entry.inst.size_estimate() if self._max_bytes is not None else 0
        if self._max_bytes is not None and size > self._max_bytes:
            entry.inst.close()  # more than all the room: replayed when next claimed, as before
            return
        old = self._pop(entry.inst.run_id)
        if old is not None and old.inst is not entry.inst:
            old.inst.close()
        self._items[entry.inst.run_id] = entry
        self._weights[entry.inst.run_id] = size
        self._bytes += size
        while len(self._items) > self._capacity or (self._max_bytes is not None and self._bytes > self._max_bytes):
            run_id = next(iter(self._items))
            evicted = self._pop(run_id)
            assert evicted is not None
            evicted.inst.close()

    def _pop(self, run_id: str) -> Entry | None:
        entry = self._items.pop(run_id, None)
        self._bytes -= self._weights.pop(run_id, 0)
        return entry

    def clear(self) -> None:
        while self._items:
            _, entry = self._items.popitem()
            entry.inst.close()
        self._weights.clear()
        self._bytes = 0

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._items

    def __len__(self) -> int:
        return len(self._items)


K = TypeVar("K")


class InFlight(Generic[K]):
    """Keys of work under way, counted (a key can be in flight twice): marked when the work is
    handed out, before its task first runs, and cleared when it ends."""

    def __init__(self) -> None:
        self._counts: collections.Counter[K] = collections.Counter()

    def keys(self) -> set[K]:
        return set(self._counts)

    def track(self, key: K, work: Coroutine[Any, Any, None]) -> Coroutine[Any, Any, None]:
        self._counts[key] += 1
        return self._until_done(key, work)

    async def _until_done(self, key: K, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        finally:
            self._counts[key] -= 1
            if self._counts[key] <= 0:
                del self._counts[key]


Starter = Callable[[ActionClaim, dict[str, str]], None]
"""Starts a born action on this worker (its slot is already reserved)."""
Release = Callable[[], None]
"""Gives a reserved slot back."""


class Runner:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        worker_id: str,
        lease: float,
        cache_size: int = 1000,
        queues: Sequence[str] | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._worker_id = worker_id
        self._lease = lease
        self._queues = set(queues) if queues else None
        self.limited: frozenset[str] = frozenset()
        """Queues with limits (the worker keeps it current): their actions are claimed through the
        queue, never born running here."""
        self.cache = InstanceCache(cache_size)
        self.resting = InstanceCache(cache_size, max_bytes=RESTING_BYTES)
        """Async runs let go while they wait (a timer, a signal), kept to go on from where they were
        if this worker claims them next (see the module's docstring). Never held: no lease is kept,
        no result is folded into them, and a claim by anyone else makes them stale."""
        self.traces = RunTraces(store)
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._mailbox: dict[str, list[tuple[ActionClaim, Outcome]]] = {}
        self._claimed: InFlight[str] = InFlight()
        self._expected: collections.Counter[str] = collections.Counter()
        self._clock_offset = 0.0
        self._last_now = 0.0
        self._clock_bounds: collections.deque[tuple[float, float]] = collections.deque(maxlen=CLOCK_SAMPLES)
        """Of the last claims, the bounds each put on the database clock's offset from ours."""
        self.draining = False
        """Set when the worker stops: commits keep no run leased here (no sticky lease) and start no
        action here, so that what the runs do next goes to other workers at once."""
        self.reserve_slot: Callable[[], bool] = lambda: False
        self.release_slot: Callable[[], None] = lambda: None
        self.start_action: Starter = lambda claim, memory: None
        self.reserve_run: Callable[[str, str], Release | None] = lambda workflow, queue: None
        """A run slot for a child (its workflow, its queue) born leased to this worker: its release,
        or None when the child is not this worker's to start (see `Worker._reserve_born`)."""
        self.start_run: Callable[[NewRun, float, Release], object] = lambda run, now, release: None
        """Starts the first activation of a child created leased here at `now`, in the run slot
        `release` gives back."""
        self.commit_sent: Callable[[], int] = lambda: 0
        self.landed: Callable[[str, int], None] = lambda run_id, sent: None
        """Told the run of each activation commit that landed, as it lands, with what `commit_sent`
        said as it went out (see `Worker._landed`)."""
        self.watch: Watch | None = None
        """Times async workflow code on this loop (the worker's deadlock watchdog); None: untimed.
        An activation it interrupts pauses its run with WorkflowDeadlock (see `WorkflowInstance`)."""

    @contextlib.asynccontextmanager
    async def _exclusive(self, run_id: str) -> AsyncIterator[None]:
        """One activation of a run at a time in this worker. The lock is dropped only when no task
        holds or waits for it: dropping it earlier would let a newcomer make a second lock."""
        holders = self._locks.get(run_id)
        if holders is None:
            holders = self._locks[run_id] = (asyncio.Lock(), [0])
        lock, count = holders
        count[0] += 1
        try:
            async with lock:
                yield
        finally:
            count[0] -= 1
            if count[0] == 0:
                del self._locks[run_id]

    def now(self) -> float:
        """The database clock, estimated from the last claim (activations record it as logical
        time). Never earlier than a time it gave before: a step's start, its end and the events
        between them are dated in the order they happened."""
        now = self._store.clock.now() + self._clock_offset
        if now < self._last_now:
            return self._last_now
        self._last_now = now
        return now

    def observe_clock(self, database_now: float, sent_at: float) -> None:
        """Estimate the database clock from a claim: its time as the claim's transaction began, read
        between our sending the claim (`sent_at`) and its answer (now), so the offset lies between
        `database_now - now` and `database_now - sent_at`. Each bound alone errs by the claim's
        delays, the GIL's and the server's, which grow under load: taken as the answer came, the
        estimate was behind by the whole claim (5 to 17 ms on PostgreSQL), and every time a worker
        wrote with it (a step's end before its action's own clock said it ended); taken as the claim
        was sent, ahead by up to 30 ms under load (a run ended after the database's now). The
        estimate is the tightest upper bound of the last claims (their least delay before the
        server read its clock); bounds that no longer meet (a clock was set) start over."""
        self._clock_bounds.append((database_now - self._store.clock.now(), database_now - sent_at))
        low = max(bound[0] for bound in self._clock_bounds)
        high = min(bound[1] for bound in self._clock_bounds)
        if low > high:
            latest = self._clock_bounds[-1]
            self._clock_bounds.clear()
            self._clock_bounds.append(latest)
            high = latest[1]
        self._clock_offset = high

    # --- a claimed activation -------------------------------------------------------------------

    def claimed(self, claim: RunClaim) -> Coroutine[Any, Any, None]:
        """The activation of a claimed run; the run counts as busy from now until it ends."""
        return self._claimed.track(claim.run.id, self._run_claimed(claim))

    def expected_tokens(self) -> dict[str, int]:
        """Runs in memory here and the token their next claim must carry for the copy to be current:
        a claim then skips their journals."""
        return {**self.resting.expected_tokens(), **self.cache.expected_tokens()}

    def forget(self) -> None:
        """Drop every run in memory (a stopping worker)."""
        self.cache.clear()
        self.resting.clear()

    def held(self) -> set[str]:
        """Runs whose lease this worker keeps: in memory, or being worked on."""
        return set(self.cache.expected_tokens()) | self.busy()

    def busy(self) -> set[str]:
        """Runs held by this worker with an activation or a result commit under way or about to start."""
        return self._claimed.keys() | set(self._locks) | set(self._mailbox) | self._expected.keys()

    @contextlib.contextmanager
    def expecting(self, run_id: str) -> Iterator[None]:
        """Count a run busy while it is being created leased to this worker, until its activation
        is handed out (a claim of ours would only race that activation's fence)."""
        self._expected[run_id] += 1
        try:
            yield
        finally:
            self._expected[run_id] -= 1
            if self._expected[run_id] <= 0:
                del self._expected[run_id]

    async def _run_claimed(self, claim: RunClaim) -> None:
        async with self._exclusive(claim.run.id):
            logged = run_context.set(claim.run.id)  # log records made meanwhile carry the run's id
            try:
                await self._activate_and_commit(claim)
            finally:
                run_context.reset(logged)

    async def _activate_and_commit(self, claim: RunClaim) -> bool:
        """Activate a claimed run and commit; whether the commit landed. With tracing on, in a span
        under the run's trace context, after spans for the timers, signals and children it delivers."""
        if not telemetry.enabled():
            return await self._activate_and_commit_now(claim)
        run = claim.run
        trace = (await self.traces.of(run.id))[1]
        for row in claim.batch:
            if row.kind in (StepKind.TIMER, StepKind.SIGNAL, StepKind.CHILD):
                end = row.completed_at or claim.now
                telemetry.record_span(
                    f"cairn.{row.kind.value}",
                    trace,
                    row.created_at,
                    end,
                    run_id=run.id,
                    workflow=run.workflow,
                    step=row.seq,
                    step_name=row.name,
                )
        activation = run.activations + 1
        with telemetry.span("cairn.activation", trace, run_id=run.id, workflow=run.workflow, activation=activation):
            return await self._activate_and_commit_now(claim)

    async def _activate_and_commit_now(self, claim: RunClaim) -> bool:
        run = claim.run
        defn = self._registry.workflow(run.workflow)
        cached = self.cache.take(run.id, claim.token)
        rested = self.resting.take(run.id, claim.token)  # taken either way: a stale copy is closed
        if cached is None:
            cached = rested
        elif rested is not None:
            rested.close()
        if defn is None:  # not claimable by this worker in the first place; hand it back
            await self._store.release_run(claim)
            return False
        if await self._timed_out(run, claim.now):
            if cached is not None:
                cached.close()
            return False
        if claim.journal_skipped and cached is None:
            # We held the run when it was claimed, so its journal was not loaded, but our copy has
            # since been dropped (a commit of ours lost its fence). Hand it back to reload in full.
            await self._store.release_run(claim)
            return False
        inst: WorkflowInstance | None = None
        try:
            if cached is not None:
                # Current (taken at the claim's token), whether or not the claim read the journal:
                # a claim begun before our commit that let the run go (a wait left open) read it,
                # and on PostgreSQL half the signals of a run that waited for them in a loop made
                # it replay its whole journal (5,000 signals: 606 s, against 30 s on SQLite).
                inst = cached
            else:
                # Awaited: a plain `def` workflow computing on its thread leaves this loop free.
                inst = await WorkflowInstance.restore_async(
                    defn, run, claim.journal, random.getrandbits(64), self.watch
                )
            result = await inst.activate_async(claim.batch, claim.now)
        except Exception as exc:  # a bug in the engine or a journal it cannot read: visible, not a loop
            log.exception("activation of run %s failed", run.id)
            if inst is not None:
                inst.close()
            # The failure is this activation's own (it counts): `retry` rewinds just it, so the
            # results it could not take are delivered again and no recorded step runs twice.
            result = ActivationResult(status=RunStatus.FAILED, error=error_text(exc))
            inst = None
        except BaseException:  # cancelled (a stopping worker): the run is handed over, its copy dropped
            if inst is not None:
                inst.close()
            raise
        if run.activations == 0 and run.code_version is None:  # started where its code was not imported
            result.code_version = defn.version
        return await self._commit(inst, run, claim.token, result, ())

    # --- results of actions this worker ran --------------------------------------------------

    async def record(self, claim: ActionClaim, outcome: Outcome) -> None:
        """Record an attempt this worker ran: with the run's next activation when we hold the run."""
        held = claim.run_id in self.cache or claim.run_id in self._locks  # in memory, or mid-commit here
        if not outcome.final or not held:
            await self._complete_plainly(claim, outcome)
            return
        box = self._mailbox.setdefault(claim.run_id, [])
        box.append((claim, outcome))
        if len(box) > 1:
            return  # a drain for this run is already on its way and will take this result too
        async with self._exclusive(claim.run_id):
            logged = run_context.set(claim.run_id)  # as in _run_claimed
            try:
                await self._drain(claim.run_id)
            finally:
                run_context.reset(logged)

    async def _drain(self, run_id: str) -> None:
        while items := self._mailbox.pop(run_id, []):
            if not await self._traced_fold(run_id, items):
                for claim, outcome in items:  # not committed with the run (or perhaps not): record apart
                    await self._complete_plainly(claim, outcome)

    async def _traced_fold(self, run_id: str, items: Sequence[tuple[ActionClaim, Outcome]]) -> bool:
        if not telemetry.enabled():
            return await self._fold(run_id, items)
        workflow, trace = await self.traces.of(run_id)
        held = self.cache.peek_held(run_id)
        activation = held.run.activations + 1 if held is not None else None
        with telemetry.span("cairn.activation", trace, run_id=run_id, workflow=workflow, activation=activation):
            return await self._fold(run_id, items)

    async def _fold(self, run_id: str, items: Sequence[tuple[ActionClaim, Outcome]]) -> bool:
        """Feed results to the run in memory and commit them with its next activation; False when
        that was not done (the run is no longer held here, or the commit failed or rolled back)."""
        entry = self.cache.take_held(run_id)
        if entry is None:
            return False
        if await self._timed_out(entry.run, self.now()):
            entry.inst.close()  # its results are recorded apart, against steps the timeout cancels
            return False
        due = entry.inst.next_timer()
        if due is not None and due <= self.now():
            # A timer of the run came due before these results came: only a claim fires it
            # (`fire_due_timers_of_runs`), to be delivered with them in the order they happened
            # (`in_delivery_order`). Folded here, a result that came after a `wait_for`'s timeout
            # was handed over first, and won.
            self.cache.put(entry)
            return False
        # In step order, both: the workflow is handed the results so, and the commit writes their
        # memory so. In the order they arrived, the commit's last write of a key written by several
        # actions of one gather was another than the one the workflow read (handle.memory() said 3
        # where memory.get said 7).
        ordered = sorted(items, key=lambda item: item[0].seq)
        resolutions = [
            Resolution(
                c.seq,
                StepStatus.FAILED if o.error is not None else StepStatus.COMPLETED,
                o.result,
                o.error,
                json.dumps(o.memory_writes) if o.memory_writes else None,
            )
            for c, o in ordered
        ]
        completions = [Completion(c, o.result, o.error, o.memory_writes, o.logs) for c, o in ordered]
        try:
            result = await entry.inst.activate_async(resolutions, self.now())
        except Exception:
            log.exception("activation of run %s failed; recording its results the ordinary way", run_id)
            entry.inst.close()
            return False
        except BaseException:
            entry.inst.close()
            raise
        try:
            return await self._commit(entry.inst, entry.run, entry.token, result, completions)
        except Exception as exc:
            # E.g. the connection dropped at COMMIT: whether it landed is unknown. Recording the
            # results apart is safe either way (fenced by attempt); the run, no longer held here,
            # runs out its lease and is replayed, as are born actions that never started.
            log.warning("run %s: committing its results failed (%s); recording them apart", run_id, exc)
            return False

    async def _complete_plainly(self, claim: ActionClaim, outcome: Outcome) -> None:
        await record_plainly(self._store, claim, outcome)

    # --- committing ---------------------------------------------------------------------------

    async def _commit(
        self,
        inst: WorkflowInstance | None,
        run: RunRow,
        token: int,
        result: ActivationResult,
        completions: Sequence[Completion],
    ) -> bool:
        # The run's first activation starts it at its clock (finish_activation's started_at), and
        # its timeout with it: the run as this commit leaves it.
        began = run.started_at if run.started_at is not None else (result.delivered_at or self.now())
        deadline = replace(run, started_at=began).deadline(self._timeout(run))
        if deadline is not None and result.status in (RunStatus.RUNNING, RunStatus.WAITING):
            # The deadline is a wake-up like a timer's: due then, the run is claimed and timed out
            # (by whichever worker holds it, or any), however long what it waits for takes.
            result.wake_at = deadline if result.wake_at is None else min(result.wake_at, deadline)
        draining = self.draining
        births = self._births(result.new_steps) if inst is not None and not draining else []
        children = self._child_births(run, result.new_steps) if inst is not None and not draining else {}
        born = frozenset(s.seq for s in births) | frozenset(children)
        owner = None if draining else self._worker_id
        now = self.now()
        frees = self._frees_place(run, result.status, owner, completions)
        commit = Commit(run, token, result, completions, born, owner, self._lease, now, frees_place=frees)
        sent = self.commit_sent()
        with contextlib.ExitStack() as expected:
            for child, _ in children.values():  # our claims leave them alone until they are started
                expected.enter_context(self.expecting(child.id))
            try:
                started = await self._store.commit_activation(commit)
            except LeaseLost:
                log.info(
                    "run %s: lease moved before commit; another worker or a control operation continues it", run.id
                )
                self._abandon(inst, births, children)
                return False
            except Exception as exc:
                self._abandon(inst, births, children)
                if not self._store.refused(exc):
                    raise
                # The database refused what this run decided (a value it cannot store): the run fails,
                # visibly and once, instead of being claimed and refused again forever.
                return await self._fail_refused(run, token, exc)
            except BaseException:
                self._abandon(inst, births, children)
                raise
            for seq, (child, release) in children.items():
                if seq in started:  # created leased to us (token 1), as a run started in our process
                    self.start_run(child, now, release)
                else:  # its id named a run already, or the commit's answer was lost: a claim takes it
                    release()
        self.landed(run.id, sent)
        _log_outcome(run, result)
        if result.status.is_terminal and telemetry.enabled():
            await self._record_run_span(run, result)
        if inst is None:
            return True
        keeper = self._keeper(inst, result.status, draining)
        if keeper is None:
            inst.close()
        else:
            activations = run.activations + (1 if result.counts_as_activation else 0)
            after = replace(run, activations=activations, status=result.status, started_at=began)
            keeper.put(Entry(inst, token + 1, after))  # the commit advanced the token
        memory = dict(inst.runtime.memory)
        for step in births:  # leased by the commit, at its time
            claim = ActionClaim(run.id, step.seq, step.name, step.args or "{}", 1, step.options, step.queue, 0, now)
            self.start_action(claim, memory)
        return True

    def _frees_place(
        self, run: RunRow, status: RunStatus, owner: str | None, completions: Sequence[Completion]
    ) -> bool:
        """Whether a commit gives a place in a queue with limits back, so that it wakes claim loops
        (see `Commit.frees_place`): the run of such a queue ends or lets its lease go (its place
        under `concurrency`, or `per_worker`), or an attempt of one is recorded. Only the commit
        can say so: a claim woken earlier (as the action's slot came free, before the commit that
        ends the run landed) counted the queue full, and the next run started 0.1 s later."""
        if run.queue in self.limited and (status != RunStatus.RUNNING or owner is None):
            return True
        return any(c.claim.queue in self.limited for c in completions)

    def _keeper(self, inst: WorkflowInstance, status: RunStatus, draining: bool) -> InstanceCache | None:
        """Where a run's copy stays after a commit that left it `status`: the cache of held runs
        while it runs, the resting one while it waits (when worth keeping), else nowhere."""
        if draining:
            return None
        if status == RunStatus.RUNNING:
            return self.cache
        if (
            status == RunStatus.WAITING
            and not inst.threaded  # its copy would keep a thread blocked while it waits
            and inst.steps() >= RESTING_MIN_STEPS
        ):
            return self.resting
        return None

    async def _record_run_span(self, run: RunRow, result: ActivationResult) -> None:
        """The run's span, from its creation to the end this worker just recorded (a span is never
        kept open across activations: a run may sleep for a week, on any worker)."""
        trace = (await self.traces.of(run.id))[1]
        telemetry.record_run(
            trace,
            run,
            result.status.value,
            self.now(),
            error=error_text_summary(result.error) if result.status == RunStatus.FAILED else None,
            activations=run.activations + (1 if result.counts_as_activation else 0),
        )

    def _timeout(self, run: RunRow) -> float | None:
        defn = self._registry.workflow(run.workflow)
        return None if defn is None else defn.timeout

    async def _timed_out(self, run: RunRow, now: float) -> bool:
        """Whether the run is past its deadline at `now` (then it is no longer to be activated here),
        and if so cancel it (`control.time_out` judges by the database's clock). A failure leaves it
        due: it is claimed and timed out again."""
        timeout = self._timeout(run)
        deadline = run.deadline(timeout)
        if timeout is None or deadline is None or deadline > now:
            return False
        try:
            status = await self._store.time_out(run.id, timeout)
        except Exception as exc:
            log.warning("run %s: timing it out failed (%s); will retry", run.id, exc)
            return True
        if status == RunStatus.CANCELLED:
            log.info("run %s timed out after %gs", run.id, timeout)
            if telemetry.enabled():
                why = f"WorkflowTimeout: run {run.id} timed out after {timeout:g}s"
                telemetry.record_run((await self.traces.of(run.id))[1], run, "cancelled", now, error=why)
        return True

    async def _fail_refused(self, run: RunRow, token: int, exc: Exception) -> bool:
        """Fail a run whose commit the database refused; whether that failure was recorded."""
        reason = CairnError(
            f"the database refused to record the progress of run {run.id} ({type(exc).__name__}: {exc}); "
            "the run is failed rather than retried forever. Check the values it stores (memory keys, signal "
            "names, ids) and retry it once fixed"
        )
        log.error("run %s failed: %s", run.id, reason)
        failed = ActivationResult(status=RunStatus.FAILED, error=error_text(reason))  # counts: see above
        commit = Commit(
            run,
            token,
            failed,
            owner=self._worker_id,
            lease=self._lease,
            now=self.now(),
            closes_steps=True,
            frees_place=run.queue in self.limited,
        )
        try:
            await self._store.commit_activation(commit)
        except Exception:
            log.exception("run %s: recording its failure was refused as well", run.id)
            return False
        return True

    def _abandon(
        self, inst: WorkflowInstance | None, births: Sequence[NewStep], children: dict[int, tuple[NewRun, Release]]
    ) -> None:
        if inst is not None:
            inst.close()
        for _ in births:
            self.release_slot()
        for _, release in children.values():
            release()

    def _child_births(self, run: RunRow, steps: Sequence[NewStep]) -> dict[int, tuple[NewRun, Release]]:
        """New child runs (by their steps) this worker will start itself, each with a reserved run
        slot: created leased to it by the commit and activated from memory, with no claim (a claim
        is a transaction, and the wake-up before it another). A child joined (started detached
        earlier) exists already."""
        born: dict[int, tuple[NewRun, Release]] = {}
        for step in steps:
            if step.kind != StepKind.CHILD or not step.options or step.options.get("join"):
                continue
            child = NewRun.child(run, step)
            release = self.reserve_run(child.workflow, child.queue)
            if release is None:
                continue
            born[step.seq] = (child, release)
        return born

    def _births(self, steps: Sequence[NewStep]) -> list[NewStep]:
        """New action steps this worker will run itself, each with a reserved slot."""
        born = []
        for step in steps:
            if step.kind != StepKind.ACTION or step.status != StepStatus.SCHEDULED:
                continue
            if self._registry.action(step.name) is None:
                continue
            if self._queues is not None and (step.queue or "default") not in self._queues:
                continue
            if step.queue in self.limited:
                continue
            if not self.reserve_slot():
                break
            born.append(step)
        return born
