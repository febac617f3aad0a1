"""Calling an action's function with its `Depends` parameters resolved for this one invocation
(mountaineer-di), generator providers cleaned up after it: the same on a worker and in a direct call.

What a provider sees and when, as FastAPI users expect it:

- Its cleanup (the code after a generator provider's `yield`) runs once the action is done, and sees
  how it ended: an exception the action raised (a timeout's cancellation included) is thrown in at
  the `yield`, so that `try: yield session; session.commit() except: session.rollback(); raise`
  rolls back a failed attempt instead of committing it. The action's own outcome stands whatever
  the provider does with it (a provider cannot turn a failure into a result).
- On a worker, plain `def` providers (functions, generators, classes) run on the worker's action
  threads, as the plain `def` action itself does, never on its event loop: a provider that blocks
  (opening a connection) holds up its own attempt only, not every run of the worker.
- A plain `def` action abandoned at its timeout keeps running on its thread (nothing can stop a
  thread): its providers are cleaned up when that thread returns, not under it.
- Called directly (a unit test), an action takes a value for an injected parameter as an ordinary
  keyword argument (`send_email(to, subject, emailer=FakeEmailer())`); the provider is then not called.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from cairn.registry import ActionDef

log = logging.getLogger("cairn.action")

RunSync = Callable[[Callable[[], Any]], Awaitable[Any]]
"""How plain `def` code is run off the event loop (the worker's action threads)."""

_deferred: set[Any] = set()
"""Cleanups handed to the event loop by the threads of abandoned attempts, held until they end."""


async def invoke_with_dependencies(
    defn: ActionDef, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any], run_sync: RunSync | None = None
) -> Any:
    """Resolve Depends for this one invocation, call, then clean up generator providers."""
    if not defn.signature.injected:  # the resolver inspects the signature on every call: skip it
        if defn.is_async:
            return await defn.fn(*args, **kwargs)
        if run_sync is not None:
            return await run_sync(functools.partial(defn.fn, *args, **kwargs))
        return defn.fn(*args, **kwargs)
    injected = defn.signature.injected
    given = {name: value for name, value in kwargs.items() if name in injected}  # a direct call's own values
    try:
        bound = defn.signature.public.bind(*args, **{k: v for k, v in kwargs.items() if k not in injected})
    except TypeError as exc:
        raise TypeError(f"{defn.id}: {exc}") from None
    bound.apply_defaults()
    known = {**bound.arguments, **given}
    resolver = _resolver_type()(known, run_sync)
    thread: _ThreadCall | None = None
    try:
        values = {**known, **await resolver.build_call_kwargs(_injected_only(defn))}
        call_args, call_kwargs = _call_shape(defn.signature.signature, values)
        if defn.is_async:
            result = await defn.fn(*call_args, **call_kwargs)
        elif run_sync is not None:
            thread = _ThreadCall(functools.partial(defn.fn, *call_args, **call_kwargs))
            result = await run_sync(thread)
        else:
            result = defn.fn(*call_args, **call_kwargs)
    except BaseException as exc:
        if thread is not None and thread.abandon(resolver, exc):
            raise  # its thread runs on: the providers are cleaned up when it returns
        await resolver.exit(type(exc), exc, exc.__traceback__)  # whatever the providers do, the outcome stands
        raise
    await resolver.close()
    return result


def _injected_only(defn: ActionDef) -> Callable[..., None]:
    """A stand-in whose only parameters are the action's injected ones (as declared, keyword-only):
    what the resolver is asked to fill; the other arguments are the caller's, passed through as given."""

    def injected(**values: Any) -> None:
        """The injected parameters of an action."""

    parameters = defn.signature.signature.parameters
    names = [name for name in parameters if name in defn.signature.injected]
    injected.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [parameters[name].replace(kind=inspect.Parameter.KEYWORD_ONLY) for name in names]
    )
    injected.__annotations__ = {name: defn.signature.hints[name] for name in names if name in defn.signature.hints}
    injected.__name__ = injected.__qualname__ = defn.id
    return injected


