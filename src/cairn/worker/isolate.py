"""`isolate=True` actions: each attempt in a child process that a timeout really kills.

In-process attempts cannot be stopped (a plain `def` action's thread is only abandoned) and a
segfault or `os._exit` in one takes the whole worker down with every other run it holds. Here the
attempt runs in a child process instead; the worker only waits for it, without blocking its event
loop, and turns each way the attempt can end into an ordinary attempt outcome:

- it sends back a result: the JSON text produced in the child is the step's result, as is;
- it sends back an error: the exception is re-created in the worker from its JSON (type, message,
  traceback), so the retry policy sees the original type;
- the timeout passes: SIGTERM, a short grace, SIGKILL (to its process group), reap, then
  `ActionTimeout`;
- the child dies without a word (signal, `os._exit`): `ActionCrashed`, a transient error, so it is
  retried per policy like any other flaky failure.

Children are kept warm and reused (a pool, as Celery's prefork workers are): a child serves one
attempt at a time, then waits for the next on its pipe, so an attempt costs two pipe messages
rather than a process start (about 60-130 ms a call here before, see docs/benchmarks.md). A child
that timed out is killed, one that crashed is gone, and either is replaced by a fresh one for the
next attempt; module state an action leaves behind persists in its child between attempts, as it
would in any process pool. Children exit when their pipe closes: an idle one at `retire_idle()`
when a worker stops, and any one, busy too, at the worker process's own end, SIGKILL included
(`_end_with_the_worker`).

Each child leads a process group (a session) of its own, and every signal that ends it goes to that
group: the processes an action started (a `subprocess.Popen` of an ffmpeg, a shell pipeline) end
with its child, at a timeout, a cancel, a crash, a stop, and when the child itself exits.

Children come from a "forkserver": the worker has threads (the psycopg pool, asyncio executors),
so forking it directly is unsafe, while spawning a fresh interpreter is slow. The forkserver
preloads Cairn once, and a child imports an action's module (once) and finds the action in the
registry by id, so only plain strings cross the process boundary: the arguments, the context
fields and the outcome all travel as length-prefixed JSON, never as pickled user objects. Memory
writes and log lines made in the child come back with the outcome and are committed with it
exactly as for an in-process attempt.

As with any forkserver or spawn child, multiprocessing re-imports the worker's main script (as
`__mp_main__`) in each child: a script that starts a worker itself must do so under
`if __name__ == "__main__":`, or every new child would run the script's worker again (a worker
refuses to start in a child importing the main script: `refuse_while_a_child_imports_main`). The
`cairn worker` command is such a script already.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import multiprocessing
import os
import select
import signal
import struct
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any, NoReturn

from cairn.action_context import ActionContext, action_context
from cairn.dependencies import invoke_with_dependencies
from cairn.errors import ActionCrashed, ActionError, ActionTimeout, PayloadTooLarge, UnknownActionError
from cairn.names import loaded_module
from cairn.registry import ActionDef, registry
from cairn.serialization import error_from_json, error_to_json, max_payload_bytes

TERM_GRACE = 0.2
"""Seconds between SIGTERM and SIGKILL when an attempt is stopped."""

_popen_lock = threading.Lock()
"""multiprocessing reads a forkserver child's exit status from a socket, and `Process.start()` polls
every other live child on the way: one reader at a time, or a status is read as 255."""


@functools.cache
def _context() -> ForkServerContext:
    """The forkserver context, made on first use (Unix only; importing this module stays portable)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["cairn.worker.isolate"])  # each child starts with Cairn imported
    return ctx


