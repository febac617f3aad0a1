"""`isolate=True` actions: attempts in warm child processes, killed on timeout, crashes retried, on both backends."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

import cairn
from cairn import StepStatus
from tests import isolate_flows, slow_import_flows
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("worker")


async def test_isolated_action_runs_in_another_process(client: cairn.Client) -> None:
    first, second = await client.run(isolate_flows.pid_flow, timeout=30)
    assert os.getpid() not in (first, second)
    assert first == second  # a warm child serves one attempt after another (no process start per call)


async def test_depends_context_and_memory_work_inside_the_child(client: cairn.Client) -> None:
    handle = await client.start(isolate_flows.introspect_flow, "ada")
    out = await handle.result(timeout=30)
    assert out["pid"] != os.getpid()
    assert out["greeting"] == f"pid {out['pid']} says hello ada"  # the provider ran in the child too
    assert out["run_id"] == handle.id and out["attempt"] == 1
    assert out["key"] == f"{handle.id}:2"  # step 1 is the workflow's own memory write
    assert out["before"] == "from the workflow"  # the memory snapshot reached the child
    sync_pid = int(out["sync"].split()[1])  # a plain `def` action with Depends, in a child too
    assert sync_pid != os.getpid()
    memory = await handle.memory()
    assert memory["seen"] == {"name": "ada", "attempt": 1}
    assert memory["sync"] == 1
    steps = {s.name: s for s in await handle.steps()}
    assert "INFO hello from ada" in steps["tests.isolate_flows.introspect"].logs


async def test_timeout_kills_the_process_and_raises_action_timeout(client: cairn.Client, tmp_path: Path) -> None:
    handle = await client.start(isolate_flows.hang_flow, str(tmp_path))
    outcome = await handle.result(timeout=30)
    assert outcome.startswith("ActionTimeout: action tests.isolate_flows.hangs ran past its 1s timeout (attempt 2)")
    (step,) = await handle.steps()
    assert step.attempt == 2 and step.status == StepStatus.FAILED and step.error["type"] == "ActionTimeout"
    pids = [int((tmp_path / f"{attempt}.pid").read_text()) for attempt in (1, 2)]
    assert pids[0] != pids[1]
    for pid in pids:  # killed and reaped: not even a zombie is left
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_exit_and_segfault_fail_the_attempt_and_are_retried(client: cairn.Client, worker: cairn.Worker) -> None:
    handle = await client.start(isolate_flows.crash_flow)
    exited, segfaulted = await handle.result(timeout=30)
    assert exited.startswith("ok on attempt 2 in ") and segfaulted == "ok on attempt 2"
    first, second = await handle.steps()
    assert first.attempt == 2 and second.attempt == 2
    assert any(
        "attempt 1 failed: ActionCrashed: action tests.isolate_flows.exits_once crashed: "
        "exited with code 3 before returning a result" in line
        for line in first.logs
    ), first.logs
    assert any(
        "attempt 1 failed: ActionCrashed: action tests.isolate_flows.segfaults_once crashed: killed by SIGSEGV" in line
        for line in second.logs
    ), second.logs
    # The worker that ran them is still alive and still takes work.
    assert worker.failure is None
    assert await client.run(isolate_flows.pid_flow, timeout=30)


async def test_crash_after_the_last_attempt_reaches_the_workflow_as_action_crashed(client: cairn.Client) -> None:
    handle = await client.start(isolate_flows.always_crash_flow)
    outcome = await handle.result(timeout=30)
    assert outcome.startswith(
        "ActionCrashed: action tests.isolate_flows.always_exits crashed: exited with code 7 before returning a result"
    )
    (step,) = await handle.steps()
    assert step.attempt == 2 and step.error["type"] == "ActionCrashed"
    assert issubclass(cairn.ActionCrashed, cairn.TransientError)


async def test_exception_inside_the_child_keeps_its_type(client: cairn.Client) -> None:
    handle = await client.start(isolate_flows.raise_flow, "bad input")
    with pytest.raises(isolate_flows.IsolatedBoom, match="bad input"):
        await handle.result(timeout=30)
    (step,) = await handle.steps()
    assert step.attempt == 1  # not transient: no retry, exactly as in process
    assert step.error["type"] == "IsolatedBoom" and step.error["module"] == "tests.isolate_flows"


async def test_the_childs_stderr_is_kept_with_the_step_and_named_in_a_crash(
    client: cairn.Client, worker: cairn.Worker
) -> None:
    survived = await client.start(isolate_flows.complaining_flow, False)
    assert await survived.result(timeout=30) == "survived"
    (step,) = await survived.steps()
    assert "STDERR warning: the C library is unhappy" in step.logs
    died = await client.start(isolate_flows.complaining_flow, True)
    message = await died.result(timeout=30)
    assert "exited with code 5" in message
    assert "its stderr ended with: warning: the C library is unhappy" in message


async def test_the_import_of_the_actions_module_in_its_process_is_not_the_actions_time(client: cairn.Client) -> None:
    """A module that takes 1.5 s to import in a fresh child (a heavy library) failed every attempt
    of its 1 s action with ActionTimeout: the deadline ran from the request, import included. On a
    busy machine the import of a light module took long enough to fail such a test in CI."""
    handle = await client.start(slow_import_flows.uses_quick, 21)
    assert await handle.result(timeout=60) == 42
    (step,) = await handle.steps()
    assert step.attempt == 1


async def _ended(pid: int) -> bool:
    """Whether process `pid` has ended: gone, or a zombie (an init that reaps no orphans, as in some
    containers, leaves one, which `os.kill(pid, 0)` still finds)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _kill(pid: int) -> None:
    """Leave nothing running when a test fails."""
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)


