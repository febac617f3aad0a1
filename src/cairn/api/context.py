"""The workflow vocabulary as plain functions that find the current run through the running loop.

Inside a plain-`def` workflow the same functions block and return values instead of awaitables.
Outside any workflow the value-producing ones (`now`, `random`, `uuid4`, `sleep`) behave like their
ordinary counterparts, so a workflow function can also be called directly in a unit test.
"""

from __future__ import annotations

import asyncio
import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic_core import PydanticSerializationError, SchemaSerializer, core_schema

from cairn.action_context import ActionContext, action_context
from cairn.api.workflow import ChildCall, resolve_workflow
from cairn.engine.runtime import current_runtime, require_runtime, thread_bridge
from cairn.errors import NotInWorkflow
from cairn.names import check_name
from cairn.policies import seconds
from cairn.serialization import dumps
from cairn.types import StepKind


def _durable(awaitable: Awaitable[Any]) -> Any:
    bridge = thread_bridge()
    return bridge.call(awaitable) if bridge is not None else awaitable


def context() -> ActionContext:
    """Inside an action: run id, action id, attempt, idempotency key and a step logger."""
    ctx = action_context.get()
    if ctx is None:
        raise NotInWorkflow("cairn.context() is only available inside an action")
    return ctx


def now() -> datetime:
    """The workflow's logical time, recorded once and replayed (use instead of datetime.now())."""
    rt = current_runtime()
    if rt is None:
        return datetime.now(UTC)
    return datetime.fromtimestamp(rt.now(), tz=UTC)


def random() -> float:
    """A random float in [0, 1), recorded once and replayed."""
    rt = current_runtime()
    return _random.random() if rt is None else rt.random()


def uuid4() -> _uuid.UUID:
    """A random UUID, recorded once and replayed."""
    rt = current_runtime()
    if rt is None:
        return _uuid.uuid4()
    return _uuid.UUID(int=rt.uuid4_int(), version=4)


def sleep(duration: float | timedelta) -> Any:
    """Durable sleep: survives worker restarts and holds no worker memory while it waits. A duration
    of 0 or less returns at once, as `asyncio.sleep`'s does: `sleep(deadline - cairn.now())` once
    the deadline has passed is no error (it failed the run)."""
    if isinstance(duration, timedelta | int | float) and not isinstance(duration, bool) and _before_now(duration):
        duration = 0.0
    return _durable(asyncio.sleep(seconds(duration, "sleep duration") or 0.0))


def _before_now(duration: float | timedelta) -> bool:
    return duration < timedelta(0) if isinstance(duration, timedelta) else duration < 0


def wait_for_signal(name: str, timeout: float | timedelta | None = None) -> Any:
    """Wait durably for a signal sent to this run; returns its payload. TimeoutError on timeout.
    A signal is handed over at the run's next activation, so `timeout=0` always times out, even with
    one waiting (asyncio's `wait_for(..., 0)`); it is kept for the next wait, never lost."""
    rt = require_runtime("cairn.wait_for_signal")
    check_name(name, "signal name")
    limit = seconds(timeout, "signal timeout")

    async def wait() -> Any:
        fut = rt.schedule(StepKind.SIGNAL, name, None)
        if limit is None:
            return await fut
        try:
            return await asyncio.wait_for(fut, limit)
        except TimeoutError:  # asyncio's says nothing: a run failed on it would show a bare "TimeoutError"
            raise TimeoutError(f"no signal {name!r} came within {limit:g}s") from None

    return _durable(wait())


def send_signal(run_id: str, name: str, payload: Any = None) -> Any:
    """Send a signal to another run: recorded as a step inside a workflow, direct outside one.
    Either way, a run that does not exist is RunNotFound and one that has finished is
    IllegalTransition where the send is awaited: a signal is never dropped unseen."""
    check_name(run_id, "run id")
    check_name(name, "signal name")
    rt = current_runtime()
    if rt is not None:
        return _durable(rt.send_signal(run_id, name, payload))
    from cairn.client.client import connect

    return connect().get(run_id).signal(name, payload)


def child(wf: Any, *args: Any, id: str | None = None, **kwargs: Any) -> Any:
    """Start a child workflow and wait durably for its result."""
    require_runtime("cairn.child")
    if id is not None:
        check_name(id, "child run id")
    return _durable(ChildCall(resolve_workflow(wf), args, kwargs, id))


