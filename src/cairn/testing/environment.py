"""`environment()`: a database, a client and an in-process worker for a test, with time skipping.

Time skipping follows Temporal's test server: the environment owns one clock (`SkippingClock`,
real time plus an offset) that its store reads for `cairn_now()` and its worker for logical time.
Whenever the worker has nothing in hand and nothing is due, so that every run is blocked on a
timer (a durable sleep, a signal wait's timeout, an action's retry backoff), the clock jumps to
the next one. Nothing outside the environment sees that clock. Rejected: patching `time.time`
or the engine (it would move the test runner's clock too, and test Cairn with parts replaced).
"""

from __future__ import annotations

import asyncio
import contextlib
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
from cairn.client.client import Client
from cairn.clock import SkippingClock
from cairn.registry import ActionDef, registry
from cairn.worker.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("cairn.testing")

_IDLE_WAIT = 30.0
"""How long `Environment.sleep` waits for the work in hand to finish before moving time on."""


class Environment:
    """What `async with environment() as env:` gives: `env.client`, `env.now()`, `env.sleep()`..."""

    def __init__(self, client: Client, worker: Worker, clock: SkippingClock, time_skipping: bool) -> None:
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
        self._closed = False

    @property
    def url(self) -> str:
        return self.client.url

    def now(self) -> datetime:
        """The environment's logical time: what `cairn.now()` gives a workflow that runs now."""
        return datetime.fromtimestamp(self.clock.now(), tz=UTC)

    async def sleep(self, duration: timedelta | float) -> None:
        """Move logical time on by `duration` at once (timers that fall due fire). The work the
        worker has in hand is let finish first: time does not jump under a running action."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        if seconds < 0:
            raise ValueError(f"env.sleep takes a duration of 0 or more, got {duration!r}")
        deadline = time.monotonic() + _IDLE_WAIT
        pause = 0.001
        while self.worker.in_flight:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"env.sleep: the worker still has {self.worker.in_flight} activations or actions in hand "
                    f"after {_IDLE_WAIT:.0f}s; time is moved on only when they are done"
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)
        self._advance(seconds)
        await self.worker.fire_schedules()  # the ticks passed have started their runs on return
        self.worker.wake()

    def _advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.skipped += timedelta(seconds=seconds)

    def _on_idle(self, due_in: float) -> float:
        """The worker is idle and its next work falls due in `due_in` seconds: skip to it."""
        if due_in > 0:
            log.debug("time skipping: every run waits on a timer; moving the clock on by %.3fs", due_in)
            self._advance(due_in)
        return 0.0

    def replace_action(self, action: ActionFunction[P, R], fake: Callable[P, R]) -> Replacement:
        """Run `fake` instead of `action` on the environment's worker, from this call until the
        environment exits (`env.replace_action(charge, fake)`, as a plain statement), or only until
        the block ends (`with env.replace_action(charge, fake):`). The fake must take the same
        parameters (names, kinds, defaults, annotated types); it may be sync or async. Steps are
        still recorded under the action's id, with its serialization. When an action is replaced
        more than once, the latest replacement still in place runs; ending one (a block's end)
        leaves the others as they are, so nested and overlapping replacements unwind in order."""
        if self._closed:
            raise RuntimeError("replace_action on an environment that has exited: the replacement would outlive it")
        defn = _action_def(action)
        check_same_signature(defn, fake)
        replacement = Replacement(dataclasses.replace(defn, fn=fake, isolate=False))
        self._replacements.append(replacement)
        return replacement

    def _restore_actions(self) -> None:
        """The environment exits: every action it replaced is itself again."""
        self._closed = True
        while self._replacements:
            self._replacements.pop().restore()


class Replacement:
    """What `env.replace_action` returns: the fake is in place already (the registry's
    substitution, which stacks). As a `with` block, it is taken out at the block's end; otherwise
    when the environment exits (or on `restore()`)."""

    def __init__(self, defn: ActionDef) -> None:
        self.defn = defn
        """The action's definition with the fake as its function."""
        self._in_place = contextlib.ExitStack()
        self._in_place.enter_context(registry.substituted(defn))

    def restore(self) -> None:
        """Take this replacement out now (a no-op when it is out already)."""
        self._in_place.close()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        self.restore()


def _action_def(action: Any) -> ActionDef:
    defn = getattr(action, "defn", None)
    if isinstance(defn, ActionDef):
        return defn
    if isinstance(action, str):
        found = registry.action(action)
        if found is not None:
            return found
    raise TypeError(f"replace_action expects an @action function (or its id), got {action!r}")


def check_same_signature(defn: ActionDef, fake: Callable[..., Any]) -> None:
    """TypeError unless `fake` can stand in for the action: same parameter names, kinds and
    defaults, and the same types wherever both annotate one (the return type included)."""
    if not callable(fake):
        raise TypeError(f"the replacement for action {defn.id} must be callable, got {fake!r}")
    original = inspect.signature(defn.fn)
    try:
        replacement = inspect.signature(fake)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"cannot read the signature of the replacement for action {defn.id}: {exc}") from None
    want = [(p.name, p.kind, p.default is inspect.Parameter.empty) for p in original.parameters.values()]
    got = [(p.name, p.kind, p.default is inspect.Parameter.empty) for p in replacement.parameters.values()]
    if want != got:
        raise TypeError(
            f"the replacement for action {defn.id} must take the same parameters: the action has "
            f"{original}, the replacement {replacement}"
        )
    hints_a, hints_b = _hints(defn.fn), _hints(fake)
    for name in hints_a.keys() & hints_b.keys():
        if not _same_type(hints_a[name], hints_b[name]):
            what = "return type" if name == "return" else f"parameter {name!r}"
            raise TypeError(
                f"the replacement for action {defn.id} differs in its {what}: "
                f"{_type_name(hints_a[name])} in the action, {_type_name(hints_b[name])} in the replacement"
            )


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
    url: str | None = None, *, time_skipping: bool = True, concurrency: int = 16, lease: float = 10.0
) -> AsyncIterator[Environment]:
    """A temporary SQLite database (or the database at `url`), a client and an in-process worker
    that serves every workflow and action registered in this process, with time skipping."""
    tmp: str | None = None
    if url is None:
        tmp = tempfile.mkdtemp(prefix="cairn-env-")
        url = f"sqlite:///{tmp}/cairn.db"
    clock = SkippingClock()
    client = Client(url)
    client.store.clock = clock
    env: Environment | None = None
    try:
        await client.store.open()
        worker = Worker(client, concurrency=concurrency, lease=lease, poll_interval=0.05)
        env = Environment(client, worker, clock, time_skipping)
        if time_skipping:
            worker.on_idle = env._on_idle
        async with worker:
            yield env
    finally:
        if env is not None:
            env._restore_actions()  # after the worker stopped: no step sees the action change under it
        await client.close()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