def _started_pid(pid_dir: Path) -> int | None:
    text = (pid_dir / "subprocess.pid").read_text() if (pid_dir / "subprocess.pid").exists() else ""
    return int(text) if text else None


async def test_a_timeout_ends_the_processes_the_action_started(client: cairn.Client, tmp_path: Path) -> None:
    """A timeout killed the action's process alone: a `sleep` it waited for (an ffmpeg, a shell
    pipeline) ran on, reparented to init, and each retry started one more."""
    handle = await client.start(isolate_flows.subprocess_timeout_flow, str(tmp_path))
    assert await handle.result(timeout=30) == "ActionTimeout"
    started = _started_pid(tmp_path)
    assert started is not None
    try:
        await eventually(lambda: _ended(started), timeout=5, what="the action's subprocess ended")
    finally:
        _kill(started)


async def test_a_cancel_ends_the_processes_the_action_started(client: cairn.Client, tmp_path: Path) -> None:
    handle = await client.start(isolate_flows.subprocess_flow, str(tmp_path))

    async def started() -> int | None:
        return _started_pid(tmp_path)

    pid = await eventually(started, timeout=30, what="the action started its subprocess")
    try:
        await handle.cancel()
        await eventually(lambda: _ended(pid), timeout=10, what="the action's subprocess ended")
    finally:
        _kill(pid)


async def test_a_stopping_worker_ends_what_its_actions_left_running(client: cairn.Client, worker: cairn.Worker) -> None:
    """A process an action started and left running ends with the action's process at the worker's
    stop (it outlived it, reparented to init)."""
    pid = await client.run(isolate_flows.leaves_a_subprocess_flow, timeout=30)
    try:
        assert not await _ended(pid)  # it runs on beside the warm child meanwhile
        await worker.stop()
        await eventually(lambda: _ended(pid), timeout=5, what="the action's subprocess ended")
    finally:
        _kill(pid)


async def test_sys_exit_or_keyboard_interrupt_in_the_child_fails_the_attempt_as_in_process(
    client: cairn.Client,
) -> None:
    """`sys.exit()` (or KeyboardInterrupt) in an isolated action ended its process: an ActionCrashed,
    retried, where the same action in process failed once, its error recorded under its own type."""
    said = {
        "exit": "SystemExit: 3",
        "interrupt": "KeyboardInterrupt: ",
        "generator_exit": "GeneratorExit: raised by the action",
    }
    handles = {how: await client.start(isolate_flows.ends_itself_flow, how) for how in said}
    for how, handle in handles.items():
        assert await handle.result(timeout=30) == f"ActionError: {said[how]}"
        (step,) = await handle.steps()
        assert step.attempt == 1 and step.error["type"] == said[how].split(":")[0]
