"""`environment()`: a database, a client and an in-process worker for a test, with time skipping.

Time skipping follows Temporal's test server: the environment owns one clock (`SkippingClock`,
real time plus an offset) that its store reads for `cairn_now()` and its worker for logical time.
Whenever the worker has nothing in hand and nothing is due, so that every run is blocked on a
timer (a durable sleep, a signal wait's timeout, an action's retry backoff), the clock jumps to
the next one. Nothing outside the environment sees that clock. Rejected: patching `time.time`
or the engine (it would move the test runner's clock too, and test Cairn with parts replaced).

`env.sleep(d)` moves the clock from one due time to the next within `d` (timers, retries and
schedule ticks), letting the worker finish what each one starts, as `d` of real time would.
A result awaited with no timeout while nothing in the environment can move (no work in hand,
nothing due: every run waits for a signal with no timeout, or is paused) fails after
`stall_timeout` seconds with `EnvironmentStalled`, naming what the run waits for, instead of
waiting for ever. Replacements (`replace_action`) belong to their environment: its worker reads
the process registry through an overlay of its own, so environments open at once never see each
other's fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import logging
import shutil
import tempfile
import time
import typing
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from cairn.api.action import ActionFunction
from cairn.client.client import Client, QueuePlace, default_in_this_context
from cairn.client.handle import RunHandle
from cairn.client.waiter import ResultWaiter, Waiters
from cairn.clock import SkippingClock
from cairn.errors import CairnError
from cairn.queues import Queue
from cairn.records import RunRow
from cairn.registry import ActionDef, Registry, WorkflowDef, registry, substitutes_in_this_context
from cairn.serialization import Signature, error_text_summary
from cairn.store.protocol import Store
from cairn.types import RunStatus
from cairn.worker.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("cairn.testing")

_IDLE_WAIT = 30.0
"""How long `Environment.sleep` waits for the work in hand to finish before moving time on."""
_STUCK_STEPS = 100
"""`Environment.sleep` jumps to its end once the worker says this many times in a row that work is
due now after taking all it could (work it cannot take: it would never move the clock)."""
_STALL_POLL = 0.1
"""How often a result wait with no timeout checks whether anything in the environment can still move."""
_FRESH_IDLE = 3.0
"""How recent the worker's last report of having nothing in hand must be to count (it reports at
least once a second while idle)."""


class EnvironmentStalled(CairnError, TimeoutError):
    """A result awaited with no timeout in a test environment cannot come: nothing in the
    environment can move the run (it waits for a signal with no timeout, is paused, ...)."""


class Environment:
    """What `async with environment() as env:` gives: `env.client`, `env.now()`, `env.sleep()`..."""

    def __init__(
        self,
        client: Client,
        worker: Worker,
        clock: SkippingClock,
        time_skipping: bool,
        actions: Registry | None = None,
        stall_timeout: float | None = None,
    ) -> None:
        self.client = client
        """A client of the environment's database (`await env.client.run(Wf, ...)`)."""
        self.worker = worker
        """The in-process worker; it serves every workflow and action registered in this process."""
        self.clock = clock
        self.time_skipping = time_skipping
        self.started = self.now()
        """The environment's logical time when it started."""
        self.skipped = timedelta(0)
        """How much logical time was skipped so far (automatically and by `sleep`)."""
        self._replacements: list[Replacement] = []
        """The replacements in place, each taken out when its block ends or the environment exits."""
        self._actions = actions if actions is not None else registry
        """The registry the worker runs actions from: the process's, with this environment's fakes."""
        self.stall_timeout = stall_timeout
        """Seconds a result awaited with no timeout waits while nothing can move before it fails
        with `EnvironmentStalled` (None: for ever)."""
        self._closed = False
        self._sleeping = False
        """`sleep` is moving the clock: the worker does not skip on its own meanwhile."""
        self._one_sleep = asyncio.Lock()
        """`env.sleep` calls take turns: each moves the clock and settles the worker on its own."""
        self._settled: asyncio.Future[float | None] | None = None
        """Resolved by the worker's next report of having nothing in hand (see `_settle`)."""
        self._loop = asyncio.get_running_loop()
        """The event loop the environment's worker runs on."""
        self._last_idle: tuple[float, float | None] | None = None
        """(when, seconds until its next work) of the worker's last report of having nothing in hand."""

    @property
    def url(self) -> str:
        return self.client.url

    def now(self) -> datetime:
        """The environment's logical time: what `cairn.now()` gives a workflow that runs now."""
        return datetime.fromtimestamp(self.clock.now(), tz=UTC)

    async def sleep(self, duration: timedelta | float) -> None:
        """Move logical time on by `duration`, as if that much time passed: the clock goes from one
        due time to the next (timers, signal timeouts, retries, schedule ticks), and the worker
        finishes what each one starts before it moves again, so that a run sleeping an hour three
        times over is done after `env.sleep(timedelta(hours=3))`. Time never jumps under work in
        hand (a running action); on return, what fell due by then has been done."""
        self._check_usable("env.sleep")
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        if seconds < 0:
            raise ValueError(f"env.sleep takes a duration of 0 or more, got {duration!r}")
        target = self.clock.now() + seconds
        async with self._one_sleep:  # two at once (a gather): each to its own end, the later after
            await self._sleep_to(target)

    async def _sleep_to(self, target: float) -> None:
        self._sleeping = True
        stuck = 0  # steps in a row that would not move the clock: work due that this worker cannot take
        try:
            while stuck < _STUCK_STEPS:
                tick_in = await self.worker.fire_schedules()  # the ticks due now start their runs
                due_in = await self._settle()
                if tick_in is not None and await self._held_ticks():
                    # A run that ended just now lets a held tick (overlap="buffer_one") start now, as
                    # a worker does at once; moved on first, it started at the next tick or timer.
                    tick_in = await self.worker.fire_schedules()
                    due_in = await self._settle()
                due = [d for d in (due_in, tick_in) if d is not None]
                step = min(due) if due else None
                if step is None or self.clock.now() + step > target:
                    break
                stuck = stuck + 1 if step <= 0 else 0
                self._advance(max(step, 0.0))
            skipped = self.clock.advance_to(target)  # nothing when another sleep went past it already
            self.skipped += timedelta(seconds=skipped)
            await self.worker.fire_schedules()
            await self._settle()
        finally:
            self._sleeping = False
            self.worker.wake()  # time skipping, if on, goes on from here

    async def _held_ticks(self) -> bool:
        """Whether a schedule holds a tick to start once its previous run ends (overlap="buffer_one")."""
        return any(row.buffered_at is not None for row in await self.client.list_schedules())

    async def _settle(self) -> float | None:
        """Wake the worker and wait until it has taken and done all the work due now; the seconds
        until its next work falls due (None: none will)."""
        settled: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()
        self._settled = settled
        self.worker.wake()
        try:
            async with asyncio.timeout(_IDLE_WAIT):
                return await settled
        except TimeoutError:
            raise TimeoutError(
                f"env.sleep: the worker still has {self.worker.in_flight} activations or actions in hand "
                f"after {_IDLE_WAIT:.0f}s; time is moved on only when they are done"
            ) from None
        finally:
            self._settled = None

    def _advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.skipped += timedelta(seconds=seconds)
        self.worker.beat()  # alive at the new time too

    def _on_idle(self, due_in: float | None) -> float | None:
        """The worker has nothing in hand and its next work falls due in `due_in` seconds (None:
        none will): tell a `sleep` waiting for that, else skip to it when time skipping is on."""
        self._last_idle = (time.monotonic(), due_in)
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(due_in)
        if self._sleeping or not self.time_skipping or due_in is None:
            return due_in
        if due_in > 0:
            log.debug("time skipping: every run waits on a timer; moving the clock on by %.3fs", due_in)
            self._advance(due_in)
        return 0.0

    def _can_move(self) -> bool:
        """Whether anything in the environment may still move: work in hand or due (a timer's time
        comes, by skipping or as time passes), a `sleep` under way, or no recent word from the worker."""
        last = self._last_idle
        if self._sleeping or self.worker.in_flight or last is None or last[1] is not None:
            return True
        return time.monotonic() - last[0] > _FRESH_IDLE

    async def _stalled(self, run_id: str, timeout: float | None) -> None:
        """Raise `EnvironmentStalled` once the run has not changed for `timeout` seconds during
        which nothing in the environment could move it (None: never), and RuntimeError once the
        environment has exited (its worker stopped: nothing will ever move it)."""
        since, seen = time.monotonic(), None
        while True:
            await asyncio.sleep(_STALL_POLL)
            if self._closed:
                raise RuntimeError(self._exited(f"awaiting the result of run {run_id}"))
            if timeout is None or self._can_move():
                since, seen = time.monotonic(), None
                continue
            try:
                row = await self.client.store.get_run(run_id)
            except Exception:  # the wait itself says what became of the run
                continue
            state = None if row is None else (row.status, row.activations, row.updated_at)
            if state is None or state != seen:
                since, seen = time.monotonic(), state
                continue
            if row is not None and time.monotonic() - since >= timeout:
                raise EnvironmentStalled(await self._why_stalled(row, timeout))

    async def _why_stalled(self, row: RunRow, timeout: float) -> str:
        steps = await self.client.store.list_steps(row.id)
        waits = [f"{s.kind.value} {s.name!r}" for s in steps if not s.status.is_resolved]
        on = f"; it waits for: {', '.join(waits)}" if waits else ""
        # A run paused on an error (its code diverged, an action failed under on_failure="pause"):
        # the error is what the test needs to see, not only that the run does not move.
        said = error_text_summary(row.error) if row.status == RunStatus.PAUSED and row.error else None
        why = f"; it is paused on {said}" if said else ""
        return (
            f"run {row.id} ({row.workflow}) is {row.status.value} and nothing in the test environment can move it "
            f"(no work in hand, no timer, retry or schedule tick due) for {timeout:g}s{on}{why}. Send what it waits "
            "for (handle.signal(...)), resume or retry it, or await its result with a timeout"
        )

    def replace_action(self, action: ActionFunction[P, R], fake: Callable[P, R]) -> Replacement:
        """Run `fake` instead of `action` on the environment's worker, from this call until the
        environment exits (`env.replace_action(charge, fake)`, as a plain statement), or only until
        the block ends (`with env.replace_action(charge, fake):`). The fake must take the same
        parameters (names, kinds, defaults, annotated types); it may be sync or async. A parameter
        the action's `Depends` supplies may be left out by the fake (no provider runs), taken
        plainly (the action's provider gives it), or given a `Depends` of the fake's own. The fake
        runs with the action's retry policy, backoff and timeout. Steps are
        still recorded under the action's id, with its serialization. When an action is replaced
        more than once, the latest replacement still in place runs; ending one (a block's end)
        leaves the others as they are, so nested and overlapping replacements unwind in order."""
        if self._closed:
            raise RuntimeError("replace_action on an environment that has exited: the replacement would outlive it")
        defn = _action_def(action)
        signature = check_same_signature(defn, fake)
        replacement = Replacement(dataclasses.replace(defn, fn=fake, isolate=False, signature=signature), self._actions)
        self._replacements.append(replacement)
        return replacement

    def _check_usable(self, what: str) -> None:
        """RuntimeError when nothing would move what `what` starts or awaits: the environment has
        exited, or its worker's event loop is not running (the test runs on another loop)."""
        if self._closed:
            raise RuntimeError(self._exited(what))
        if not self._loop.is_running():
            raise RuntimeError(
                f"{what} on another event loop than the test environment's, which is not running now: its "
                "worker cannot move any run meanwhile. With pytest-asyncio, the test and the cairn_env "
                "fixture must share one event loop: give them the same loop scope (e.g. "
                "`asyncio_default_fixture_loop_scope` equal to the test's `loop_scope`)"
            )

    def _exited(self, what: str) -> str:
        """The message of a use of this environment after it exited."""
        return (
            f"{what} after the test environment exited: its worker has stopped, so no run "
            "moves any more. Start runs and await their results "
            "inside `async with environment() as env:` (or the test that takes the cairn_env fixture)"
        )

    def _restore_actions(self) -> None:
        """The environment exits: every action it replaced is itself again."""
        self._closed = True
        while self._replacements:
            self._replacements.pop().restore()


