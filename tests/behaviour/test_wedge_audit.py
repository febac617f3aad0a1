"""Nothing wedges silently (SPEC 6): a run that cannot go on ends in a visible state with the reason,
at once, instead of killing its worker, running its step again and again, or waiting for ever; and
`retry` of a failed run continues from the failed step, re-running no recorded step."""

from __future__ import annotations

import collections.abc
import functools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import cairn
from cairn import RunStatus, StepStatus
from cairn.engine.instance import WorkflowInstance
from cairn.records import NewRun
from tests import wedge_flows as wf
from tests.conftest import eventually
from tests.helpers import registered, status_is

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _reset() -> collections.abc.Iterator[None]:
    wf.CALLS.clear()
    wf.BROKEN["on"] = True
    yield
    wf.BROKEN["on"] = True


@pytest.fixture
def worker_process(db_url: str, tmp_path: Path) -> collections.abc.Iterator[subprocess.Popen[bytes]]:
    """`cairn worker tests.wedge_flows` in a process of its own (what an action's `sys.exit()` would end)."""
    cmd = [sys.executable, "-m", "cairn.cli.main", "worker", "tests.wedge_flows", "--db", db_url, "--poll", "0.1"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.mark.process
async def test_base_exceptions_raised_by_actions_and_workflows_fail_their_run_not_the_worker(
    client: cairn.Client, worker_process: subprocess.Popen[bytes]
) -> None:
    """`sys.exit()` or KeyboardInterrupt in an action ended the worker process (and the next worker
    to take the step, and the next); another BaseException, or a CancelledError of the action's own,
    left its step running until its lease ran out, to be taken and lost again. Now each is the
    outcome of its attempt, and raised by workflow code, the run's failure."""
    await eventually(lambda: registered(client, "wedge_flows.catches"), timeout=30, what="the worker registered")
    which = ["exits", "exits_async", "interrupted", "own_base_error", "cancels_itself"]
    caught = [await client.start(wf.catches, w) for w in which]
    results = [await h.result(timeout=15) for h in caught]
    assert results == [
        "ActionError: SystemExit: 3",
        "ActionError: SystemExit: 4",
        "ActionError: KeyboardInterrupt: ",
        "ActionError: OwnBaseError: not an Exception",
        "ActionError: CancelledError: ",
    ]
    for handle in caught:
        (step,) = await handle.steps()
        assert step.status == StepStatus.FAILED and step.attempt == 1  # failed once, never lost
    for raising, type_name in ((wf.workflow_exits, "SystemExit"), (wf.workflow_interrupted, "KeyboardInterrupt")):
        failing = await client.start(raising)
        await eventually(functools.partial(status_is, failing, RunStatus.FAILED), timeout=15, what=type_name)
        assert json.loads((await failing.describe()).error or "{}")["type"] == type_name
    assert worker_process.poll() is None, "the worker process ended"
    assert await client.run(wf.quick, 1, timeout=15) == 2  # and it still serves


async def test_an_error_too_big_to_store_is_recorded_cut_short(client: cairn.Client, worker: cairn.Worker) -> None:
    """An action's error over the payload limit (or with a NaN among its arguments) could not be
    recorded: its step stayed running, taken again each time its lease ran out. A workflow's was
    recorded as a PayloadTooLarge, its own type lost. Both keep their type and the start of it."""
    handle = await client.start(wf.survives_unstorable_errors)
    got = await handle.result(timeout=15)
    assert got[0].startswith("ValueError ") and 1000 < int(got[0].split()[1]) < 2 * 1024 * 1024
    assert got[1] == f"ValueError {len(str((float('nan'), 'a NaN among the arguments')))}"
    assert [(s.status, s.attempt) for s in await handle.steps()] == [(StepStatus.FAILED, 1)] * 2

    raising = await client.start(wf.raises_huge)
    with pytest.raises(ValueError, match=r"^w+\.\.\. \[\d+ more characters cut"):
        await raising.result(timeout=15)


async def test_retry_after_an_activation_that_failed_reruns_no_recorded_step(
    client: cairn.Client, worker: cairn.Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An activation that fails in the engine (here: its recording of the properties, broken on
    purpose; a property whose repr raised did it once) did not count as an activation, so `retry`
    rewound one activation too many: a step already recorded was deleted and its action ran again."""
    recorded = WorkflowInstance._properties

    def broken(self: WorkflowInstance) -> str | None:
        if wf.BROKEN["on"] and isinstance(getattr(self.obj, "odd", None), wf.Unshowable):
            raise RuntimeError("repr is broken")
        return recorded(self)

    monkeypatch.setattr(WorkflowInstance, "_properties", broken)
    handle = await client.start(wf.Fragile, 1)
    await eventually(lambda: status_is(handle, RunStatus.FAILED), timeout=15, what="the run failed")
    assert "repr is broken" in ((await handle.describe()).error or "")
    assert [s.seq for s in await handle.steps()] == [1, 2]
    wf.BROKEN["on"] = False  # the fix is deployed
    assert await handle.retry() == RunStatus.RUNNING
    assert await handle.result(timeout=15) == 4
    assert wf.CALLS == {"count:1": 1, "count:2": 1, "count:3": 1}


async def test_a_workflow_awaiting_nothing_durable_fails_saying_so_and_retries_after_a_fix(
    client: cairn.Client, worker: cairn.Worker
) -> None:
    """A workflow awaiting an asyncio.Event nobody sets waited for ever, 'waiting' with nothing to
    wait for and nothing said."""
    handle = await client.start(wf.waits_on_nothing, 1)
    with pytest.raises(cairn.CairnError, match=r"waits for something that is not durable"):
        await handle.result(timeout=15)
    wf.BROKEN["on"] = False
    assert await handle.retry() == RunStatus.RUNNING
    assert await handle.result(timeout=15) == 3
    assert wf.CALLS == {"count:1": 1, "count:2": 1}


async def test_runs_started_without_the_code_record_the_version_they_started_on(
    client: cairn.Client, worker: cairn.Worker
) -> None:
    """A run started by name (CLI, HTTP, a client without the code) or as a child had no code version."""
    await eventually(lambda: registered(client, "wedge_flows.parent_of_quick"), what="registered")
    by_name = await client.start("tests.wedge_flows.parent_of_quick", 1)
    assert await by_name.result(timeout=15) == 2
    parent = wf.parent_of_quick.__cairn_workflow__
    child = wf.quick.__cairn_workflow__
    assert (await by_name.describe()).code_version == parent.version
    (row,) = await by_name.children()
    assert row.code_version == child.version
    # As a client without the code (another process, the HTTP API) starts it: no version given.
    remote_start = NewRun("remote-start", "tests.wedge_flows.quick", '{"x":1}', "default")
    assert await client.store.insert_run(remote_start) is None
    remote = client.get("remote-start")
    assert await remote.result(timeout=15) == 2
    assert (await remote.describe()).code_version == child.version