def _call_shape(signature: inspect.Signature, values: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """The call's positional and keyword arguments for `values` by parameter name."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if name not in values:
            continue
        if parameter.kind is inspect.Parameter.POSITIONAL_ONLY:
            args.append(values[name])
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            args.extend(values[name])
        elif parameter.kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update(values[name])
        else:
            kwargs[name] = values[name]
    return args, kwargs


class _ThreadCall:
    """A plain `def` action's call handed to a thread, which knows whether it started and returned,
    so that an attempt abandoned while it runs (its timeout, a stopping worker) leaves the cleanup
    of its providers to the moment its thread returns."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._state = "queued"
        self._then: Callable[[], None] | None = None

    def __call__(self) -> Any:
        with self._lock:
            if self._state == "dropped":  # abandoned before it started: it never runs
                raise asyncio.CancelledError()
            self._state = "running"
        try:
            return self._fn()
        finally:
            with self._lock:
                self._state, then = "returned", self._then
            if then is not None:
                then()

    def abandon(self, resolver: Any, exc: BaseException) -> bool:
        """The attempt ended without waiting for this call (`exc`): True when its thread still runs,
        and cleans up through `resolver` on the event loop when it returns; False when the cleanup
        may run now (it returned, or never started and now never will)."""
        with self._lock:
            if self._state == "queued":
                self._state = "dropped"
            if self._state != "running":
                return False
            self._then = functools.partial(_clean_up_later, asyncio.get_running_loop(), resolver, exc)
            return True


def _clean_up_later(loop: asyncio.AbstractEventLoop, resolver: Any, exc: BaseException) -> None:
    """On an abandoned attempt's thread as it returns: hand its providers' cleanup to the loop."""

    def start() -> None:
        task = loop.create_task(resolver.exit(type(exc), exc, exc.__traceback__), name="cairn-depends-cleanup")
        _deferred.add(task)
        task.add_done_callback(_cleaned_up)

    try:
        loop.call_soon_threadsafe(start)
    except RuntimeError:  # the loop is closed (its worker stopped): nothing left to clean up with
        log.warning("the providers of an abandoned action attempt were not cleaned up: its event loop is closed")


def _cleaned_up(task: asyncio.Task[Any]) -> None:
    _deferred.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("cleaning up the providers of an abandoned action attempt failed: %r", task.exception())


@functools.cache
def _resolver_type() -> type[Any]:
    # Imported here, by the actions that inject something: mountaineer-di imports FastAPI when it is
    # installed (0.2 s), which every process that defines an action would otherwise pay at import.
    from mountaineer_di import DependencyResolver

    class Resolver(DependencyResolver):
        """mountaineer-di's resolver, but for where plain `def` providers run: on `run_sync`'s
        threads when it is given (a worker), like the plain `def` actions they serve."""

        def __init__(self, known: dict[str, Any], run_sync: RunSync | None) -> None:
            super().__init__(initial_kwargs=known)
            self._run_sync = run_sync

        async def _call_dependency(self, dependency: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
            if (
                self._run_sync is None
                or inspect.iscoroutinefunction(dependency)
                or inspect.isasyncgenfunction(dependency)
            ):
                return await super()._call_dependency(dependency, kwargs)
            if inspect.isgeneratorfunction(dependency):
                return await self._enter(contextlib.contextmanager(dependency)(**kwargs))
            result = await self._off_loop(functools.partial(dependency, **kwargs))
            if inspect.isawaitable(result):
                result = await result
            if hasattr(result, "__aenter__") and hasattr(result, "__aexit__"):
                return await self._stack.enter_async_context(result)
            if hasattr(result, "__enter__") and hasattr(result, "__exit__"):
                return await self._enter(result)
            return result

        async def _enter(self, manager: Any) -> Any:
            value = await self._off_loop(manager.__enter__)

            async def leave(*exc_info: Any) -> bool:
                return bool(await self._off_loop(functools.partial(manager.__exit__, *exc_info)))

            self._stack.push_async_exit(leave)
            return value

        async def _off_loop(self, fn: Callable[[], Any]) -> Any:
            assert self._run_sync is not None
            try:
                pending = self._run_sync(fn)
            except RuntimeError:  # its threads are shut down (a stopped worker's last cleanups): here then
                return fn()
            return await pending

    return Resolver