async def run_isolated(defn: ActionDef, args_json: str, ctx: ActionContext, timeout: float | None) -> str:
    """Run one attempt of `defn` in a warm child process; return its result as JSON text.

    Raises the action's own exception (re-created here), `ActionTimeout` when `timeout` passes (the
    child is killed and reaped first), or `ActionCrashed` when the child dies without an outcome.
    Memory writes and log lines the child made are appended to `ctx` whatever the outcome.
    """
    module = defn.fn.__module__  # "__main__" for a script's: the child has imported the script as that too
    stderr_fd, stderr_path = tempfile.mkstemp(prefix="cairn-isolate-", suffix=".stderr")
    os.close(stderr_fd)
    fields = {
        "run_id": ctx.run_id,
        "action_id": ctx.action_id,
        "attempt": ctx.attempt,
        "step": ctx.step,
        "memory_snapshot": ctx.memory_snapshot,
    }
    request = {"module": module, "action_id": defn.id, "args": args_json, "fields": fields, "stderr": stderr_path}
    loop = asyncio.get_running_loop()
    child: _Child | None = None
    reusable = False
    try:
        child = await _pool.take(loop)
        await child.send(loop, json.dumps(request).encode())
        # The deadline starts once the action does: bringing up a child, and its first import of the
        # action's module (seconds for a heavy library, more on a busy machine), are not the
        # action's time; the import has a budget of its own (IMPORT_TIMEOUT, or the action's if longer).
        importing = None if timeout is None else max(timeout, IMPORT_TIMEOUT)
        what = f"the import of action {defn.id}'s module ({module}) did not end within {importing or 0:g}s"
        first = await _within(child, loop, importing, what, ctx.attempt)
        if first is not None and first.get("started"):
            what = f"action {defn.id} ran past its {timeout or 0:g}s timeout"
            outcome = await _within(child, loop, timeout, what, ctx.attempt)
        else:
            outcome = first  # it failed before it started (its module would not import)
        if outcome is None:
            await child.wait(loop, None)
            said = _stderr_tail(stderr_path)
            raise ActionCrashed(
                f"action {defn.id} crashed: {_describe_exit(child.exitcode)} (attempt {ctx.attempt})"
                + (f"; its stderr ended with: {said}" if said else "")
            )
        reusable = True
    finally:
        if child is not None:
            if reusable:
                _pool.give_back(child)
            else:  # timed out, crashed, or cancelled mid-attempt (a stopping worker): never reused
                await child.dispose(loop)
        _show_stderr(stderr_path, defn.id, ctx)
    return _outcome(defn, ctx, outcome)


async def _within(
    child: _Child, loop: asyncio.AbstractEventLoop, timeout: float | None, what: str, attempt: int
) -> dict[str, Any] | None:
    """The child's next message within `timeout` seconds (None: it died first); past it, the child
    is killed and ActionTimeout says `what`."""
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return _parse(await child.receive(loop))
    except TimeoutError:
        if deadline.expired():
            await child.stop(loop)
            raise ActionTimeout(f"{what} (attempt {attempt}); its process was killed") from None
        raise


IMPORT_TIMEOUT = 60.0
"""Seconds an action with a timeout gives its module to import in a fresh child process before the
action starts (a module that hangs at import is killed then, with ActionTimeout saying so)."""


def refuse_while_a_child_imports_main(what: str) -> None:
    """Raise when multiprocessing is importing the worker's main script in a child process.

    A forkserver or spawn child runs the parent's main script (as `__mp_main__`) before its target.
    A script that starts a worker without `if __name__ == "__main__":` would start a second worker
    (and whatever runs the script starts) inside each isolate=True action's process; refusing makes
    that child exit at once, with this message on the worker's stderr."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            f"{what} was called while multiprocessing imported this script in a child process (one "
            'that runs isolate=True actions): start the worker under `if __name__ == "__main__":`, '
            "as every script that starts processes must, or run it with `cairn worker MODULE`"
        )


def retire_idle() -> None:
    """Let the idle warm children go (each exits when its pipe closes); busy ones finish first."""
    _pool.retire_idle()


MAX_IDLE = 32
"""Warm children kept idle at most; more are let go as they finish."""


class _Pool:
    """Warm children waiting for their next attempt (most recently used first)."""

    def __init__(self) -> None:
        self._idle: list[_Child] = []

    async def take(self, loop: asyncio.AbstractEventLoop) -> _Child:
        while self._idle:
            child = self._idle.pop()
            if child.alive():
                return child
            await child.dispose(loop)  # died while idle (killed from outside): replaced below
        child = _Child.new()
        try:
            await child.start(loop)
        except BaseException:  # cancelled while it started (a stopping worker): never left running
            await child.dispose(loop)
            raise
        return child

    def give_back(self, child: _Child) -> None:
        if len(self._idle) >= MAX_IDLE:
            child.retire()
            return
        self._idle.append(child)

    def retire_idle(self) -> None:
        while self._idle:
            self._idle.pop().retire()


_pool = _Pool()


STDERR_KEPT = 4000
"""The last characters of an isolated attempt's stderr kept with the step (all of it is echoed)."""


