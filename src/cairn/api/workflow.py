"""`@workflow` on `Workflow` subclasses and on functions, and the awaitable child-workflow call."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Generator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from cairn.api.action import ActionCall, DurableCall
from cairn.engine.lint import check_workflow
from cairn.engine.runtime import Runtime, current_runtime, thread_bridge
from cairn.errors import NotInWorkflow, UnknownWorkflowError
from cairn.names import check_name, importable_module
from cairn.policies import BackoffPolicy, RetryPolicy, seconds
from cairn.queues import Queue, queue_name
from cairn.registry import WorkflowDef, registry
from cairn.serialization import Signature, dumps

if TYPE_CHECKING:
    from cairn.client.client import Client
    from cairn.client.handle import RunHandle
    from cairn.client.sync import SyncClient, SyncRunHandle

T = TypeVar("T")


class Workflow:
    """Base class of class-style workflows: define `async def run(self, ...)` (or `handle`).

    Public instance attributes are the run's properties, recorded after every step.
    """

    __cairn_workflow__: WorkflowDef

    async def run_action(
        self,
        call: Any,
        *,
        retry: RetryPolicy | None = None,
        backoff: BackoffPolicy | None = None,
        timeout: float | timedelta | None = None,
    ) -> Any:
        """Await an action call with per-call retry, backoff or timeout. Outside a workflow (the
        workflow called directly, as in a unit test) the action has already run as a plain call:
        its value is returned (awaited, for an async action), and the options do not apply."""
        if current_runtime() is None:  # called directly (a test, a script): the action ran as a plain call
            return await call if inspect.isawaitable(call) else call
        if not isinstance(call, ActionCall):
            raise TypeError(
                f"run_action expects an action call such as my_action(x), got {call!r}; "
                "call the @action function without awaiting it and pass the result here"
            )
        return await call.with_options(retry=retry, backoff=backoff, timeout=timeout)

    @overload
    @classmethod
    def where_id(cls, id: str, client: Client | None = None) -> RunHandle: ...

    @overload
    @classmethod
    def where_id(cls, id: str, client: SyncClient) -> SyncRunHandle: ...

    @classmethod
    def where_id(cls, id: str, client: Client | SyncClient | None = None) -> RunHandle | SyncRunHandle:
        """The handle of run `id` (on the default client unless one is given; a blocking handle
        on a blocking client, for scripts)."""
        return _where_id(id, client)


class ChildCall(DurableCall):
    """Awaiting it starts a child run and waits durably for its result."""

    __slots__ = ("args", "defn", "kwargs", "run_id")

    def __init__(self, defn: WorkflowDef, args: tuple[Any, ...], kwargs: dict[str, Any], run_id: str | None) -> None:
        super().__init__()
        self.defn = defn
        self.args = args
        self.kwargs = kwargs
        self.run_id = run_id

    def __await__(self) -> Generator[Any, Any, Any]:
        self._rt = None
        rt = _runtime("awaiting a child workflow")
        args = self.defn.signature.encode_args(self.args, self.kwargs)
        child_id = self.run_id or self.defn.derive_id(args, len(self.args)) or f"{rt.run_id}:{rt.next_seq}"
        fut = rt.wait_for_child(child_id, self.defn.id, args, {}, self.defn.signature.decode_result, self.defn.queue)
        return (yield from fut)

    def _unawaited(self) -> str:
        return (
            f"child workflow {self.defn.id} was called but never awaited, so it was not started: write "
            "`await ...` on the call, or `cairn.start_child(...)` to start it without waiting"
        )


def _runtime(what: str) -> Runtime:
    rt = current_runtime()
    if rt is None:
        raise NotInWorkflow(f"{what} is only possible inside a workflow")
    return rt


class WorkflowFunction:
    """What `@workflow` returns for a function: awaiting it inside a workflow starts a child."""

    def __init__(self, defn: WorkflowDef) -> None:
        self.__cairn_workflow__ = defn
        functools.update_wrapper(self, defn.entry)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if current_runtime() is not None:
            call = ChildCall(self.__cairn_workflow__, args, kwargs, None)
            bridge = thread_bridge()
            return bridge.call(call) if bridge is not None else call
        return self.__cairn_workflow__.entry(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<workflow {self.__cairn_workflow__.id}>"

    @overload
    def where_id(self, id: str, client: Client | None = None) -> RunHandle: ...

    @overload
    def where_id(self, id: str, client: SyncClient) -> SyncRunHandle: ...

    def where_id(self, id: str, client: Client | SyncClient | None = None) -> RunHandle | SyncRunHandle:
        return _where_id(id, client)


def _where_id(id: str, client: Client | SyncClient | None) -> RunHandle | SyncRunHandle:
    from cairn.client.client import connect

    return (client or connect()).get(id)


WorkflowRef = type[Workflow] | WorkflowFunction | str


def _init_signature(cls: type, entry: Callable[..., Any], workflow_id: str) -> Signature:
    """The input of `__init__` with the result type of `handle`."""
    taken = Signature.of(cls.__init__, workflow_id, skip_first=True)  # type: ignore[misc]
    returned = Signature.of(entry, workflow_id, skip_first=True)
    hints = {k: v for k, v in taken.hints.items() if k != "return"}
    if "return" in returned.hints:
        hints["return"] = returned.hints["return"]
    shape = taken.signature.replace(return_annotation=returned.signature.return_annotation)
    return dataclasses.replace(taken, signature=shape, hints=hints)


def _takes_input_in_init(cls: type, entry: Callable[..., Any]) -> bool:
    """Zenaton's style: `__init__(self, user)` takes the input and `handle(self)` takes nothing."""
    init = getattr(cls, "__init__", object.__init__)
    if init is object.__init__:
        return False
    init_params = list(inspect.signature(init).parameters.values())[1:]
    entry_params = list(inspect.signature(entry).parameters.values())[1:]
    return bool(init_params) and not entry_params


