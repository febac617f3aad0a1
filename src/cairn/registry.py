"""Definitions of actions and workflows, and the process-wide registry that maps ids to them.

The decorators in `cairn.api` build these records; the engine and worker consume them without
importing `api`, which keeps the dependency arrows pointing down.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import inspect
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal, overload

from cairn.names import check_name, importable_module
from cairn.policies import BackoffPolicy, RetryPolicy
from cairn.serialization import Signature


@dataclass(eq=False)
class ActionDef:
    id: str
    fn: Callable[..., Any]
    name: str
    description: str
    timeout: float | None
    retry: RetryPolicy
    retry_chosen: bool
    """Whether `retry` was given (else the default): only a chosen policy retries an ActionTimeout."""
    backoff: BackoffPolicy
    queue: str
    isolate: bool
    signature: Signature
    is_async: bool = field(init=False)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.fn)

    @property
    def origin(self) -> str:
        return f"{importable_module(self.fn.__module__)}.{self.fn.__qualname__}"

    @property
    def written_at(self) -> str:
        return _written_at(self.fn)


@dataclass(eq=False)
class WorkflowDef:
    id: str
    target: Callable[..., Any]
    """The class (class style) or the function (function style)."""
    name: str
    description: str
    timeout: float | None
    queue: str
    on_failure: Literal["raise", "pause"]
    signature: Signature
    is_class: bool
    entry: Callable[..., Any]
    """The function holding the body: `run`/`handle` for a class, the function itself otherwise."""
    init_input: bool = False
    """Zenaton's style: the class takes the run's input in `__init__`, and `handle(self)` none."""
    is_async: bool = field(init=False)
    version: str = field(init=False)

    def __post_init__(self) -> None:
        self.is_async = inspect.iscoroutinefunction(self.entry)
        try:
            source = inspect.getsource(self.target)
        except (OSError, TypeError):
            source = self.entry.__code__.co_code.hex()
        self.version = hashlib.sha256(source.encode()).hexdigest()[:16]

    @property
    def origin(self) -> str:
        return f"{importable_module(self.target.__module__)}.{self.target.__qualname__}"

    @property
    def written_at(self) -> str:
        return _written_at(self.entry)

    def encode_input(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """A start's arguments, validated against the signature and encoded, before anything is written."""
        return self.signature.validate_input(args, kwargs)

    @property
    def derives_id(self) -> bool:
        """Whether `derive_id` has an `id` method to call (see `WorkflowInfo.derives_id`)."""
        return self.is_class and callable(getattr(self.target, "id", None))

    def derive_id(self, encoded: str, positional: int = 0) -> str | None:
        """The run id a class derives from its `encoded` input with `id(self, *args, **kwargs)`
        (Zenaton), if any; given the arguments decoded as the run will get them (a start by name, the
        CLI or HTTP give JSON: a dict for a model), the first `positional` of them by position, as the
        caller gave them (`def id(self, *args)` got the start's arguments by name)."""
        if not self.derives_id:
            return None
        id_fn = getattr(self.target, "id")  # noqa: B009 (the target is typed as a callable; its class has `id`)
        args, kwargs = self.signature.decode_args(encoded, positional=positional)
        if self.init_input:  # Zenaton's `def id(self)`, on the object made from the input
            value = id_fn(self.target(*args, **kwargs))
        else:
            value = id_fn(instantiate(self.target), *args, **kwargs)
        return None if value is None else str(value)

    @functools.cached_property
    def input_schema_text(self) -> str:
        """`input_schema()` as workers store it (keys in the order given), made once."""
        return json.dumps(self.input_schema())

    def input_schema(self) -> dict[str, Any]:
        """JSON schema of the input (for `GET /api/workflows`, the CLI, and starting by name where
        the code is not imported). `properties` follow the signature's order, which JSON objects
        do not promise to keep, so the order (and each parameter's kind) is also given explicitly
        under "x-cairn-parameters": a start by name binds positional arguments by it."""
        from pydantic import create_model

        fields: dict[str, Any] = {}
        order: list[dict[str, str]] = []
        for name, p in self.signature.public.parameters.items():
            hint = self.signature.hints.get(name, Any)
            default: Any
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                hint, default = list[hint], []  # type: ignore[valid-type]
            elif p.kind is inspect.Parameter.VAR_KEYWORD:
                hint, default = dict[str, hint], {}  # type: ignore[valid-type]
            else:
                default = ... if p.default is inspect.Parameter.empty else p.default
            fields[name] = (hint, default)
            order.append({"name": name, "kind": p.kind.name.lower()})
        try:
            model = create_model(f"{self.name}Input", **fields)
            schema: dict[str, Any] = model.model_json_schema(schema_generator=_input_schema_generator())
        except Exception:  # a type pydantic cannot describe: still usable, just unschemed
            schema = {"type": "object"}
        schema["x-cairn-parameters"] = order
        return schema


Definition = ActionDef | WorkflowDef

