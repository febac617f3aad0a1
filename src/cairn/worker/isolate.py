"""`isolate=True` actions: one attempt in a child process that a timeout really kills.

In-process attempts cannot be stopped (a plain `def` action's thread is only abandoned) and a
segfault or `os._exit` in one takes the whole worker down with every other run it holds. Here the
attempt runs in a child process instead; the worker only waits for it, without blocking its event
loop, and turns each way the child can end into an ordinary attempt outcome:

- it sends back a result: the JSON text produced in the child is the step's result, as is;
- it sends back an error: the exception is re-created in the worker from its JSON (type, message,
  traceback), so the retry policy sees the original type;
- the timeout passes: SIGTERM, a short grace, SIGKILL, reap, then `ActionTimeout`;
- it dies without a word (signal, `os._exit`): `ActionCrashed`, a transient error, so it is
  retried per policy like any other flaky failure.

Children come from a "forkserver": the worker has threads (the psycopg pool, asyncio executors),
so forking it directly is unsafe, while spawning a fresh interpreter per attempt is slow. The
forkserver preloads Cairn once, and each child imports the action's module and finds the action in
the registry by id, so only plain strings cross the process boundary: the arguments, the context
fields and the outcome all travel as JSON text, never as pickled user objects. Memory writes and
log lines made in the child come back with the outcome and are committed with it exactly as for
an in-process attempt.

As with any forkserver or spawn child, multiprocessing re-imports the worker's main script (as
`__mp_main__`) in each child: a script that starts a worker itself must do so under
`if __name__ == "__main__":`, or every isolated attempt would run the script's worker again.
The `cairn worker` command is such a script already.
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
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import Any

from cairn.action_context import ActionContext, action_context
from cairn.dependencies import invoke_with_dependencies
from cairn.errors import ActionCrashed, ActionTimeout, PayloadTooLarge, UnknownActionError
from cairn.registry import ActionDef, registry
from cairn.serialization import error_from_json, error_to_json, max_payload_bytes

TERM_GRACE = 0.2
"""Seconds between SIGTERM and SIGKILL when an attempt is stopped."""

EXIT_GRACE = 2.0
"""Seconds a child that already sent its outcome gets to exit on its own (atexit handlers, threads)."""

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
    """Run one attempt of `defn` in a child process; return its result as JSON text.

    Raises the action's own exception (re-created here), `ActionTimeout` when `timeout` passes (the
    child is killed and reaped first), or `ActionCrashed` when the child dies without an outcome.
    Memory writes and log lines the child made are appended to `ctx` whatever the outcome.
    """
    module = defn.fn.__module__
    if module == "__main__":
        raise RuntimeError(
            f"action {defn.id} has isolate=True but is defined in __main__, which the child process "
            "running it cannot import; isolate=True actions must live in an importable module"
        )
    fields = {
        "run_id": ctx.run_id,
        "action_id": ctx.action_id,
        "attempt": ctx.attempt,
        "step": ctx.step,
        "memory_snapshot": ctx.memory_snapshot,
    }
    loop = asyncio.get_running_loop()
    mp = _context()
    reader, writer = mp.Pipe(duplex=False)
    stderr_fd, stderr_path = tempfile.mkstemp(prefix="cairn-isolate-", suffix=".stderr")
    os.close(stderr_fd)
    child = _Child(
        mp.Process(
            target=_child_main,
            args=(module, defn.id, args_json, json.dumps(fields), writer, stderr_path),
            name=f"cairn-isolate:{defn.id}",
            daemon=True,  # a worker that exits takes its attempts with it
        )
    )
    try:
        await child.start(loop)
        writer.close()  # the child holds the only write end now: its death is EOF here
        os.set_blocking(reader.fileno(), False)
        # The deadline starts once the child exists: bringing up the forkserver is not the action's time.
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                outcome = _parse(await _collect(loop, reader.fileno(), child.sentinel))
        except TimeoutError:
            if deadline.expired():
                await child.stop(loop)
                raise ActionTimeout(
                    f"action {defn.id} ran past its {timeout:g}s timeout (attempt {ctx.attempt}); "
                    "its process was killed"
                ) from None
            raise
        if outcome is None:
            await child.wait(loop, None)
            said = _stderr_tail(stderr_path)
            raise ActionCrashed(
                f"action {defn.id} crashed: {_describe_exit(child.exitcode)} (attempt {ctx.attempt})"
                + (f"; its stderr ended with: {said}" if said else "")
            )
        if not await child.wait(loop, EXIT_GRACE):
            await child.stop(loop)
    finally:
        await child.dispose(loop)
        writer.close()
        reader.close()
        _show_stderr(stderr_path, defn.id, ctx)
    return _outcome(defn, ctx, outcome)


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
    """One attempt's process as the worker sees it: started, waited for, stopped, always reaped."""

    def __init__(self, proc: BaseProcess) -> None:
        self.proc = proc
        self.exitcode: int | None = None

    @property
    def started(self) -> bool:
        return self.proc.pid is not None

    @property
    def sentinel(self) -> int:
        return self.proc.sentinel

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
        """SIGTERM, then SIGKILL after TERM_GRACE; return once the child is reaped."""
        if self.exitcode is not None:
            return
        self.proc.terminate()
        if not await self.wait(loop, TERM_GRACE):
            self.proc.kill()
            await self.wait(loop, None)

    async def dispose(self, loop: asyncio.AbstractEventLoop) -> None:
        """Whatever happened (even cancellation): kill the child if it still runs, reap it, close it."""
        if not self.started:
            self.proc.close()
            return
        if self.exitcode is None:
            self.proc.kill()
            try:
                await self.wait(loop, None)
            except BaseException:  # cancelled again: it is dead anyway, and the forkserver reaps it
                return
        self.proc.close()