def _stderr_tail(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return " ".join(f.read()[-STDERR_KEPT:].split())[-500:]
    except OSError:
        return ""


def _show_stderr(path: str, action_id: str, ctx: ActionContext) -> None:
    """What the child wrote to stderr (a library's warning, a crash's last words): echoed on the
    worker's stderr once the child has exited, and its tail kept with the step's log lines."""
    try:
        with open(path, errors="replace") as f:
            text = f.read()
        os.unlink(path)
    except OSError:
        return
    if not text.strip():
        return
    prefix = f"[{action_id} attempt {ctx.attempt}] "
    sys.stderr.write("".join(prefix + line + "\n" for line in text.rstrip().splitlines()))
    ctx.logs.extend(f"STDERR {line}" for line in text[-STDERR_KEPT:].rstrip().splitlines())


class _Child:
    """One warm child as the worker sees it: started, sent requests, stopped, always reaped."""

    def __init__(
        self, proc: BaseProcess, requests: Connection, replies: Connection, theirs: tuple[Connection, Connection]
    ) -> None:
        self.proc = proc
        self.requests = requests
        """The write end of the child's request pipe (its closing tells an idle child to exit)."""
        self.replies = replies
        self._theirs: tuple[Connection, Connection] | None = theirs
        """The child's ends of the pipes, closed here once it has them."""
        self.exitcode: int | None = None
        self._buffer = b""

    @classmethod
    def new(cls) -> _Child:
        mp = _context()
        their_requests, requests = mp.Pipe(duplex=False)
        replies, their_replies = mp.Pipe(duplex=False)
        proc = mp.Process(
            target=_serve,
            args=(their_requests, their_replies),
            name="cairn-isolate",
            daemon=True,  # a worker that exits takes its children with it
        )
        return cls(proc, requests, replies, (their_requests, their_replies))

    @property
    def started(self) -> bool:
        return self.proc.pid is not None

    @property
    def sentinel(self) -> int:
        return self.proc.sentinel

    def alive(self) -> bool:
        """Whether the child still runs (its sentinel is not readable)."""
        return self.exitcode is None and not select.select([self.proc.sentinel], [], [], 0)[0]

    async def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """`Process.start()` talks to the forkserver (and starts it the first time): off the loop."""

        def start() -> None:
            with _popen_lock:
                self.proc.start()

        started = loop.run_in_executor(None, start)
        try:
            await asyncio.shield(started)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await started  # let it finish, so that `dispose` kills what it started
            raise
        finally:
            for end in self._theirs or ():
                end.close()  # the child holds the only other ends now: its death is EOF here
            self._theirs = None
        os.set_blocking(self.requests.fileno(), False)
        os.set_blocking(self.replies.fileno(), False)

    async def send(self, loop: asyncio.AbstractEventLoop, payload: bytes) -> None:
        """Write one framed request without blocking the loop (a request can exceed a pipe's buffer)."""
        data = memoryview(_frame(payload))
        fd = self.requests.fileno()
        while data:
            try:
                data = data[os.write(fd, data) :]
            except BlockingIOError:
                await _writable_or_dead(loop, fd, self.sentinel)
            except BrokenPipeError:
                return  # it died: `receive` reports the crash

    async def receive(self, loop: asyncio.AbstractEventLoop) -> bytes | None:
        """The child's next framed reply, or None when it dies (or closes its pipe) before sending it all."""
        fd = self.replies.fileno()
        while True:
            payload = self._take()
            if payload is not None:
                return payload
            await _readable(loop, [fd, self.sentinel])
            while True:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    break
                if not chunk:  # a message read with the EOF is taken, not read again by the next call
                    return self._take()
                self._buffer += chunk
            if _unframe(self._buffer) is None and select.select([self.sentinel], [], [], 0)[0]:
                # Exited, yet the pipe is not at EOF: a process it started holds the write end.
                return None

    def _take(self) -> bytes | None:
        """The first whole message received, taken out of the buffer (None while there is none).
        Read but left there, the "started" message of an attempt whose child then exited at once
        was read again as the attempt's outcome (a KeyError instead of ActionCrashed)."""
        frame = _unframe(self._buffer)
        if frame is None:
            return None
        payload, self._buffer = frame
        return payload

    async def wait(self, loop: asyncio.AbstractEventLoop, within: float | None) -> bool:
        """Wait at most `within` seconds for the child to exit; True once its exit status is known.

        The forkserver is the child's parent and reaps it before reporting the status, so a known
        status means no zombie is left behind.
        """
        if self.exitcode is not None:
            return True
        try:
            async with asyncio.timeout(within):
                await _readable(loop, [self.proc.sentinel])
        except TimeoutError:
            return False
        self.exitcode = await loop.run_in_executor(None, self._read_exitcode)
        return self.exitcode is not None

    def _read_exitcode(self) -> int | None:
        with _popen_lock:
            code: int | None = self.proc.exitcode
            return code

    async def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        """SIGTERM, then SIGKILL after TERM_GRACE, to its whole process group; return once the child
        is reaped (`dispose` ends what of its group outlived it)."""
        if self.exitcode is not None:
            return
        self._signal(signal.SIGTERM)
        if not await self.wait(loop, TERM_GRACE):
            self._signal(signal.SIGKILL)
            await self.wait(loop, None)

    def _signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the child's process group: the child and every process its actions started
        (a `subprocess.Popen` of theirs). Signalled alone, the child died and a `sleep 300` or an
        ffmpeg it waited for ran on, reparented to init, one more at each retry. The group is the
        child's pid (`_serve` makes it a session leader); before it is, the child alone is signalled."""
        pid = self.proc.pid
        if pid is None:
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:  # no such group (left already, or not made yet): the child alone
            if self.exitcode is None:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
        except PermissionError:  # the child and its group are gone, and the id is someone else's now
            pass

    def retire(self) -> None:
        """Close its request pipe: an idle child reads EOF and exits with its process group (the
        forkserver reaps it)."""
        self.requests.close()
        self.replies.close()

    async def dispose(self, loop: asyncio.AbstractEventLoop) -> None:
        """Whatever happened (even cancellation): kill the child if it still runs, reap it, close it."""
        self.requests.close()
        self.replies.close()
        for end in self._theirs or ():
            end.close()
        if not self.started:
            self.proc.close()
            return
        self._signal(signal.SIGKILL)  # even once it has exited: what its actions started ends too
        if self.exitcode is None:
            try:
                await self.wait(loop, None)
            except BaseException:  # cancelled again: it is dead anyway, and the forkserver reaps it
                return
        self.proc.close()


HEADER = struct.Struct(">Q")
"""Each message on a child's pipes: its length, then that many bytes of JSON."""


def _frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def _unframe(buffer: bytes) -> tuple[bytes, bytes] | None:
    """The first whole message in `buffer` and what follows it, or None while it is incomplete."""
    if len(buffer) < HEADER.size:
        return None
    (size,) = HEADER.unpack_from(buffer)
    end = HEADER.size + size
    if len(buffer) < end:
        return None
    return buffer[HEADER.size : end], buffer[end:]


def _parse(payload: bytes | None) -> dict[str, Any] | None:
    """The child's outcome, or None when it died before writing all of it."""
    if payload is None:
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _outcome(defn: ActionDef, ctx: ActionContext, data: dict[str, Any]) -> str:
    for key, text in data["memory_writes"]:
        ctx.memory_writes.append((key, text))
        ctx.memory_snapshot[key] = text
    ctx.logs.extend(data["logs"])
    if data["error"] is not None:
        raise _raised_by_the_action(data["error"])
    result: str = data["result"]
    limit = max_payload_bytes()  # the worker's limit rules, whatever environment the child saw
    if len(result) > limit:
        raise PayloadTooLarge(
            f"result of {defn.id} is {len(result)} bytes of JSON, over the {limit}-byte payload limit "
            "(CAIRN_MAX_PAYLOAD_BYTES); store large data elsewhere and pass a reference."
        )
    return result


def _raised_by_the_action(record: dict[str, Any]) -> BaseException:
    """The exception the action raised in its child, re-created here, so that its attempt fails as
    it would have in process. `error_from_json` makes an ActionError of a BaseException that is no
    Exception (as a workflow must get it); the attempt needs that type itself: `sys.exit()` or
    KeyboardInterrupt in an isolated action ended its child, whose death was an ActionCrashed and
    retried, where the same action in process failed once, its error recorded under its own type."""
    exc = error_from_json(record)
    if type(exc) is not ActionError:
        return exc
    cls: Any = loaded_module(str(record.get("module", "")))
    for part in str(record["type"]).split("."):
        cls = getattr(cls, part, None)
    if not (isinstance(cls, type) and issubclass(cls, BaseException)) or issubclass(cls, Exception):
        return exc  # an Exception not loaded here (or an ActionError itself): error_from_json's
    args = record.get("args")
    try:
        own: BaseException = cls(*(args if isinstance(args, list) else [record["message"]]))
    except Exception:
        return exc
    for note in getattr(exc, "__notes__", ()):  # its traceback in the child
        own.add_note(note)
    return own


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code} before returning a result"


