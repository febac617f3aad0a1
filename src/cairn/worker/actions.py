"""One action attempt: context, Depends, timeout, retry decision, and the fenced write of its outcome.

An `isolate=True` action's attempt runs in a child process instead (`cairn.worker.isolate`); its
outcome, memory writes and logs come back into the same context and are written the same way.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextvars
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cairn import telemetry
from cairn.action_context import ActionContext, action_context, install_log_fields
from cairn.dependencies import invoke_with_dependencies
from cairn.errors import ActionAttemptsExhausted, ActionTimeout, UnknownActionError
from cairn.policies import BackoffPolicy, should_retry
from cairn.registry import ActionDef, Registry
from cairn.serialization import error_message, error_text
from cairn.store.protocol import ActionClaim, Store
from cairn.worker.isolate import retire_idle, run_isolated
from cairn.worker.tracing import RunTraces

log = logging.getLogger("cairn.worker")


MAX_LOST_ATTEMPTS = 20
"""An action whose attempts keep dying with their worker (a segfault, an OOM kill) fails after this many."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt produced, before it is recorded."""

    result: str | None
    error: str | None
    retry_delay: float | None
    memory_writes: list[tuple[str, str]]
    logs: list[str]

    @property
    def final(self) -> bool:
        return self.retry_delay is None


Recorder = Callable[[ActionClaim, Outcome], Awaitable[None]]


async def record_plainly(store: Store, claim: ActionClaim, outcome: Outcome) -> None:
    """Record an attempt in a completion transaction of its own (fenced by its attempt number)."""
    won = await store.complete_action(
        claim, outcome.result, outcome.error, outcome.retry_delay, outcome.memory_writes, outcome.logs
    )
    if not won:
        log.warning(
            "action %s of run %s: attempt %d was superseded; its outcome is dropped",
            claim.name,
            claim.run_id,
            claim.attempt,
        )


Key = tuple[str, int]
"""An attempt's (run id, step)."""


def _stopped(exc: BaseException, attempting: asyncio.Task[Any] | None) -> bool:
    """Whether `exc` is this worker stopping the attempt run by the task `attempting` (cancelled: a
    stopping worker, a cancelled run; or its coroutine closed, which throws GeneratorExit in from
    outside the task) rather than the action's own way of failing. Anything else the action raises,
    even a BaseException (`sys.exit()` in a library, KeyboardInterrupt, a CancelledError or a
    GeneratorExit of its own), is the outcome of its attempt: let through, it would end the worker
    process or leave the step running until its lease ran out, to be claimed and lost again and
    again (a GeneratorExit raised by an action was, 21 times, then reported lost with its worker)."""
    if not isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no loop runs: the coroutine is being closed (a loop or interpreter ending)
        return True
    return task is None or task is not attempting or task.cancelling() > 0


_EXECUTORS: weakref.WeakSet[ActionExecutor] = weakref.WeakSet()


def calls_on_threads() -> int:
    """Plain `def` calls of this process's workers still running on a thread (an attempt abandoned
    at its timeout, or by a stop at once): nothing can stop them, and the interpreter would wait
    for them at exit. Counted by call, not by live thread: a thread of a pool shut down moments
    ago (the store's, idle) is alive too, and was taken for an abandoned action."""
    total = 0
    for executor in list(_EXECUTORS):
        with executor._calls_lock:
            total += sum(not call.done() for calls in executor._calls.values() for call in calls)
    return total