class Replacement:
    """What `env.replace_action` returns: the fake is in place already (the registry's
    substitution, which stacks). As a `with` block, it is taken out at the block's end; otherwise
    when the environment exits (or on `restore()`)."""

    def __init__(self, defn: ActionDef, actions: Registry = registry) -> None:
        self.defn = defn
        """The action's definition with the fake as its function."""
        self._in_place = contextlib.ExitStack()
        self._in_place.enter_context(actions.substituted(defn))

    def restore(self) -> None:
        """Take this replacement out now (a no-op when it is out already)."""
        self._in_place.close()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.restore()


class _Overlay(Registry):
    """The process registry as one environment's worker reads it: the same definitions, schedules
    and queues (shared, live), with substitutes of its own."""

    def __init__(self, base: Registry) -> None:
        super().__init__()
        self._defs = base._defs
        self._schedules = base._schedules
        self._queues = base._queues
        self._lock = base._lock

    def action(self, id: str) -> ActionDef | None:
        layers = self._substitutes.get(id)
        return layers[-1] if layers else registry.action(id)


class _Waiter(ResultWaiter):
    """A result waiter that, for waits with no timeout, fails with `EnvironmentStalled` when
    nothing in the environment can move the run any more, and for any wait, with RuntimeError once
    the environment has exited (or at once when its worker's loop is not running)."""

    def __init__(self, store: Store, loop: asyncio.AbstractEventLoop, env: Environment) -> None:
        super().__init__(store, loop)
        self._env = env

    async def wait(self, run_id: str, timeout: float | None, created: bool = False, or_stuck: bool = False) -> RunRow:
        self._env._check_usable(f"awaiting the result of run {run_id}")
        stall = self._env.stall_timeout if timeout is None else None
        waiting = asyncio.ensure_future(super().wait(run_id, timeout, created, or_stuck))
        watching = asyncio.ensure_future(self._env._stalled(run_id, stall))
        try:
            await asyncio.wait([waiting, watching], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiting, watching):
                task.cancel()
            await asyncio.gather(waiting, watching, return_exceptions=True)
        if not waiting.cancelled():
            return waiting.result()
        watching.result()  # raises EnvironmentStalled, or that the environment exited meanwhile
        raise AssertionError("unreachable: the stall watch ends only by raising")