# --- waiting without blocking the event loop -------------------------------------------------------


async def _readable(loop: asyncio.AbstractEventLoop, fds: Sequence[int]) -> None:
    """Return once any of `fds` is readable (data, EOF, or a process sentinel firing)."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    for fd in fds:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        for fd in fds:
            loop.remove_reader(fd)


async def _writable_or_dead(loop: asyncio.AbstractEventLoop, fd: int, sentinel: int) -> None:
    """Return once `fd` can take more bytes, or the process behind `sentinel` has exited."""
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    loop.add_reader(sentinel, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)
        loop.remove_reader(sentinel)


# --- in the child ----------------------------------------------------------------------------------


def _serve(requests: Connection, replies: Connection) -> None:
    """A warm child's whole life: serve attempts one at a time until its request pipe closes.

    It leads a session (and process group) of its own, so that the worker can end it together with
    every process its actions started (`_Child._signal`), and it ends that group when it ends. Away
    from the terminal's process group, Ctrl-C reaches the worker alone, which decides what happens
    to the attempt (finish it within its grace, or kill this group); SIGINT is ignored here all the
    same, for the moment before `setsid` and for a SIGINT sent to the worker's group by hand."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.setsid()
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 2)
    threading.Thread(
        target=_end_with_the_worker, args=(requests.fileno(),), name="cairn-isolate-watch", daemon=True
    ).start()
    while True:
        # Idle, a SIGTERM (multiprocessing's to its daemon children as the worker process exits,
        # maybe before this child has read the EOF of its retirement) ends the group too.
        signal.signal(signal.SIGTERM, _retire)
        request = _read_message(requests.fileno())
        if request is None:
            _retire()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # an attempt runs with the default
        reply = _attempt(json.loads(request), lambda: _reply(replies, _STARTED))
        _reply(replies, reply)