class ActionExecutor:
    def __init__(self, store: Store, registry: Registry, threads: int) -> None:
        self._store = store
        self._registry = registry
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="cairn-action")
        self._calls: dict[Key, set[concurrent.futures.Future[Any]]] = {}
        """Calls of plain `def` code (actions, Depends providers) handed to the pool, by attempt, until
        their thread returns: a stopping worker must know which attempts it cannot stop."""
        self._calls_lock = threading.Lock()
        self._recording: collections.Counter[Key] = collections.Counter()
        self.traces = RunTraces(store)
        install_log_fields()
        _EXECUTORS.add(self)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        retire_idle()  # warm children of isolated actions: nothing idle outlives a stopped worker

    def on_thread(self, key: Key) -> bool:
        """Whether the attempt `key` runs plain `def` code on a thread now, which nothing can stop.
        Its calls still queued for a thread are cancelled here, so that they never start: the
        caller is about to stop the attempt and hand it over."""
        with self._calls_lock:
            calls = list(self._calls.get(key, ()))
        return any(not call.cancel() and not call.done() for call in calls)

    def _submit(self, key: Key, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        """Run `fn` on the pool, tracked under its attempt until its thread returns (an attempt
        abandoned at its timeout stays tracked until then)."""
        call = self._pool.submit(contextvars.copy_context().run, fn)
        with self._calls_lock:
            self._calls.setdefault(key, set()).add(call)
        abandoned = False

        def returned(done: concurrent.futures.Future[Any]) -> None:
            with self._calls_lock:
                calls = self._calls.get(key)
                if calls is not None:
                    calls.discard(done)
                    if not calls:
                        del self._calls[key]
                if abandoned:
                    self._resize(-1)

        def given_up(awaited: asyncio.Future[Any]) -> None:
            nonlocal abandoned
            with self._calls_lock:
                if awaited.cancelled() and call.running():  # a timeout or a stop left it on its thread
                    abandoned = True
                    self._resize(+1)

        call.add_done_callback(returned)
        awaited = asyncio.wrap_future(call)
        awaited.add_done_callback(given_up)
        return awaited

    def _resize(self, by: int) -> None:
        """One more thread for each call left running on its thread, one fewer when it returns:
        calls abandoned at their timeout (a thread cannot be stopped) kept their threads, and once
        as many as the worker's concurrency were, every other plain `def` action waited, shown
        running, until one returned, or for ever. (The pool's size is its `_max_workers`, which
        `ThreadPoolExecutor` reads each time it decides whether to start a thread.) Called with
        `_calls_lock` held."""
        self._pool._max_workers += by

    async def execute(
        self,
        claim: ActionClaim,
        memory: dict[str, str],
        record: Recorder | None = None,
        ran: Callable[[], None] = lambda: None,
    ) -> None:
        """Run one attempt, call `ran()`, and record its outcome (by default: one fenced completion
        transaction)."""
        try:
            outcome = await self.attempt(claim, memory)
        finally:
            ran()
        key = (claim.run_id, claim.seq)
        self._recording[key] += 1
        try:
            if record is not None:
                await record(claim, outcome)
                return
            await self.complete(claim, outcome)
        finally:
            self._recording[key] -= 1
            if self._recording[key] <= 0:
                del self._recording[key]

    def recording(self, key: Key) -> bool:
        """Whether the attempt `key` has run and its outcome is being recorded (a stopping worker
        lets that finish: cancelled, a result already paid for would be run again)."""
        return key in self._recording

    async def complete(self, claim: ActionClaim, outcome: Outcome) -> None:
        await record_plainly(self._store, claim, outcome)

    async def attempt(self, claim: ActionClaim, memory: dict[str, str]) -> Outcome:
        defn = self._registry.action(claim.name)
        ctx = ActionContext(claim.run_id, claim.name, claim.attempt, claim.seq, dict(memory))
        ctx.action_name = defn.name if defn is not None else claim.name
        options: Any = claim.options or {}
        result: str | None = None
        error: str | None = None
        retry_delay: float | None = None
        attempting = asyncio.current_task()
        try:
            if defn is None:
                raise UnknownActionError(f"action {claim.name!r} is not registered on this worker")
            policy = options.get("retry") or defn.retry.to_json()
            backoff = BackoffPolicy.from_json(options["backoff"]) if "backoff" in options else defn.backoff
            timeout = options.get("timeout", defn.timeout)
            failed_before = claim.attempt - 1 - claim.lost
            if failed_before >= int(policy["attempts"]) or claim.lost > MAX_LOST_ATTEMPTS:
                raise ActionAttemptsExhausted(
                    f"action {claim.name} has no attempts left: {failed_before} failed and {claim.lost} were "
                    f"lost with their worker (policy: {policy['attempts']} attempts, at most {MAX_LOST_ATTEMPTS} lost)"
                )
            try:
                result = await self._traced_attempt(defn, claim, ctx, timeout)
            except BaseException as exc:
                if _stopped(exc, attempting):
                    raise
                error = error_text(exc)
                chosen = bool(options.get("retry_chosen", defn.retry_chosen))
                if should_retry(policy, exc, claim.attempt - claim.lost, chosen):
                    retry_delay = backoff.delay_for(claim.attempt - claim.lost)
                    failure = f"{type(exc).__name__}: {error_message(exc)[:1000]}"
                    ctx.logs.append(f"WARNING attempt {claim.attempt} failed: {failure}; retry in {retry_delay:.2f}s")
        except Exception as exc:
            # The worker's own reading of the step (no such action, no attempts left, a policy it
            # cannot apply) failed: the step fails with it. Let out, it dropped the attempt, whose
            # lease ran out and which was taken again, for ever, with the step shown running.
            error = error_text(exc)
        # Memory writes are committed with the action's result: a failed attempt's are dropped, as
        # those of an attempt retried later always were.
        writes = ctx.memory_writes if error is None else []
        return Outcome(result, error, retry_delay, writes, ctx.logs)

    async def _traced_attempt(
        self, defn: ActionDef, claim: ActionClaim, ctx: ActionContext, timeout: float | None
    ) -> str:
        """One attempt, in a span under the run's trace context when tracing is on."""
        if not telemetry.enabled():
            return await self._attempt(defn, claim, ctx, timeout)
        workflow, trace = await self.traces.of(claim.run_id)
        attrs = {"run_id": claim.run_id, "workflow": workflow, "step": claim.seq, "attempt": claim.attempt}
        with telemetry.span("cairn.action", trace, action=defn.id, action_name=defn.name, **attrs):
            return await self._attempt(defn, claim, ctx, timeout)

    async def _attempt(self, defn: ActionDef, claim: ActionClaim, ctx: ActionContext, timeout: float | None) -> str:
        """One attempt; its result as JSON text. `isolate=True` runs it in a child process that enforces the timeout."""
        if defn.isolate:
            return await run_isolated(defn, claim.args, ctx, timeout)
        return defn.signature.encode_result(await self._in_process(defn, claim, ctx, timeout))

    async def _in_process(self, defn: ActionDef, claim: ActionClaim, ctx: ActionContext, timeout: float | None) -> Any:
        args, kwargs = defn.signature.decode_args(claim.args)
        token = action_context.set(ctx)
        key = (claim.run_id, claim.seq)
        try:

            def run_sync(fn: Callable[[], Any]) -> asyncio.Future[Any]:
                return self._submit(key, fn)

            coro = invoke_with_dependencies(defn, args, kwargs, run_sync=run_sync)
            if timeout is None:
                return await coro
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    return await coro
            except TimeoutError:
                if deadline.expired():
                    raise ActionTimeout(
                        f"action {defn.id} ran past its {timeout:g}s timeout (attempt {claim.attempt})"
                    ) from None
                raise
        finally:
            action_context.reset(token)
