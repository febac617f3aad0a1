"""The registration-time determinism check: a static reading of a workflow's body.

Workflow code is replayed from the journal, so it must not read the clock, draw random numbers,
read the environment or do I/O itself. `check_workflow` parses the source of the workflow (every
method defined in the body of a class-style workflow, or the function of a function-style one)
with `ast` and raises `UnsafeWorkflowCode` listing every call it knows to be non-deterministic or
to do I/O, each with its file and line and what to use instead:

- the clock (`time.time`, `time.monotonic`, `datetime.now`, `date.today`, ...): `cairn.now()`
- `time.sleep`: `await asyncio.sleep(s)` or `await cairn.sleep(s)`, both durable
- `random.*`, `secrets.*`, `os.urandom`, `uuid.uuid1`/`uuid4`: `cairn.random()`, `cairn.uuid4()`
- `open`, `input`, `Path(...).read_text()` and friends, `os.environ[...]`, `os.getenv`, network
  clients, sockets, subprocesses, threads and process pools: an `@action`
- assigning a module global (`global counter; counter += 1`): workflow memory or a property

Names are resolved through the imports of the module that defines the workflow and those inside
the body itself, so `import time as t; t.time()`, `from time import time as now; now()` and
`import datetime as dt; dt.datetime.now()` are all recognised, while `cairn.random()` (or
`from cairn import random`) and every `asyncio.*` call are not flagged. A name the body binds
itself (a parameter, a local variable) is never resolved through the module's imports.

Helpers are followed: a call whose target is a plain function of the user's own (defined in the
workflow's module, in another module of its top-level package, or, for a workflow in a top-level
module such as `flows.py`, in a module beside it) is read the same way, and so on
transitively; each finding there names the chain (`checkout -> jitter -> random.uniform(0.9, 1.1)`).
Code of the standard library, third parties and Cairn is never read: `email.utils.formatdate()`
reads the clock, but a library is the user's choice to call, and the run-time sandbox
(`cairn.engine.sandbox`) refuses what it does inside a workflow. Actions and child workflows are
not plain functions and are not followed (they may do I/O). Each function is read once per check,
so helpers that call each other end; a chain is followed at most `_MAX_DEPTH` calls deep.

Limits, on purpose: only direct calls are seen (a function passed around as a value, a method
called on an instance, a class's constructor are not followed), and only the module's own globals
assigned by name (not a global list mutated in place). When the source cannot be found (a REPL, a
frozen module, `exec`) the check is skipped silently: the sandbox still guards it at run time.

Escape hatch: a line carrying the comment `# cairn: allow` is exempt (for a call written over
several lines, any of its lines), and so is what a call on it reaches. Use it for code the checker
misjudges, for example `random.Random(42)` with a fixed seed, or reading a file that ships with the
code and never changes.
"""

from __future__ import annotations

import ast
import inspect
import io
import os
import re
import sys
import sysconfig
import textwrap
import tokenize
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cairn.engine.lint_names import ModuleScope, Names, Scope, dotted, function_scope, module_scope, parse
from cairn.errors import UnsafeWorkflowCode

# --- what is flagged ---------------------------------------------------------------------------

_NOW = "use cairn.now() (the run's logical time, recorded once and replayed)"
_SLEEP = "use `await asyncio.sleep(s)` or `await cairn.sleep(s)` (a durable timer)"
_RANDOM = "use cairn.random() / cairn.uuid4() (recorded once and replayed), or draw it in an @action"
_UUID = "use cairn.uuid4() (recorded once and replayed)"
_FILE = "do file I/O in an @action and await it"
_INPUT = "a workflow cannot read the terminal: pass the value as workflow input, or read it in an @action"
_ENV = "read configuration in an @action, or pass it as workflow input"
_IO = "do network I/O, threads and processes in an @action and await it"
_GLOBAL = (
    "a workflow must not assign module globals: a replay does not restore them and every run in the "
    "process shares them; keep the value in workflow memory (cairn.memory.add(key=..., value=...)) or, "
    "in a class-style workflow, in a property (self.name = ...)"
)