def _end_with_the_worker(fd: int) -> None:
    """End this child when the worker's end of its request pipe closes, however the worker ended
    (SIGKILL too). Between attempts the child reads that EOF itself; during one it would run the
    attempt to its end, beside the attempt another worker takes over once the lease lapses (two at
    once in a queue of concurrency 1). POLLHUP says the pipe has no writer left; data is not waited
    for (the worker sends none during an attempt), so the child's own reads are left alone."""
    poller = select.poll()
    poller.register(fd, 0)  # POLLHUP, POLLERR and POLLNVAL are reported whatever is asked
    while True:
        for _, event in poller.poll():
            if event & select.POLLNVAL:
                return  # the pipe was closed here: the child is ending anyway
            if event & (select.POLLHUP | select.POLLERR):
                _end_group()


def _retire(*_: object) -> NoReturn:
    """End an idle child: what it printed is flushed (as at a normal exit), then its group ends
    (what an action started and left running ends with the process it was started from)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    _end_group()


def _end_group() -> NoReturn:
    """End this child and every process of its group (what its actions started), at once."""
    if os.getpgrp() == os.getpid():  # never the worker's group, were this child still in it
        os.killpg(os.getpid(), signal.SIGKILL)
    os._exit(1)


_STARTED = {"started": True}
"""Said once the action's module is imported and its arguments decoded: its timeout starts there."""