KEY_FORMATS = {"int": "whole number", "float": "number", "bool": "boolean", "decimal": "decimal"}
"""Formats for what pydantic's JSON schema leaves unchecked, and a start by name then let through
to fail at the worker (`cairn.client.input_schema` checks each with pydantic's own parser): the
keys of a `dict[int, ...]` (any text was taken), and a `Decimal` given as a string ("abc")."""


@functools.cache
def _input_schema_generator() -> type[Any]:
    from pydantic.json_schema import GenerateJsonSchema

    class InputSchema(GenerateJsonSchema):
        def decimal_schema(self, schema: Any) -> Any:
            out = super().decimal_schema(schema)
            for branch in out.get("anyOf", ()):
                if branch.get("type") == "string" and "pattern" not in branch:
                    branch["format"] = KEY_FORMATS["decimal"]
            return out

        def dict_schema(self, schema: Any) -> Any:
            out = super().dict_schema(schema)
            key_format = KEY_FORMATS.get(str((schema.get("keys_schema") or {}).get("type")))
            if key_format is not None and "propertyNames" not in out:
                out["propertyNames"] = {"format": key_format}
            return out

    return InputSchema


def instantiate(cls: Any) -> Any:
    """A workflow object: `cls()` when its __init__ needs no arguments, else an uninitialised one.

    A class whose __init__ takes the input (Zenaton's style: `init_input`) is made from the input
    instead, by the engine; elsewhere (deriving an id from `run`'s input) such a constructor is
    skipped rather than called with nothing.
    """
    try:
        params = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        params = None
    if params is not None and all(
        p.default is not inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params
    ):
        return cls()
    return cls.__new__(cls)


class Registry:
    """Id → definition. Re-registering the same origin replaces it (module reload); another clashes."""

    def __init__(self) -> None:
        self._defs: dict[str, Definition] = {}
        self._substitutes: dict[str, list[ActionDef]] = {}
        """Action id → the substitutes in place, oldest first; the last one runs."""
        self._schedules: dict[str, Any] = {}
        """Schedules declared in code (`cairn.Schedule`), by id: workers serving their workflow upsert them."""
        self._queues: dict[str, Any] = {}
        """Queues declared in code (`cairn.Queue`), by name: workers upsert their limits."""
        self._lock = threading.Lock()

    @overload
    def register(self, defn: Definition, /) -> Definition: ...

    @overload
    def register(self, module: ModuleType | str, name: str, func: Callable[..., Any], /) -> Definition: ...

    def register(
        self, what: Definition | ModuleType | str, name: str | None = None, func: Callable[..., Any] | None = None, /
    ) -> Definition:
        """Register a definition, or (Waymark's form) `register(module, name, func)`: the function
        as an action with id `module.name` and the default policies. A different function under an
        id that is taken raises ValueError; the same origin again replaces it (a module reload)."""
        if isinstance(what, ActionDef | WorkflowDef):
            return self._register(what)
        if name is None or func is None or not callable(func):
            raise TypeError("register takes a definition, or (module, name, func) with a callable func")
        module = what.__name__ if isinstance(what, ModuleType) else str(what)
        return self._register(plain_action(func, f"{module}.{name}", name))

    def _register(self, defn: Definition) -> Definition:
        with self._lock:
            existing = self._defs.get(defn.id)
            if (
                existing is not None
                and (existing.origin, existing.written_at) != (defn.origin, defn.written_at)
                and not _cell_run_again(existing, defn)
            ):
                # Only the same definition made again (its module imported again, the function that
                # declares it called again) replaces it: two lambdas, or two functions of one name in
                # one scope, share a qualified name but not a place in the source.
                raise ValueError(
                    f"{type(defn).__name__[:-3].lower()} id {defn.id!r} is already registered by "
                    f"{existing.origin} ({existing.written_at}); give {defn.origin} ({defn.written_at}) "
                    "another id (id=...)"
                )
            self._defs[defn.id] = defn
            return defn

    def get(self, id: str | ModuleType, name: str | None = None) -> Definition | None:
        """The definition registered as `id`; `get(module, name)` (Waymark's form, with the module or
        its name, as `register` takes it) looks up `module.name`, else the one action of that module
        declared with `@action(name=name)`."""
        if name is None:
            return self._defs.get(id) if isinstance(id, str) else None
        module = id.__name__ if isinstance(id, ModuleType) else str(id)
        found = self._defs.get(f"{module}.{name}")
        if found is not None:
            return found
        named = [d for d in self.actions() if d.name == name and importable_module(d.fn.__module__) == module]
        return named[0] if len(named) == 1 else None

    def action(self, id: str) -> ActionDef | None:
        """The action a worker runs for steps named `id` (a test's substitute while one is in place)."""
        layers = self._substitutes.get(id)
        d = layers[-1] if layers else self._defs.get(id)
        return d if isinstance(d, ActionDef) else None

    @contextlib.contextmanager
    def substituted(self, defn: ActionDef) -> Iterator[None]:
        """Run `defn` for steps of the action registered under `defn.id` while the block lasts: the
        seam `cairn.testing`'s `replace_action` uses (the journal still records the action's id).
        Substitutes of one action stack: the latest still in place runs, and each block's end takes
        out its own, so overlapping ones may end in any order."""
        if not isinstance(self._defs.get(defn.id), ActionDef):
            raise KeyError(f"no action is registered as {defn.id!r}")
        with self._lock:
            self._substitutes.setdefault(defn.id, []).append(defn)
        try:
            yield
        finally:
            with self._lock:
                layers = self._substitutes.get(defn.id, [])
                for i in reversed(range(len(layers))):
                    if layers[i] is defn:
                        del layers[i]
                        break
                if not layers:
                    self._substitutes.pop(defn.id, None)

    def workflow(self, id: str) -> WorkflowDef | None:
        d = self._defs.get(id)
        if isinstance(d, WorkflowDef):
            return d
        # Also by human name, for `cairn start NAME`: only when one workflow bears it (two modules'
        # `quick`, say), never the first of several, which would start or list another's runs.
        named = [w for w in self.workflows() if w.name == id]
        return named[0] if len(named) == 1 else None

    def names(self) -> list[str]:
        return sorted(self._defs)

    def entries(self) -> list[Definition]:
        return [self._defs[k] for k in sorted(self._defs)]

    def actions(self) -> list[ActionDef]:
        return [d for d in self.entries() if isinstance(d, ActionDef)]

    def workflows(self) -> list[WorkflowDef]:
        return [d for d in self.entries() if isinstance(d, WorkflowDef)]

    def register_schedule(self, schedule: Any) -> None:
        """A schedule declared in code; declaring its id again (a reload) replaces it."""
        with self._lock:
            self._schedules[schedule.id] = schedule

    def schedules(self) -> list[Any]:
        return [self._schedules[k] for k in sorted(self._schedules)]

    def register_queue(self, queue: Any) -> None:
        """A queue declared in code; declaring its name again replaces it (the last declaration wins)."""
        with self._lock:
            self._queues[queue.name] = queue

    def queues(self) -> list[Any]:
        return [self._queues[k] for k in sorted(self._queues)]

    def reset(self) -> None:
        with self._lock:
            self._defs.clear()
            self._substitutes.clear()
            self._schedules.clear()
            self._queues.clear()

    def __iter__(self) -> Iterator[Definition]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self._defs)