_EXACT: Mapping[str, str] = {
    **dict.fromkeys(
        (
            "time.time",
            "time.time_ns",
            "time.monotonic",
            "time.monotonic_ns",
            "time.perf_counter",
            "time.perf_counter_ns",
            "time.process_time",
            "time.process_time_ns",
            "datetime.datetime.now",
            "datetime.datetime.utcnow",
            "datetime.datetime.today",
            "datetime.date.today",
        ),
        _NOW,
    ),
    "time.sleep": _SLEEP,
    "os.urandom": _RANDOM,
    "uuid.uuid1": _UUID,
    "uuid.uuid4": _UUID,
    "builtins.open": _FILE,
    "io.open": _FILE,
    "builtins.input": _INPUT,
    "os.getenv": _ENV,
    "os.getenvb": _ENV,
    **dict.fromkeys(("os.system", "os.popen", "os.fork", "threading.Thread", "threading.Timer"), _IO),
}

_PREFIXES: Sequence[tuple[str, str]] = (
    ("random.", _RANDOM),
    ("secrets.", _RANDOM),
    *(
        (f"{module}.", _IO)
        for module in (
            "requests",
            "httpx",
            "urllib.request",
            "aiohttp",
            "socket",
            "subprocess",
            "multiprocessing",
            "concurrent.futures",
        )
    ),
)

_ENVIRON = frozenset({"os.environ", "os.environb"})
_PATH_TYPES = frozenset({"pathlib.Path", "pathlib.PosixPath", "pathlib.WindowsPath"})
_PATH_IO = frozenset({"read_text", "write_text", "read_bytes", "write_bytes", "open"})
_EXCEPTION_SUFFIXES = ("Error", "Exception", "Warning")
_ALLOW = re.compile(r"#\s*cairn:\s*allow\b")
_MAX_SHOWN = 80


def _hint_for(name: str) -> str | None:
    """What to use instead of calling the fully qualified `name`, or None when the call is fine."""
    if name in _EXACT:
        return _EXACT[name]
    if name.rsplit(".", 1)[-1].endswith(_EXCEPTION_SUFFIXES):
        return None  # constructing e.g. requests.HTTPError or subprocess.CalledProcessError does no I/O
    for prefix, hint in _PREFIXES:
        if name.startswith(prefix):
            return hint
    return None


# --- reading the source ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """The dedented source of a function or class, parsed, with where it sits in its file."""

    tree: ast.Module
    text: str
    file: str
    offset: int
    allowed: frozenset[int]

    def shown(self, node: ast.expr | ast.stmt) -> str:
        text = " ".join((ast.get_source_segment(self.text, node) or ast.unparse(node)).split())
        return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."

    def exempt(self, node: ast.expr | ast.stmt) -> bool:
        return any(line in self.allowed for line in range(node.lineno, (node.end_lineno or node.lineno) + 1))