@dataclass(frozen=True)
class ChildHandle:
    """A started child that the parent does not wait for, unless it asks (`await handle.result()`)."""

    id: str
    workflow: str | None = None
    """The child's workflow id (what `result()` decodes its value with)."""

    def signal(self, name: str, payload: Any = None) -> Any:
        return send_signal(self.id, name, payload)

    def result(self) -> Any:
        """Wait durably for the child's result, as `cairn.child` would have: its exception re-raised
        (WorkflowCancelled when it was cancelled). A child no longer stored (a finished run pruned
        by retention) is RunNotFound; it is never started again."""
        rt = require_runtime("ChildHandle.result")
        if self.workflow is None:
            raise ValueError(f"ChildHandle({self.id!r}) names no workflow: use the handle cairn.start_child returned")
        defn = resolve_workflow(self.workflow)

        async def join() -> Any:  # scheduled when awaited, as every step is
            return await rt.wait_for_child(self.id, defn.id, None, {"join": True}, defn.signature.decode_result)

        return _durable(join())

    def __await__(self) -> Generator[Any, None, Any]:
        """`handle = await cairn.start_child(...)`, as Temporal's `start_child_workflow` is written,
        gives a handle of the same child (the child was started when `start_child` was called)
        that is awaited for its result, as Temporal's is: `await handle`."""
        return _started(StartedChild(self.id, self.workflow)).__await__()


def _not_a_value(handle: ChildHandle) -> Any:
    raise PydanticSerializationError(
        f"a child's handle ({type(handle).__name__} of run {handle.id!r}) is not a value to store: "
        "`await handle.result()` gives the child's result, `handle.id` its run id"
    )


# A handle returned or passed on by mistake (`h = cairn.start_child(...)`, then `return await h`,
# which gives a handle) is refused by name, rather than stored as {"id": ..., "workflow": ...}.
ChildHandle.__pydantic_serializer__ = SchemaSerializer(  # type: ignore[attr-defined]
    core_schema.any_schema(serialization=core_schema.plain_serializer_function_ser_schema(_not_a_value))
)


@dataclass(frozen=True)
class StartedChild(ChildHandle):
    """The handle `await cairn.start_child(...)` gives: awaiting it waits for the child's result
    (`await handle.result()`), as awaiting Temporal's child handle does."""

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result().__await__()  # type: ignore[no-any-return]


async def _started(handle: StartedChild) -> StartedChild:
    return handle


def start_child(wf: Any, *args: Any, id: str | None = None, **kwargs: Any) -> ChildHandle:
    """Start a child workflow without waiting for it; returns its handle."""
    rt = require_runtime("cairn.start_child")
    if id is not None:
        check_name(id, "child run id")
    defn = resolve_workflow(wf)
    encoded = defn.signature.encode_args(args, kwargs)
    child_id = id or defn.derive_id(encoded, len(args)) or f"{rt.run_id}:{rt.next_seq}"
    options = {"run_id": child_id, "detached": True}
    rt.immediate(StepKind.CHILD, defn.id, encoded, lambda: dumps(child_id), options=options, queue=defn.queue)
    return ChildHandle(child_id, defn.id)


def patched(change_id: str) -> bool:
    """True on new code paths; False while replaying a run that passed this point on old code."""
    return require_runtime("cairn.patched").patched(change_id)


def deprecate_patch(change_id: str) -> None:
    """Mark a patch as always taken, once no run that predates it is still running."""
    require_runtime("cairn.deprecate_patch").patched(change_id, deprecated=True)


class _Memory:
    """A durable key/value store scoped to the run, from the workflow and from its actions."""

    def _target(self) -> Any:
        ctx = action_context.get()
        if ctx is not None:
            return ctx
        rt = current_runtime()
        if rt is not None:
            return rt
        raise NotInWorkflow("cairn.memory is available inside workflows and actions; from outside use handle.memory()")

    def add(self, key: str, value: Any) -> None:
        check_name(key, "memory key")
        self._target().memory_add(key, value)

    def get(self, key: str, default: Any = None) -> Any:
        return self._target().memory_get(key, default)

    def keys(self) -> list[str]:
        return list(self._target().memory_keys())


memory = _Memory()
