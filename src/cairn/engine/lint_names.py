"""What the names in a workflow's code refer to, for the determinism check in `lint.py`.

Statically, through the imports and assignments of the module and of the function itself
(`ModuleScope`, `Scope`: `import time as t` makes `t.time` the fully qualified `time.time`); and at
run time, through the function's closure and its module's globals (`Names`: the object a call
names, so that the check can follow it into the user's own helpers). It never imports anything:
a module not loaded yet resolves to nothing.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import inspect
import linecache
import sys
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any


def parse(text: str) -> ast.Module:
    """ast.parse, retried on CPython 3.11.7's spurious "AST constructor recursion depth mismatch".

    That SystemError (CPython gh-106905, fixed in 3.11.8) comes from another thread parsing at the
    same moment, e.g. the traceback module drawing carets; parsing again succeeds.
    """
    for _ in range(5):
        try:
            return ast.parse(text)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc):
                raise
    return ast.parse(text)


def import_bindings(node: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, str]]:
    """(bound name, fully qualified name) for each name an import statement binds."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.asname:
                yield alias.asname, alias.name
            else:
                head = alias.name.split(".", 1)[0]
                yield head, head
        return
    base = "." * node.level + (node.module or "")
    for alias in node.names:
        if alias.name != "*":
            yield alias.asname or alias.name, f"{base}.{alias.name}"