def _allowed_lines(text: str) -> frozenset[int]:
    """Lines carrying a `# cairn: allow` comment (a real comment, not text inside a string)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return frozenset(n for n, line in enumerate(text.splitlines(), 1) if _ALLOW.search(line))
    return frozenset(t.start[0] for t in tokens if t.type == tokenize.COMMENT and _ALLOW.search(t.string))


def _load(obj: Any) -> _Source | None:
    try:
        lines, start = inspect.getsourcelines(obj)
        file = inspect.getsourcefile(obj) or inspect.getfile(obj)
    except (OSError, TypeError):
        return None
    text = textwrap.dedent("".join(lines))
    try:
        tree = parse(text)
    except SyntaxError:
        return None
    return _Source(tree, text, file, max(start - 1, 0), _allowed_lines(text))


# --- the check ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class _Finding:
    file: str
    line: int
    column: int
    call: str
    hint: str
    via: tuple[str, ...] = ()
    """The functions from the workflow down to the one holding the call, when it is not the workflow."""

    def __str__(self) -> str:
        chain = f" (reached through {' -> '.join((*self.via, self.call))})" if self.via else ""
        return f"{self.file}:{self.line}: {self.call} — {self.hint}{chain}"


class _Checker(ast.NodeVisitor):
    """Walks one function body (lambdas, comprehensions and nested defs included)."""

    def __init__(self, source: _Source, scope: Scope, via: tuple[str, ...] = ()) -> None:
        self.source = source
        self.scope = scope
        self.via = via
        self.findings: list[_Finding] = []
        self.calls: list[ast.Call] = []
        """Calls that no rule flagged and no `# cairn: allow` exempts: the walk may follow them."""
        self._seen: set[int] = set()  # os.environ nodes already judged as part of a larger expression
        self._globals: list[frozenset[str]] = []  # names each enclosing def declares `global`

    def _report(self, node: ast.expr | ast.stmt, hint: str) -> None:
        if not self.source.exempt(node):
            line = node.lineno + self.source.offset
            shown = self.source.shown(node)
            self.findings.append(_Finding(self.source.file, line, node.col_offset, shown, hint, self.via))

    # --- assigning module globals ------------------------------------------------------------

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        declared = frozenset(
            name for stmt in _own_statements(node) if isinstance(stmt, ast.Global) for name in stmt.names
        )
        self._globals.append(declared)
        self.generic_visit(node)
        self._globals.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scoped

    def _assigns(self, stmt: ast.stmt, targets: Iterable[ast.expr]) -> None:
        declared = self._globals[-1] if self._globals else frozenset()
        names = {
            n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)
        }
        if names & declared:
            self._report(stmt, _GLOBAL)
        self.generic_visit(stmt)

    def visit_Assign(self, node: ast.Assign) -> None:
        self._assigns(node, node.targets)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._assigns(node, [node.target])

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._assigns(node, [node.target])

    def visit_Delete(self, node: ast.Delete) -> None:
        self._assigns(node, node.targets)

    def visit_For(self, node: ast.For) -> None:
        self._assigns(node, [node.target])

    def visit_AsyncFor(self, node: ast.AsyncFor) -> None:
        self._assigns(node, [node.target])

    def _name(self, node: ast.expr) -> str | None:
        return dotted(node, self.scope.resolve)

    def _environ(self, node: ast.expr) -> bool:
        if self._name(node) in _ENVIRON:
            self._seen.add(id(node))
            return True
        return False

    def _call_hint(self, node: ast.Call) -> str | None:
        func = node.func
        if isinstance(func, ast.Attribute):
            receiver = func.value
            if func.attr in _PATH_IO and isinstance(receiver, ast.Call) and self._name(receiver.func) in _PATH_TYPES:
                return _FILE
            if self._environ(receiver):
                return _ENV
        name = self._name(func)
        return _hint_for(name) if name else None

    def visit_Call(self, node: ast.Call) -> None:
        hint = self._call_hint(node)
        if hint:
            self._report(node, hint)
        elif not self.source.exempt(node):
            self.calls.append(node)
        self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if self._environ(node.value) and isinstance(node.ctx, ast.Load):
            self._report(node, _ENV)  # os.environ["X"]; assigning to it is not a read
        self.generic_visit(node)

    def _bare(self, node: ast.Name | ast.Attribute) -> None:
        if id(node) not in self._seen and isinstance(node.ctx, ast.Load) and self._environ(node):
            self._report(node, _ENV)  # dict(os.environ), "X" in os.environ, ...

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._bare(node)
        self.generic_visit(node)

    def visit_Name(self, node: ast.Name) -> None:
        self._bare(node)


_Def = ast.FunctionDef | ast.AsyncFunctionDef
_MAX_DEPTH = 20
"""How many helper calls deep the walk follows (a chain that long is followed no further)."""


def _own_statements(node: ast.AST) -> Iterator[ast.stmt]:
    """The statements of a def's body, not those of the defs and classes nested in it."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.stmt):
            yield child
            if not isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                yield from _own_statements(child)
        elif isinstance(child, ast.excepthandler | ast.match_case):
            yield from _own_statements(child)


def _first(tree: ast.Module, kind: type[ast.stmt] | tuple[type[ast.stmt], ...]) -> ast.stmt | None:
    return next((stmt for stmt in tree.body if isinstance(stmt, kind)), None)


def _flat_directory(home: str) -> str | None:
    """The directory of `home` when it is a top-level module file (not a package), unless that is
    where the standard library or installed packages live: the user's own modules sit beside it."""
    module = sys.modules.get(home)
    file = getattr(module, "__file__", None)
    if "." in home or not isinstance(file, str) or hasattr(module, "__path__"):
        return None
    directory = os.path.dirname(os.path.abspath(file))
    installed = {os.path.abspath(p) for k, p in sysconfig.get_paths().items() if k in ("stdlib", "purelib", "platlib")}
    return None if directory in installed else directory


def _short(qualname: str) -> str:
    """A function's name as a chain shows it: `outer.<locals>.helper` is `helper`."""
    return qualname.rsplit("<locals>.", 1)[-1]