class _Client(Client):
    """The environment's client: once the environment has exited, starting a run is refused (no
    worker would ever run it, and a temporary database would be made again, never to be removed)."""

    environment: Environment | None = None

    async def _start(
        self,
        workflow: Any,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        id: str | None,
        queue: str | Queue | None,
        queued: QueuePlace | None = None,
    ) -> tuple[RunHandle, bool]:
        if self.environment is not None:
            self.environment._check_usable(f"starting a run of {workflow!r}")
        return await super()._start(workflow, args, kwargs, id, queue, queued)


class _Waiters(Waiters):
    def __init__(self, store: Store, env: Environment) -> None:
        super().__init__(store)
        self._env = env

    def _waiter(self, loop: asyncio.AbstractEventLoop) -> ResultWaiter:
        return _Waiter(self._store, loop, self._env)


def _action_def(action: Any) -> ActionDef:
    defn = getattr(action, "defn", None)
    if isinstance(defn, ActionDef):
        return defn
    if isinstance(action, ActionDef):
        return action
    if isinstance(action, str):
        found = registry.action(action)
        if found is not None:
            return found
        raise TypeError(
            f"replace_action: no action is registered as {action!r} in this process "
            "(pass the @action function itself, or the id of one that is imported)"
        )
    if isinstance(getattr(action, "__cairn_workflow__", None), WorkflowDef):
        raise TypeError(
            f"replace_action replaces actions, and {action!r} is a workflow: replace the actions it calls "
            "(a child workflow runs on the environment's worker like any other)"
        )
    if callable(action):
        raise TypeError(
            f"replace_action expects an @action function (or its id), got {action!r}, which is not an action: "
            "only calls of actions become steps a worker runs, so only those can be replaced"
        )
    raise TypeError(f"replace_action expects an @action function (or its id), got {action!r}")


