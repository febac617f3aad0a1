"""The run-time guard: while workflow code runs, real time, files, sockets, threads and subprocesses
raise WorkflowSandboxError saying what to use instead.

How: a flag on the current thread is set only while a workflow activation executes (the
deterministic loop's callbacks, or a plain-`def` workflow's own thread). An audit hook refuses
the audited operations (`open`, sockets, DNS, subprocesses, `os.system`) when the flag is set, and
thin wrappers around `time.time/time_ns/monotonic/perf_counter/sleep` and `threading.Thread.start`
do the same for operations Python 3.11 does not audit. The `random` module's functions draw from
one hidden, process-wide generator (`random._inst`) that no replay can repeat: each function of the
module is wrapped, and that generator's class is swapped for a subclass whose `random()` and
`getrandbits()` (which every other draw goes through) check the flag too, so `from random import
choice` bound before Cairn was imported is refused as well. Generators a workflow makes itself
(`random.Random(42)`) are its own business and untouched. Outside workflow code the cost is one
thread-local lookup. Installed once, on first use.

`time.localtime/gmtime/ctime/asctime/strftime` are refused only when they would read the clock
(no time given). Limits, by design: `datetime.now()` is a C method that cannot be wrapped (the
registration-time check in `lint.py` catches it); code that bound `from time import time` (or `from random import
random`, a C method) before Cairn was imported keeps the unwrapped function. Reading Python source
and bytecode stays allowed so that imports and tracebacks work inside workflows. Rejected:
Temporal's re-importing sandbox (heavy, and it changes module identity) and `sys.settrace` (far too
slow).
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import os
import random
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from typing import Any

import pydantic

from cairn.errors import WorkflowSandboxError

_state = threading.local()
_install_lock = threading.Lock()
_installed = False

_SOURCE_SUFFIXES = (".py", ".pyc", ".pyi", ".so", ".pth")
_AUDITED: dict[str, str] = {
    "open": "opening files ({0}) is I/O: read or write files in an @action",
    "socket.__new__": "sockets are I/O: call the network from an @action",
    "socket.connect": "sockets are I/O: call the network from an @action",
    "socket.getaddrinfo": "DNS lookups are I/O: call the network from an @action",
    "subprocess.Popen": "subprocesses are not deterministic: run them from an @action",
    "os.system": "subprocesses are not deterministic: run them from an @action",
    "os.posix_spawn": "subprocesses are not deterministic: run them from an @action",
    "os.exec": "subprocesses are not deterministic: run them from an @action",
    "os.fork": "processes are not deterministic: run them from an @action",
    "os.remove": "changing files ({0}) is I/O: do it in an @action",
    "os.rename": "changing files ({0}) is I/O: do it in an @action",
    "os.mkdir": "changing files ({0}) is I/O: do it in an @action",
    "os.rmdir": "changing files ({0}) is I/O: do it in an @action",
    "os.listdir": "listing files ({0}) is I/O, and another machine's files differ: do it in an @action",
    "os.scandir": "listing files ({0}) is I/O, and another machine's files differ: do it in an @action",
}
_ALLOWED_CALLERS = ("logging", "importlib", "zoneinfo", "linecache", "traceback")
"""Modules whose own file work stays allowed in workflow code: logging's handlers (a record of a
workflow's is harmless), imports (their bytecode cache: `__pycache__` written, directories listed),
time zones (the system's read-only tz database) and tracebacks (source lines)."""
_TIME_HINTS = {
    "time": "time.time() reads the real clock: use cairn.now()",
    "time_ns": "time.time_ns() reads the real clock: use cairn.now()",
    "monotonic": "time.monotonic() reads the real clock: use cairn.now()",
    "perf_counter": "time.perf_counter() reads the real clock: use cairn.now()",
    "monotonic_ns": "time.monotonic_ns() reads the real clock: use cairn.now()",
    "perf_counter_ns": "time.perf_counter_ns() reads the real clock: use cairn.now()",
    "process_time": "time.process_time() reads the process's clock: use cairn.now()",
    "process_time_ns": "time.process_time_ns() reads the process's clock: use cairn.now()",
    "thread_time": "time.thread_time() reads the thread's clock: use cairn.now()",
    "clock_gettime": "time.clock_gettime() reads a real clock: use cairn.now()",
    "clock_gettime_ns": "time.clock_gettime_ns() reads a real clock: use cairn.now()",
    "sleep": "time.sleep() blocks the worker and is not durable: use `await asyncio.sleep(s)` or cairn.sleep(s)",
}


_RANDOM_HINT = (
    "random.{0}() draws from the process's shared generator, which a replay cannot repeat: use "
    "cairn.random() / cairn.uuid4() (recorded once and replayed), or draw it in an @action"
)


_SHARED_HINT = (
    "the random module's functions (random, choice, shuffle, randint, ...) draw from the process's "
    "shared generator, which a replay cannot repeat: use cairn.random() / cairn.uuid4() (recorded once "
    "and replayed), or draw it in an @action"
)


class _GuardedRandom(random.Random):
    """The class `random._inst` takes once installed: every module-level draw reaches one of these."""

    def random(self) -> float:
        if getattr(_state, "active", False):
            raise _refuse(_SHARED_HINT)
        return super().random()

    def getrandbits(self, k: int, /) -> int:
        if getattr(_state, "active", False):
            raise _refuse(_SHARED_HINT)
        return super().getrandbits(k)


def active() -> bool:
    return bool(getattr(_state, "active", False))


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Run the body as workflow code: refused operations raise WorkflowSandboxError."""
    install()
    previous = active()
    _state.active = True
    try:
        yield
    finally:
        _state.active = previous


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Cairn's own machinery inside an activation (e.g. starting a plain-def workflow's thread)."""
    previous = active()
    _state.active = False
    try:
        yield
    finally:
        _state.active = previous


def install() -> None:
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        # pydantic reads its plugins' entry points (files) when it builds its first schema: here,
        # before any workflow runs, not at a workflow's first decode of its arguments, where the
        # audit hook refuses the read (it used to happen earlier by chance, at another import).
        pydantic.TypeAdapter(int)
        sys.addaudithook(_audit)
        for name in _TIME_HINTS:
            setattr(time, name, _wrap(getattr(time, name), _TIME_HINTS[name]))
        for name, given in _NOW_UNLESS_GIVEN.items():
            hint = f"time.{name}() without a time reads the real clock: use cairn.now() (a datetime), or give the time"
            setattr(time, name, _wrap(getattr(time, name), hint, unless_given=given))
        thread_hint = "threads are not deterministic: use asyncio tasks, or do the work in an @action"
        setattr(threading.Thread, "start", _wrap(threading.Thread.start, thread_hint))  # noqa: B010
        # Python 3.11 audits no thread start; threading keeps its own reference to this function
        _thread.start_new_thread = _wrap(_thread.start_new_thread, thread_hint)
        _guard_random()
        _installed = True


def _guard_random() -> None:
    shared = getattr(random, "_inst", None)
    if type(shared) is random.Random:
        shared.__class__ = _GuardedRandom
    for name in random.__all__:
        fn = getattr(random, name)
        if getattr(fn, "__self__", None) is shared:  # random, choice, shuffle, seed...: not the classes
            setattr(random, name, _wrap(fn, _RANDOM_HINT.format(name)))


def _refuse(message: str) -> WorkflowSandboxError:
    return WorkflowSandboxError(f"inside a workflow, {message}")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not getattr(_state, "active", False):
        return
    hint = _AUDITED.get(event)
    if hint is None:
        return
    path = str(args[0]) if args else ""
    if event == "open":
        mode = str(args[1]) if len(args) > 1 and args[1] is not None else "r"
        flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
        writes = any(c in mode for c in "wax+") or bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if path.endswith(_SOURCE_SUFFIXES) and not writes:
            return  # imports and tracebacks read source and bytecode
        if not writes and path.startswith(_tz_paths()):
            return  # zoneinfo.ZoneInfo(name) reads the system's tz database, from C (no frame of its own)
    if _from_allowed_caller():
        return
    raise _refuse(hint.format(path))


def _wrap(fn: Callable[..., Any], hint: str, unless_given: int | None = None) -> Callable[..., Any]:
    """`fn`, refused in workflow code; with `unless_given`, only when the argument at that position
    (the time, for `time.gmtime` and the like) is not given."""
    if getattr(fn, "__cairn_guarded__", False):
        return fn

    @functools.wraps(fn)
    def guard(*args: Any, **kwargs: Any) -> Any:
        refused = unless_given is None or len(args) <= unless_given or args[unless_given] is None
        if refused and getattr(_state, "active", False) and not _from_logging():
            raise _refuse(hint)
        return fn(*args, **kwargs)

    guard.__cairn_guarded__ = True  # type: ignore[attr-defined]
    return guard


_NOW_UNLESS_GIVEN = {"localtime": 0, "gmtime": 0, "ctime": 0, "asctime": 0, "strftime": 1}
"""Functions of `time` that read the real clock when the time is not given (at this position):
`time.gmtime(secs)` or `time.strftime(fmt, t)` of a time the workflow has is deterministic."""


def _from_logging() -> bool:
    """logging stamps records with time.time() (and its rotating handlers read it to roll over);
    a log line from a workflow is harmless."""
    name = str(sys._getframe(2).f_globals.get("__name__", ""))
    return name == "logging" or name.startswith("logging.")


@functools.cache
def _tz_paths() -> tuple[str, ...]:
    import zoneinfo

    return tuple(os.path.join(p, "") for p in zoneinfo.TZPATH)


def _from_allowed_caller() -> bool:
    """Whether the Python code doing the file work audited (a few frames up from the audit hook,
    through the standard library's wrappers) belongs to one of `_ALLOWED_CALLERS`."""
    frame: types.FrameType | None = sys._getframe(2)
    for _ in range(6):
        if frame is None:
            return False
        name = str(frame.f_globals.get("__name__", ""))
        if name.partition(".")[0] in _ALLOWED_CALLERS or name.startswith("_frozen_importlib"):
            return True
        frame = frame.f_back
    return False