class _Walk:
    """Checks a workflow's body and, transitively, the user's own functions it calls: those defined
    in its module or in another module of its top-level package, never the standard library's,
    a third party's or Cairn's. Each function is read once, so helpers that call each other end."""

    def __init__(self, home: str) -> None:
        self.home = home
        self.found: list[_Finding] = []
        self._seen: set[object] = set()
        self._modules: dict[str, ModuleScope] = {}
        self._beside = _flat_directory(home)

    def _module(self, obj: Any) -> ModuleScope:
        name = getattr(obj, "__module__", None) or ""
        if name not in self._modules:
            self._modules[name] = module_scope(obj)
        return self._modules[name]

    def _own(self, obj: object) -> bool:
        if not isinstance(obj, types.FunctionType):
            return False  # actions, child workflows, classes and builtins are not followed
        module = obj.__module__ or ""
        if module == self.home:
            return True
        package = self.home.split(".", 1)[0]
        if "." in self.home:
            return package != "cairn" and module.split(".", 1)[0] == package
        # A module of a flat layout (`flows.py` beside `helpers.py`, run as `cairn worker flows`):
        # its own are the modules in its directory.
        return self._beside is not None and os.path.dirname(os.path.abspath(obj.__code__.co_filename)) == self._beside

    def function(self, fn: Any, via: tuple[str, ...]) -> None:
        """Check one function (its body, then what it calls); `via` ends with its own name."""
        try:
            code = getattr(inspect.unwrap(fn), "__code__", None) if callable(fn) else None
        except ValueError:  # a __wrapped__ cycle
            return
        if code is not None:
            if code in self._seen:
                return
            self._seen.add(code)
        source = _load(fn)
        node = _first(source.tree, (ast.FunctionDef, ast.AsyncFunctionDef)) if source else None
        if source is None or not isinstance(node, _Def):
            return
        self.body(fn, node, source, function_scope(node, fn, self._module(fn)), via)

    def cls(self, cls: type, name: str) -> None:
        source = _load(cls)
        node = _first(source.tree, ast.ClassDef) if source else None
        if source is None or not isinstance(node, ast.ClassDef):
            return
        module = self._module(cls)
        for method in node.body:
            if isinstance(method, _Def):
                obj = vars(cls).get(method.name)
                func = obj.__func__ if isinstance(obj, staticmethod | classmethod) else obj
                if func is not None and getattr(func, "__code__", None) is not None:
                    self._seen.add(func.__code__)
                self.body(obj, method, source, function_scope(method, obj, module), (f"{name}.{method.name}",))

    def body(self, fn: Any, node: ast.AST, source: _Source, scope: Scope, via: tuple[str, ...]) -> None:
        checker = _Checker(source, scope, via if len(via) > 1 else ())  # the body itself: no chain
        checker.visit(node)
        self.found += checker.findings
        if len(via) >= _MAX_DEPTH or not checker.calls:
            return
        names = Names(fn, scope)
        for call in checker.calls:
            callee = names.callee(call.func)
            if self._own(callee):
                self.function(callee, (*via, _short(getattr(callee, "__qualname__", "?"))))


def _defined_in(entry: object, target: object) -> bool:
    if entry is target:
        return True
    qualname = getattr(target, "__qualname__", None)
    return isinstance(target, type) and getattr(entry, "__qualname__", "").startswith(f"{qualname}.")


def check_workflow(target: object, entry: Callable[..., Any], *, workflow_id: str | None = None) -> None:
    """Raise UnsafeWorkflowCode listing every non-deterministic or I/O call in the workflow's body,
    and in the user's own functions it calls (each such finding shows the chain of calls).

    `target` is the workflow class (each method of its body is read) or function; `entry` is the
    `run`/`handle` method or the function, read as well when a class inherits it from elsewhere.
    `workflow_id` names the workflow in the message (default: `module.qualname` of `target`).
    """
    walk = _Walk(getattr(target, "__module__", None) or "")
    name = _short(str(getattr(target, "__qualname__", None) or getattr(target, "__name__", "workflow")))
    if isinstance(target, type):
        walk.cls(target, name)
    else:
        walk.function(target, (name,))
    if not _defined_in(entry, target):
        walk.function(entry, (_short(str(getattr(entry, "__qualname__", name))),))
    if walk.found:
        shown = workflow_id or f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', target)}"
        best: dict[tuple[str, int, int, str], _Finding] = {}
        for f in walk.found:  # a call reached along two chains is reported once, by the shorter
            key = (f.file, f.line, f.column, f.call)
            if key not in best or len(f.via) < len(best[key].via):
                best[key] = f
        raise UnsafeWorkflowCode(shown, [str(f) for f in sorted(best.values())])


__all__ = ["UnsafeWorkflowCode", "check_workflow"]