def check_same_signature(defn: ActionDef, fake: Callable[..., Any]) -> Signature:
    """TypeError unless `fake` can stand in for the action: the same parameters as callers see them
    (names, kinds and defaults), and the same types wherever both annotate one (the return type
    included). The call shape the fake is run with: the action's parameters that `Depends`
    supplies may be left out by the fake (nothing is then resolved for them), taken plainly (it
    gets what the action's provider gives), or declared with a `Depends` of the fake's own."""
    if not callable(fake):
        raise TypeError(f"the replacement for action {defn.id} must be callable, got {fake!r}")
    try:
        own = Signature.of(fake, defn.id)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot read the signature of the replacement for action {defn.id}: {exc}") from None
    injected = defn.signature.injected
    original = defn.signature.public
    replacement = own.signature.replace(
        parameters=[p for p in own.signature.parameters.values() if p.name not in injected | own.injected]
    )
    kinds = {p.kind for p in replacement.parameters.values()}
    if kinds == {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}:
        # `(*args, **kwargs)`: any call the action takes (a Mock, an AsyncMock, a lambda of both),
        # made as the action's callers make it; its return is checked by the action's type.
        public = {name: hint for name, hint in defn.signature.hints.items() if name not in injected}
        return _ByPosition(defn.id, original, public, frozenset())
    want = [(p.name, p.kind, p.default is inspect.Parameter.empty) for p in original.parameters.values()]
    got = [(p.name, p.kind, p.default is inspect.Parameter.empty) for p in replacement.parameters.values()]
    if want != got:
        raise TypeError(
            f"the replacement for action {defn.id} must take the same parameters: the action has "
            f"{defn.signature.signature}, the replacement {own.signature}"
        )
    hints_a, hints_b = _hints(defn.fn), _hints(fake)
    for name in (hints_a.keys() & hints_b.keys()) - injected - own.injected:  # what Depends gives is never stored
        if not _same_type(hints_a[name], hints_b[name]):
            what = "return type" if name == "return" else f"parameter {name!r}"
            raise TypeError(
                f"the replacement for action {defn.id} differs in its {what}: "
                f"{_type_name(hints_a[name])} in the action, {_type_name(hints_b[name])} in the replacement"
            )
    # Run with the fake's own parameters; an injected one it takes plainly is resolved as the action declares it.
    parameters = []
    hints = {name: hint for name, hint in defn.signature.hints.items() if name not in injected}
    for p in own.signature.parameters.values():
        if p.name in own.injected:
            parameters.append(p)
            hints[p.name] = own.hints.get(p.name, p.annotation)
        elif p.name in injected:
            parameters.append(defn.signature.signature.parameters[p.name])
            if p.name in defn.signature.hints:
                hints[p.name] = defn.signature.hints[p.name]
        else:
            parameters.append(p)
    taken = frozenset(p.name for p in parameters if p.name in injected | own.injected)
    return Signature(defn.id, own.signature.replace(parameters=parameters), hints, taken)