_in_effect: contextvars.ContextVar[Registry | None] = contextvars.ContextVar("cairn_registry", default=None)
"""The registry whose substitutes apply to actions called directly in this context (a test environment's)."""


def substitutes_in_this_context(actions: Registry | None) -> contextvars.Token[Registry | None]:
    """Make the substitutes of `actions` (a test environment's `replace_action`) apply to actions
    called directly in this context and the tasks it starts: one action calling another runs the
    fake in its place, as a workflow's call does."""
    return _in_effect.set(actions)


def in_effect(defn: ActionDef) -> ActionDef:
    """`defn`, or the substitute put in its place in this context (see `substitutes_in_this_context`)."""
    actions = _in_effect.get()
    found = None if actions is None else actions.action(defn.id)
    return defn if found is None else found


def plain_action(fn: Callable[..., Any], id: str, name: str) -> ActionDef:
    """An action definition for a plain function, with the default policies."""
    check_name(id, "action id")
    return ActionDef(
        id=id,
        fn=fn,
        name=name,
        description=(fn.__doc__ or "").strip(),
        timeout=None,
        retry=RetryPolicy.default(),
        retry_chosen=False,
        backoff=BackoffPolicy(),
        queue="default",
        isolate=False,
        signature=Signature.of(fn, id),
    )


registry = Registry()
"""The process-wide registry: the decorators register here and workers serve what it holds."""

# `cairn.registry` is this module: its functions act on the process-wide registry.
register = registry.register
get = registry.get
names = registry.names
entries = registry.entries
reset = registry.reset


def _cell_run_again(old: Definition, new: Definition) -> bool:
    """Whether `new` is `old` as an interactive session (Jupyter, IPython) defines it again: the
    same name in `__main__`, written in another cell (each cell is compiled as a file of its own).
    Refused, a cell edited and run again raised, and the next cell ran the old code. A script's
    `__main__` is one file: two definitions of one name in it are still refused."""
    if old.origin != new.origin or {_module_of(old), _module_of(new)} != {"__main__"}:
        return False  # `python -m shop` defining `shop.checkout` again in shop/__main__.py: refused
    return old.written_at.rpartition(":")[0] != new.written_at.rpartition(":")[0]


def _module_of(defn: Definition) -> str:
    return defn.fn.__module__ if isinstance(defn, ActionDef) else defn.target.__module__


def _written_at(fn: Callable[..., Any]) -> str:
    """Where a definition's function is written (file:line), or "" for a callable without code."""
    code = getattr(inspect.unwrap(fn), "__code__", None)
    return "" if code is None else f"{code.co_filename}:{code.co_firstlineno}"
