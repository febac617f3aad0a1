"""`@action`: one decorator, three behaviours depending on where the call happens.

- inside a workflow: returns an awaitable `ActionCall`; awaiting it schedules a durable step.
- inside a plain-`def` workflow: blocks until the step's result is recorded, then returns it.
- inside another action, or outside any workflow: runs the function directly, resolving Depends.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import warnings
from collections.abc import Callable, Coroutine, Generator
from datetime import timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from cairn.dependencies import invoke_with_dependencies
from cairn.engine.loop import workflow_hash
from cairn.engine.runtime import Runtime, current_runtime, thread_bridge
from cairn.errors import NotInWorkflow, ThreadTimeoutWarning, UnawaitedCallWarning
from cairn.names import check_name, importable_module
from cairn.policies import BackoffPolicy, RetryPolicy, backoff_policy, retry_policy, seconds
from cairn.queues import Queue, queue_name
from cairn.registry import ActionDef, in_effect, registry
from cairn.serialization import Signature
from cairn.types import StepKind

log = logging.getLogger("cairn.action")

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class DurableCall(Coroutine[Any, Any, Any]):
    """A call made inside a workflow that becomes a durable step when awaited (an action's, a
    child's). A Coroutine, so that `asyncio.create_task`, `gather` and `wait_for` accept it.

    Dropped unawaited while its workflow's code runs (`charge(order)` without `await`), it warns as
    Python does of a coroutine never awaited, naming what was not scheduled: that silently skipped
    a charge. Dropped as a waiting workflow's copy is let go (a call made, to be awaited after a
    sleep), it says nothing: that code goes on when the run is replayed."""

    __slots__ = ("_gen", "_hash", "_rt")

    def __init__(self) -> None:
        self._gen: Generator[Any, Any, Any] | None = None
        self._hash: int | None = None
        self._rt: Runtime | None = current_runtime()
        """The activation's runtime while not awaited (None once awaited, or outside a workflow)."""

    def __hash__(self) -> int:
        """Numbered by the workflow's loop, not by address: calls in a set (`asyncio.as_completed`
        starts its calls in their set's order) are scheduled in the same order on every replay."""
        if self._hash is None:
            self._hash = workflow_hash(self)
        return self._hash

    def send(self, value: Any) -> Any:
        if self._gen is None:
            self._gen = self.__await__()
        return self._gen.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        if self._gen is None:
            self._gen = self.__await__()
        return self._gen.throw(typ, val, tb) if val is not None else self._gen.throw(typ)

    def close(self) -> None:
        self._rt = None
        if self._gen is not None:
            self._gen.close()

    def _unawaited(self) -> str:
        """The warning: what was not scheduled, and what to write."""
        raise NotImplementedError

    def __del__(self) -> None:
        # Not while its run is dropped from memory: its calls go with it, scheduled or not (`close`).
        if self._rt is not None and not self._rt.closed and self._rt is current_runtime():
            warnings.warn(self._unawaited(), UnawaitedCallWarning, stacklevel=2)