class _ByPosition(Signature):
    """A fake that takes anything gets the arguments by position where they can be, as the workflow
    wrote the call (`charge(user, 900)`): a Mock then asserts `assert_called_once_with("ada", 900)`."""

    def decode_args(self, text: str, finite: bool = False, positional: int = 0) -> tuple[list[Any], dict[str, Any]]:
        return super().decode_args(text, finite, positional=len(self.public.parameters))


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=False)
    except Exception:  # unresolvable annotations (forward references in a test): names only then
        return {}


def _same_type(a: Any, b: Any) -> bool:
    return bool(a == b or a is Any or b is Any)


def _type_name(t: Any) -> str:
    return getattr(t, "__name__", None) or repr(t)


@contextlib.asynccontextmanager
async def environment(
    url: str | None = None,
    *,
    time_skipping: bool = True,
    concurrency: int = 16,
    lease: float = 10.0,
    stall_timeout: float | None = 5.0,
) -> AsyncIterator[Environment]:
    """A temporary SQLite database (or the database at `url`), a client and an in-process worker
    that serves every workflow and action registered in this process, with time skipping.
    `stall_timeout`: seconds a result awaited with no timeout waits while nothing in the
    environment can move the run (it waits for a signal with no timeout, is paused...) before
    it fails with `EnvironmentStalled` (None: wait for ever)."""
    tmp: str | None = None
    if url is None:
        tmp = tempfile.mkdtemp(prefix="cairn-env-")
        url = f"sqlite:///{tmp}/cairn.db"
    clock = SkippingClock()
    client = _Client(url)
    client.store.clock = clock
    env: Environment | None = None
    try:
        await client.store.open()
        actions = _Overlay(registry)
        worker = Worker(client, concurrency=concurrency, lease=lease, poll_interval=0.05, registry=actions)
        env = Environment(client, worker, clock, time_skipping, actions, stall_timeout)
        client.environment = env
        client.waiters = _Waiters(client.store, env)
        worker.on_idle = env._on_idle
        before = default_in_this_context(client)  # cairn.connect() in the test and its actions
        faking = substitutes_in_this_context(actions)  # an action calling a replaced one runs the fake
        try:
            await worker.start()
            try:
                yield env
            finally:
                # The test is over and its database goes next: what still runs is stopped, not waited
                # for (an async action, 30 s of the worker's grace; a blocked `def` one, for ever).
                worker.request_stop(now=True)
                await worker.stop(grace=0)
        finally:
            # Set back, not reset: a pytest fixture may leave from another task's context.
            _set_back(before, client)
            _set_back(faking, actions)
    finally:
        if env is not None:
            env._restore_actions()  # after the worker stopped: no step sees the action change under it
        await client.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _set_back(token: contextvars.Token[Any], value: Any) -> None:
    """The variable `token` set back to what it held before, unless it no longer holds `value`. Set,
    not reset: a pytest fixture may leave the environment from another task's context than it
    entered it in, where `reset(token)` raises."""
    if token.var.get() is value:
        token.var.set(None if token.old_value is token.MISSING else token.old_value)