def _reply(replies: Connection, message: dict[str, Any]) -> None:
    data = memoryview(_frame(json.dumps(message).encode()))
    fd = replies.fileno()
    while data:  # raw framed bytes: the worker reads them without multiprocessing's framing
        data = data[os.write(fd, data) :]


def _read_message(fd: int) -> bytes | None:
    """One framed message (blocking), or None at EOF."""
    buffer = b""
    while (frame := _unframe(buffer)) is None:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None
        buffer += chunk
    return frame[0]


def _attempt(request: dict[str, Any], started: Callable[[], None]) -> dict[str, Any]:
    """One attempt in the child: import, rebuild the context, run the action; its outcome as JSON.
    Its stderr goes to the attempt's own file, which the worker shows once it has the outcome."""
    sys.stderr.flush()
    target = os.open(request["stderr"], os.O_WRONLY | os.O_APPEND)
    os.dup2(target, 2)
    os.close(target)
    fields = request["fields"]
    ctx = ActionContext(
        fields["run_id"], fields["action_id"], fields["attempt"], fields["step"], dict(fields["memory_snapshot"])
    )
    result: str | None = None
    error: Any = None
    token = action_context.set(ctx)
    try:
        importlib.import_module(request["module"])
        defn = registry.action(request["action_id"])
        if defn is None:
            raise UnknownActionError(f"action {request['action_id']!r} is not registered by module {request['module']}")
        args, kwargs = defn.signature.decode_args(request["args"])
        started()
        result = defn.signature.encode_result(_call(defn, args, kwargs))
    except BaseException as exc:  # `sys.exit()` too: the action's failure, not a crash of its process
        error = error_to_json(exc)
    finally:
        action_context.reset(token)
        sys.stderr.flush()
        quiet = os.open(os.devnull, os.O_WRONLY)
        os.dup2(quiet, 2)
        os.close(quiet)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # an action may have changed it: the next one starts clean
    return {"result": result, "error": error, "memory_writes": ctx.memory_writes, "logs": ctx.logs}


def _call(defn: ActionDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Async actions run on a fresh loop; sync ones directly, or in a thread when Depends needs a loop."""
    if defn.is_async:
        return asyncio.run(invoke_with_dependencies(defn, args, kwargs))
    if not defn.signature.injected:
        return defn.fn(*args, **kwargs)

    async def in_thread(fn: Callable[[], Any]) -> Any:
        # As on the worker: a plain `def` action never runs on an event loop's thread.
        return await asyncio.to_thread(fn)

    return asyncio.run(invoke_with_dependencies(defn, args, kwargs, run_sync=in_thread))
