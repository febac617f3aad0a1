"""Calling an action's function with its `Depends` parameters resolved for this one invocation
(mountaineer-di), generator providers cleaned up after it: the same on a worker and in a direct call.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from cairn.registry import ActionDef


async def invoke_with_dependencies(
    defn: ActionDef,
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    run_sync: Callable[[Callable[[], Any]], Awaitable[Any]] | None = None,
) -> Any:
    """Resolve Depends for this one invocation, call, then clean up generator providers."""
    if not defn.signature.injected:  # the resolver inspects the signature on every call: skip it
        if defn.is_async:
            return await defn.fn(*args, **kwargs)
        if run_sync is not None:
            return await run_sync(functools.partial(defn.fn, *args, **kwargs))
        return defn.fn(*args, **kwargs)
    # Imported here, by the actions that inject something: mountaineer-di imports FastAPI when it is
    # installed (0.2 s), which every process that defines an action would otherwise pay at import.
    from mountaineer_di import DependencyResolver

    bound = defn.signature.public.bind_partial(*args, **kwargs)
    bound.apply_defaults()
    resolver = DependencyResolver(initial_kwargs=dict(bound.arguments))
    try:
        call_kwargs = await resolver.build_call_kwargs(defn.fn)
        if defn.is_async:
            return await defn.fn(**call_kwargs)
        if run_sync is not None:
            return await run_sync(functools.partial(defn.fn, **call_kwargs))
        return defn.fn(**call_kwargs)
    finally:
        await resolver.close()