class ActionCall(DurableCall):
    """A scheduled-on-await call of an action inside a workflow. It carries the call so that
    `Workflow.run_action` can override its policies before it is awaited."""

    __slots__ = ("args", "backoff", "defn", "kwargs", "retry", "timeout")

    def __init__(self, defn: ActionDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__()
        self.defn = defn
        self.args = args
        self.kwargs = kwargs
        self.retry: RetryPolicy | None = None
        self.backoff: BackoffPolicy | None = None
        self.timeout: float | None = None

    def with_options(
        self,
        retry: RetryPolicy | None = None,
        backoff: BackoffPolicy | None = None,
        timeout: float | timedelta | None = None,
    ) -> ActionCall:
        self.retry = retry_policy(retry, f"a call of {self.defn.id}") or self.retry
        self.backoff = backoff_policy(backoff, f"a call of {self.defn.id}") or self.backoff
        self.timeout = seconds(timeout, f"timeout of {self.defn.id}") if timeout is not None else self.timeout
        return self

    def _options(self) -> Any:
        if self.retry is None and self.backoff is None and self.timeout is None:
            return None  # the executing worker applies the action's registered policy
        d = self.defn
        return {
            "retry": (self.retry or d.retry).to_json(),
            "backoff": (self.backoff or d.backoff).to_json(),
            "timeout": self.timeout if self.timeout is not None else d.timeout,
            "retry_chosen": self.retry is not None or d.retry_chosen,
        }

    def __await__(self) -> Generator[Any, Any, Any]:
        self._rt = None
        rt = current_runtime()
        if rt is None:
            raise NotInWorkflow(f"ActionCall of {self.defn.id} awaited outside a workflow")
        args = self.defn.signature.encode_args(self.args, self.kwargs)
        fut = rt.schedule(
            StepKind.ACTION,
            self.defn.id,
            args,
            queue=self.defn.queue,
            options=self._options(),
            decode=self.defn.signature.decode_result,
        )
        return (yield from fut)

    def _unawaited(self) -> str:
        name = self.defn.fn.__name__
        return (
            f"action {self.defn.id} was called but never awaited, so it was not scheduled: write "
            f"`await {name}(...)`, or pass the call to asyncio.gather or asyncio.create_task"
        )

    def __repr__(self) -> str:
        return f"<ActionCall {self.defn.id}>"


class ActionFunction(Generic[P, R]):
    """What `@action` returns: the function, made durable when called from a workflow."""

    def __init__(self, defn: ActionDef) -> None:
        self.defn = defn
        functools.update_wrapper(self, defn.fn)

    @property
    def id(self) -> str:
        return self.defn.id

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Typed as the function is (its parameters, and a coroutine for an `async def` action), so
        that mypy checks calls. A plain `def` action is typed to return Any: outside an async
        workflow the call gives its value, inside one an awaitable of it. (A `Depends` parameter
        that a type checker should not ask for takes the provider as its default:
        `db: Db = Depends(get_db)`.)"""
        rt = current_runtime()
        if rt is not None:
            call = ActionCall(self.defn, args, kwargs)
            bridge = thread_bridge()
            return bridge.call(call) if bridge is not None else call  # type: ignore[return-value]
        acting = in_effect(self.defn)  # a test environment's fake, called from another action
        result = call_directly(acting, args, kwargs)
        if acting.is_async == self.defn.is_async:
            return result  # type: ignore[no-any-return]
        return _as_called(result, self.defn.is_async)  # type: ignore[no-any-return]

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        return self if obj is None else functools.partial(self, obj)

    def __repr__(self) -> str:
        return f"<action {self.defn.id}>"


def _as_called(result: Any, awaited: bool) -> Any:
    """A fake's result in the shape its action's callers expect: an awaitable of it for an async
    action a plain `def` fake replaces, its value for a plain action an async fake replaces."""
    if awaited:

        async def value() -> Any:
            return result

        return value()
    return asyncio.run(result) if inspect.iscoroutine(result) else result


def call_directly(defn: ActionDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A plain call with Depends resolved: a coroutine for async actions, the value for sync ones."""
    if not defn.signature.injected:
        return defn.fn(*args, **kwargs)
    if defn.is_async:
        return invoke_with_dependencies(defn, args, kwargs)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(invoke_with_dependencies(defn, args, kwargs))
    # Called from async code: resolve the dependencies on a private loop in a helper thread.
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(invoke_with_dependencies(defn, args, kwargs))
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


class _Declare(Protocol):
    """What `@action(...)` with options returns: the decorator, typed like `@action` itself."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, T]], /) -> ActionFunction[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T], /) -> ActionFunction[P, Any]: ...


@overload
def action(fn: Callable[P, Coroutine[Any, Any, T]], /) -> ActionFunction[P, Coroutine[Any, Any, T]]: ...


@overload
def action(fn: Callable[P, T], /) -> ActionFunction[P, Any]: ...


@overload
def action(
    fn: None = None,
    /,
    *,
    id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    timeout: float | timedelta | None = None,
    retry: RetryPolicy | None = None,
    backoff: BackoffPolicy | None = None,
    queue: str | Queue = "default",
    isolate: bool = False,
) -> _Declare: ...


def action(
    fn: Callable[P, R] | None = None,
    /,
    *,
    id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    timeout: float | timedelta | None = None,
    retry: RetryPolicy | None = None,
    backoff: BackoffPolicy | None = None,
    queue: str | Queue = "default",
    isolate: bool = False,
) -> ActionFunction[P, R] | Callable[[Callable[P, R]], ActionFunction[P, R]]:
    """Declare an action: a sync or async function that does one piece of work in the world."""

    def decorate(f: Callable[P, R]) -> ActionFunction[P, R]:
        if isinstance(f, ActionFunction):
            raise TypeError(f"{f.defn.id} is already an action; apply @action once")
        if not callable(f):
            raise TypeError(f"@action needs a function, got {f!r}")
        action_id = check_name(f"{importable_module(f.__module__)}.{f.__qualname__}" if id is None else id, "action id")
        queue_id = queue_name(queue, f"queue of action {action_id}")
        if isinstance(queue, Queue) and queue.spec.per_key is not None:
            # SPEC's own example puts such a queue on an action: declared, its other limits hold.
            log.warning(
                "action %s: queue %r has per_key, which limits the runs started with a key= in that queue; "
                "an action attempt has no key, so per_key does not limit this action's attempts (its other "
                "limits do). Put the queue on the workflow to run one per key at a time",
                action_id,
                queue.name,
            )
        defn = ActionDef(
            id=action_id,
            fn=f,
            name=name or f.__name__,
            description=description if description is not None else (f.__doc__ or "").strip(),
            timeout=seconds(timeout, f"timeout of action {action_id}"),
            retry=retry_policy(retry, f"action {action_id}") or RetryPolicy.default(),
            retry_chosen=retry is not None,
            backoff=backoff_policy(backoff, f"action {action_id}") or BackoffPolicy(),
            queue=queue_id,
            isolate=isolate,
            signature=Signature.of(f, action_id),
        )
        if defn.timeout is not None and not isolate and not defn.is_async:
            warnings.warn(
                f"action {action_id} is a plain def with timeout={defn.timeout:g}s and runs on a thread: past "
                "its timeout the attempt fails with ActionTimeout, but nothing can stop the thread, which runs "
                "on (and keeps its side effects). Declare it with isolate=True so that the timeout kills it "
                "(its own process, kept warm), or make it async def",
                ThreadTimeoutWarning,
                stacklevel=2,
            )
        registry.register(defn)
        return ActionFunction(defn)

    return decorate(fn) if fn is not None else decorate


Action = action
"""Ziet's spelling: `@Action(id=..., name=..., description=...)` is the same decorator."""