def _parse(payload: bytes) -> dict[str, Any] | None:
    """The child's outcome, or None when it died before writing all of it."""
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
        raise error_from_json(data["error"])
    result: str = data["result"]
    limit = max_payload_bytes()  # the worker's limit rules, whatever environment the child saw
    if len(result) > limit:
        raise PayloadTooLarge(
            f"result of {defn.id} is {len(result)} bytes of JSON, over the {limit}-byte payload limit "
            "(CAIRN_MAX_PAYLOAD_BYTES); store large data elsewhere and pass a reference."
        )
    return result


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


async def _collect(loop: asyncio.AbstractEventLoop, fd: int, sentinel: int) -> bytes:
    """Everything the child writes, up to EOF or its exit, whichever comes first."""
    chunks: list[bytes] = []
    while True:
        await _readable(loop, [fd, sentinel])
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
        if select.select([sentinel], [], [], 0)[0]:
            # Exited, yet the pipe is not at EOF: a process it started holds the write end.
            return b"".join(chunks)


# --- in the child ----------------------------------------------------------------------------------


def _child_main(
    module: str, action_id: str, args_json: str, fields_json: str, conn: Connection, stderr_path: str
) -> None:
    """The child's whole life: import, rebuild the context, run the action, write the outcome as JSON.
    Its stderr goes to a file the worker shows when the child has exited (see `_show_stderr`)."""
    sys.stderr.flush()
    target = os.open(stderr_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(target, 2)
    os.close(target)
    fields = json.loads(fields_json)
    ctx = ActionContext(
        fields["run_id"], fields["action_id"], fields["attempt"], fields["step"], dict(fields["memory_snapshot"])
    )
    result: str | None = None
    error: Any = None
    try:
        importlib.import_module(module)
        defn = registry.action(action_id)
        if defn is None:
            raise UnknownActionError(f"action {action_id!r} is not registered by module {module}")
        action_context.set(ctx)
        args, kwargs = defn.signature.decode_args(args_json)
        result = defn.signature.encode_result(_call(defn, args, kwargs))
    except Exception as exc:
        error = error_to_json(exc)
    outcome = {"result": result, "error": error, "memory_writes": ctx.memory_writes, "logs": ctx.logs}
    data = memoryview(json.dumps(outcome).encode())
    fd = conn.fileno()
    while data:  # raw bytes up to EOF: the worker reads them without multiprocessing's framing
        data = data[os.write(fd, data) :]
    conn.close()


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
