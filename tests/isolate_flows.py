"""Actions and workflows for the `isolate=True` tests.

They live in their own importable module because an isolated action runs in a child process that
imports the action's module by name to find it; nothing here may depend on state of the test
process (the child does not share it), so evidence of what happened travels back through return
values, step logs, run memory, or files under a directory the test passes in.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import cairn
from cairn import BackoffPolicy, Depends, RetryPolicy, action, workflow

FAST = BackoffPolicy(base_delay=0.01, jitter=False)


class IsolatedBoom(ValueError):
    """Raised inside an isolated action; must reach the workflow as this very type."""


# --- actions ---------------------------------------------------------------------------------


@action(isolate=True)
def whoami() -> int:
    return os.getpid()


class Prefix:
    def __init__(self, text: str) -> None:
        self.text = text


def get_prefix() -> Iterator[Prefix]:
    yield Prefix(f"pid {os.getpid()} says")


@action(isolate=True)
async def introspect(name: str, prefix: Annotated[Prefix, Depends(get_prefix)]) -> dict[str, Any]:
    ctx = cairn.context()
    ctx.logger.info("hello from %s", name)
    cairn.memory.add(key="seen", value={"name": name, "attempt": ctx.attempt})
    await asyncio.sleep(0)
    return {
        "greeting": f"{prefix.text} hello {name}",
        "pid": os.getpid(),
        "run_id": ctx.run_id,
        "attempt": ctx.attempt,
        "key": ctx.idempotency_key,
        "before": cairn.memory.get("before"),
    }


@action(isolate=True)
def sync_with_depends(prefix: Annotated[Prefix, Depends(get_prefix)]) -> str:
    cairn.memory.add(key="sync", value=cairn.context().attempt)
    return prefix.text


@action(isolate=True, timeout=1.0, retry=RetryPolicy(attempts=2), backoff=FAST)
def hangs(pid_dir: str) -> str:
    # Ignore SIGTERM so that only the SIGKILL after the grace period can stop it.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    attempt = cairn.context().attempt
    Path(pid_dir, f"{attempt}.pid").write_text(str(os.getpid()))
    time.sleep(60)
    return "never"


@action(isolate=True, retry=RetryPolicy(attempts=3), backoff=FAST)
def exits_once() -> str:
    attempt = cairn.context().attempt
    if attempt == 1:
        os._exit(3)
    return f"ok on attempt {attempt} in {os.getpid()}"


@action(isolate=True, retry=RetryPolicy(attempts=3), backoff=FAST)
def segfaults_once() -> str:
    attempt = cairn.context().attempt
    if attempt == 1:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file for this deliberate crash
        ctypes.string_at(0)
    return f"ok on attempt {attempt}"


@action(isolate=True, retry=RetryPolicy(attempts=2), backoff=FAST)
def always_exits() -> str:
    os._exit(7)


@action(isolate=True)
async def raises(message: str) -> str:
    raise IsolatedBoom(message)


# --- workflows -------------------------------------------------------------------------------


@workflow
async def pid_flow() -> list[int]:
    return [await whoami(), await whoami()]


@workflow
async def introspect_flow(name: str) -> dict[str, Any]:
    cairn.memory.add(key="before", value="from the workflow")
    out = await introspect(name)
    out["sync"] = await sync_with_depends()
    return out


@workflow
async def hang_flow(pid_dir: str) -> str:
    try:
        return await hangs(pid_dir)
    except cairn.ActionTimeout as exc:
        return f"{type(exc).__name__}: {exc}"


@workflow
async def crash_flow() -> list[str]:
    return [await exits_once(), await segfaults_once()]


@workflow
async def always_crash_flow() -> str:
    try:
        return await always_exits()
    except cairn.ActionCrashed as exc:
        return f"{type(exc).__name__}: {exc}"


@workflow
async def raise_flow(message: str) -> str:
    return await raises(message)


@action(isolate=True, retry=RetryPolicy(attempts=1))
def complains(then_die: bool) -> str:
    print("warning: the C library is unhappy", file=sys.stderr, flush=True)
    if then_die:
        os._exit(5)
    return "survived"


@workflow
async def complaining_flow(then_die: bool) -> str:
    try:
        return await complains(then_die)
    except cairn.ActionCrashed as exc:
        return str(exc)


def _wait_for_a_subprocess(pid_dir: str) -> str:
    """Wait for a process started here (an ffmpeg, a shell pipeline), its pid in `pid_dir`."""
    started = subprocess.Popen(["sleep", "60"])
    Path(pid_dir, "subprocess.pid").write_text(str(started.pid))
    started.wait()
    return "never"


@action(isolate=True, timeout=0.5, retry=RetryPolicy(attempts=1))
def waits_for_a_subprocess(pid_dir: str) -> str:
    return _wait_for_a_subprocess(pid_dir)


@action(isolate=True)
def waits_for_a_subprocess_untimed(pid_dir: str) -> str:
    return _wait_for_a_subprocess(pid_dir)


@workflow
async def subprocess_flow(pid_dir: str) -> str:
    return await waits_for_a_subprocess_untimed(pid_dir)


@workflow
async def subprocess_timeout_flow(pid_dir: str) -> str:
    try:
        return await waits_for_a_subprocess(pid_dir)
    except cairn.ActionTimeout as exc:
        return type(exc).__name__


@action(isolate=True)
def leaves_a_subprocess() -> int:
    """Starts a process and returns without waiting for it: it runs on in the action's child."""
    return subprocess.Popen(["sleep", "60"]).pid


@workflow
async def leaves_a_subprocess_flow() -> int:
    return await leaves_a_subprocess()


@action(isolate=True, retry=RetryPolicy(attempts=2), backoff=FAST)
def ends_itself(how: str) -> str:
    if how == "exit":
        sys.exit(3)
    if how == "interrupt":
        raise KeyboardInterrupt
    raise GeneratorExit("raised by the action")


@workflow
async def ends_itself_flow(how: str) -> str:
    try:
        return await ends_itself(how)
    except cairn.ActionError as exc:
        return f"{type(exc).__name__}: {exc}"