def resolve_workflow(ref: Any) -> WorkflowDef:
    """A class, a decorated function, or a registered id/name → its definition."""
    defn = getattr(ref, "__cairn_workflow__", None)
    if isinstance(defn, WorkflowDef):
        return defn
    if isinstance(ref, str):
        found = registry.workflow(ref)
        if found is None:
            known = ", ".join(w.id for w in registry.workflows()) or "none"
            raise UnknownWorkflowError(
                f"no workflow is registered as {ref!r} in this process (registered: {known}); "
                "import the module that defines it, or check the name"
            )
        return found
    raise TypeError(f"expected a @workflow class, function or name, got {ref!r}")


@overload
def workflow(target: type[T], /) -> type[T]: ...  # type: ignore[overload-overlap]


@overload
def workflow(target: Callable[..., Any], /) -> WorkflowFunction: ...


@overload
def workflow(
    target: None = None,
    /,
    *,
    id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    timeout: float | timedelta | None = None,
    queue: str | Queue = "default",
    on_failure: Literal["raise", "pause"] = "raise",
    schedule: str | None = None,
) -> Callable[[Any], Any]: ...


def workflow(
    target: Any = None,
    /,
    *,
    id: str | None = None,
    name: str | None = None,
    description: str | None = None,
    timeout: float | timedelta | None = None,
    queue: str | Queue = "default",
    on_failure: Literal["raise", "pause"] = "raise",
    schedule: str | None = None,
) -> Any:
    """Declare a workflow: a `Workflow` subclass with `run`/`handle`, or a (sync or async) function.
    `timeout` (seconds or timedelta): a run still going that long after its start (its first
    activation: not while it waits for its queue) is cancelled with `WorkflowTimeout`, whatever it
    waits for; a retry gives it that long again from the retry.
    `schedule`: a cron expression (UTC, no arguments), shorthand for a `cairn.Schedule` whose id is the workflow's."""
    if on_failure not in ("raise", "pause"):
        raise ValueError(f"on_failure must be 'raise' or 'pause', got {on_failure!r}")

    def decorate(t: Any) -> Any:
        is_class = isinstance(t, type)
        if is_class:
            if not issubclass(t, Workflow):
                raise TypeError(f"@workflow class {t.__qualname__} must subclass cairn.Workflow")
            entry = t.__dict__.get("run") or t.__dict__.get("handle") or getattr(t, "run", None)
            if entry is None or entry is Workflow.__dict__.get("run"):
                entry = getattr(t, "handle", None)
            if entry is None or not callable(entry):
                raise TypeError(f"workflow {t.__qualname__} needs a `run` (or `handle`) method")
        elif callable(t):
            entry = t
        else:
            raise TypeError(f"@workflow needs a class or a function, got {t!r}")
        init_input = is_class and _takes_input_in_init(t, entry)
        wf_id = check_name(f"{importable_module(t.__module__)}.{t.__qualname__}" if id is None else id, "workflow id")
        queue_id = queue_name(queue, f"queue of workflow {wf_id}")
        defn = WorkflowDef(
            id=wf_id,
            target=t,
            name=name or t.__name__,
            description=description if description is not None else (t.__doc__ or "").strip(),
            timeout=seconds(timeout, f"timeout of workflow {wf_id}"),
            queue=queue_id,
            on_failure=on_failure,
            signature=_init_signature(t, entry, wf_id) if init_input else Signature.of(entry, wf_id, is_class),
            is_class=is_class,
            entry=entry,
            init_input=init_input,
        )
        check_workflow(t, entry, workflow_id=wf_id)  # static determinism check, before registering
        registry.register(defn)
        declared: Any = t if is_class else WorkflowFunction(defn)
        if is_class:
            t.__cairn_workflow__ = defn
        if schedule is not None:
            from cairn.schedules import Schedule

            Schedule(defn.id, declared, cron=schedule)
        return declared

    return decorate(target) if target is not None else decorate


__all__ = ["ChildCall", "Workflow", "WorkflowFunction", "dumps", "workflow"]