def runtime_name(obj: object) -> str | None:
    """The qualified name of a module, class or function found at run time (star imports, closures)."""
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    if not isinstance(obj, type | types.FunctionType | types.BuiltinFunctionType | types.MethodType):
        return None
    qualname = getattr(obj, "__qualname__", None)
    module = getattr(obj, "__module__", None)
    owner = getattr(obj, "__self__", None)
    if module is None and owner is not None:  # e.g. datetime.now, random.random (bound builtins)
        module = getattr(owner if isinstance(owner, type) else type(owner), "__module__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return f"{module}.{qualname}"
    return None


def dotted(node: ast.expr, resolve: Callable[[str], str | None]) -> str | None:
    """`a.b.c` with `a` resolved, or None when the expression is not a plain dotted name."""
    if isinstance(node, ast.Name):
        return resolve(node.id)
    if isinstance(node, ast.Attribute):
        base = dotted(node.value, resolve)
        return f"{base}.{node.attr}" if base else None
    return None


def top_level(body: Iterable[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, including those nested in if/try/with blocks (not in defs)."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for name in ("body", "orelse", "finalbody"):
            yield from top_level(getattr(stmt, name, ()))
        for handler in getattr(stmt, "handlers", ()):
            yield from top_level(handler.body)


@dataclass
class ModuleScope:
    """What the names of a module's global scope refer to."""

    aliases: dict[str, str] = field(default_factory=dict)
    defined: set[str] = field(default_factory=set)
    namespace: Mapping[str, Any] = field(default_factory=dict)

    def resolve(self, name: str) -> str | None:
        if name in self.aliases:
            return self.aliases[name]
        if name in self.defined:
            return None
        if name in self.namespace:
            return runtime_name(self.namespace[name])
        return f"builtins.{name}" if hasattr(builtins, name) else None

    def learn(self, tree: ast.Module) -> None:
        assigned: list[tuple[str, ast.expr]] = []
        for stmt in top_level(tree.body):
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                self.aliases.update(import_bindings(stmt))
            elif isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                self.defined.add(stmt.name)
            elif isinstance(stmt, ast.Assign | ast.AnnAssign) and stmt.value is not None:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                assigned += [(t.id, stmt.value) for t in targets if isinstance(t, ast.Name)]
        for name, value in assigned:  # `now = datetime.now` makes `now()` a clock read
            if name in self.aliases:
                continue  # `try: import x / except ImportError: x = None`: the import is what matters
            target = dotted(value, self.resolve)
            if target:
                self.aliases[name] = target
            else:
                self.defined.add(name)
        self.defined -= self.aliases.keys()


def module_text(module: types.ModuleType | None, obj: Any) -> str:
    try:
        return inspect.getsource(module) if module is not None else ""
    except (OSError, TypeError):
        pass
    try:  # a module missing from sys.modules, or one inspect cannot read: try the file itself
        return "".join(linecache.getlines(inspect.getsourcefile(obj) or ""))
    except TypeError:
        return ""


def module_scope(obj: Any) -> ModuleScope:
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    scope = ModuleScope(namespace=vars(module) if module is not None else {})
    try:
        tree = parse(module_text(module, obj))
    except (SyntaxError, ValueError):
        return scope
    scope.learn(tree)
    return scope


@dataclass
class Scope:
    """The names one function body sees: its own imports and locals, its closure, then the module."""

    module: ModuleScope
    imports: dict[str, str]
    local: set[str]
    closure: dict[str, str]

    def resolve(self, name: str) -> str | None:
        if name in self.imports:
            return self.imports[name]
        if name in self.local:
            return None
        if name in self.closure:
            return self.closure[name]
        return self.module.resolve(name)


def bound_name(node: ast.AST, fn: ast.AST) -> str | None:
    """The local name `node` binds inside `fn`: a parameter, an assignment target, a nested def..."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return None if node is fn else node.name
    if isinstance(node, ast.ExceptHandler):
        return node.name
    if isinstance(node, ast.arg):
        return node.arg
    if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
        return node.id
    return None


def function_scope(fn: ast.FunctionDef | ast.AsyncFunctionDef, obj: Any, module: ModuleScope) -> Scope:
    imports: dict[str, str] = {}
    local: set[str] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Import | ast.ImportFrom):
            imports.update(import_bindings(node))
        elif name := bound_name(node, fn):
            local.add(name)
    return Scope(module, imports, local - imports.keys(), closure_names(obj))


def closure_names(obj: Any) -> dict[str, str]:
    """Names a nested workflow takes from its enclosing function (e.g. an import inside a test)."""
    func = inspect.unwrap(obj.__func__ if isinstance(obj, staticmethod | classmethod) else obj)
    try:
        nonlocals = inspect.getclosurevars(func).nonlocals
    except (TypeError, ValueError):
        return {}
    names = {name: runtime_name(value) for name, value in nonlocals.items()}
    return {name: qualified for name, qualified in names.items() if qualified}


def import_object(qualified: str, package: str | None) -> object | None:
    """The object an import binds (`pkg.mod.helper`, or `.mod.helper` relative to `package`), when
    its module is loaded already; None otherwise (the check never imports anything)."""
    if qualified.startswith("."):
        rest = qualified.lstrip(".")
        dots = len(qualified) - len(rest)
        if "." not in rest:
            dots -= 1  # `from . import helper` is bound as "..helper" (see import_bindings)
        try:
            qualified = importlib.util.resolve_name("." * dots + rest, package)
        except (ImportError, ValueError):
            return None
    parts = qualified.split(".")
    for i in range(len(parts), 0, -1):
        found: object | None = sys.modules.get(".".join(parts[:i]))
        if found is None:
            continue
        for part in parts[i:]:
            found = attribute(found, part)
        return found
    return None


def attribute(obj: object, name: str) -> object | None:
    """getattr that never raises: a module's lazy `__getattr__` may fail in any way."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


class Names:
    """The objects the names of one function body refer to, resolved as the function itself would:
    its imports, its locals (never followed), its closure, then its module's globals."""

    def __init__(self, fn: Any, scope: Scope) -> None:
        self.scope = scope
        try:
            func = inspect.unwrap(fn.__func__ if isinstance(fn, staticmethod | classmethod) else fn) if fn else None
            self.nonlocals = dict(inspect.getclosurevars(func).nonlocals) if func is not None else {}
        except (TypeError, ValueError):
            func, self.nonlocals = None, {}
        self.globals: Mapping[str, Any] = getattr(func, "__globals__", {})
        module = sys.modules.get(getattr(func, "__module__", None) or "")
        self.package: str | None = getattr(module, "__package__", None)

    def callee(self, node: ast.expr) -> object | None:
        """What a call's function expression names: a name, or a `module.attr` / `Class.attr` chain."""
        if isinstance(node, ast.Attribute):
            base = self.callee(node.value)
            return attribute(base, node.attr) if isinstance(base, types.ModuleType | type) else None
        if not isinstance(node, ast.Name):
            return None
        name = node.id
        if name in self.scope.imports:
            return import_object(self.scope.imports[name], self.package)
        if name in self.scope.local:
            return None
        return self.nonlocals[name] if name in self.nonlocals else self.globals.get(name)
