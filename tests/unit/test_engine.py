"""The engine alone: journal in, commands out. No database, no worker, milliseconds."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import cairn
from cairn.engine import instance as instance_module
from cairn.engine.instance import WorkflowInstance
from cairn.records import ActivationResult, NewStep, RunRow, StepRow
from cairn.registry import WorkflowDef
from cairn.types import RunStatus, StepKind, StepStatus
from tests import flows


def _run(defn: WorkflowDef, input: dict[str, object], activations: int = 0) -> RunRow:
    return RunRow(
        id="r1",
        workflow=defn.id,
        status=RunStatus.RUNNING,
        input=json.dumps(input),
        result=None,
        error=None,
        queue="default",
        parent_id=None,
        parent_seq=None,
        created_at=1000.0,
        updated_at=1000.0,
        started_at=None,
        completed_at=None,
        activations=activations,
        properties=None,
        code_version=None,
        lease_owner=None,
        lease_token=1,
    )


def _row(
    step: NewStep, status: StepStatus = StepStatus.COMPLETED, result: object = None, delivered_in: int | None = None
) -> StepRow:
    return StepRow(
        run_id="r1",
        seq=step.seq,
        kind=step.kind,
        name=step.name,
        args=step.args,
        status=status,
        result=json.dumps(result),
        error=None,
        attempt=1,
        delivered_in=delivered_in,
        delivered_at=1001.0,
        due_at=step.due_at,
        queue=step.queue,
        options=None,
        memory_writes=None,
        logs=None,
        created_at=1000.0,
        started_at=None,
        completed_at=1001.0,
    )


def _defn(wf: object) -> WorkflowDef:
    return wf.__cairn_workflow__  # type: ignore[attr-defined, no-any-return]


def test_activation_emits_one_step_then_completes_on_results() -> None:
    defn = _defn(flows.Sequence3)
    inst = WorkflowInstance(defn, _run(defn, {"x": 1}), [], seed=1)
    first = inst.activate([], now=1000.0)
    assert [(s.seq, s.kind, s.name, s.args) for s in first.new_steps] == [
        (1, StepKind.ACTION, "tests.flows.add_one", '{"x":1}')
    ]
    assert first.status == RunStatus.RUNNING
    journal = [_row(first.new_steps[0], result=2)]
    second = inst.activate(journal, now=1001.0)
    assert second.delivered == [1] and second.new_steps[0].args == '{"x":2}'
    third = inst.activate([_row(second.new_steps[0], result=3)], now=1002.0)
    done = inst.activate([_row(third.new_steps[0], result=4)], now=1003.0)
    assert done.status == RunStatus.COMPLETED and done.result == "4"
    assert flows.CALLS == {}  # the engine never executes actions


def test_a_closed_run_and_an_action_context_are_freed_without_the_garbage_collector() -> None:
    """A finished run's copy (its runtime, loop, journal) and an attempt's context made cycles: they
    waited for the cyclic collector, mostly its rare full collections, each a walk of every object
    of the process (about 26 objects a 3-step run left, and 5-8% of the naive loop's time in
    collections)."""
    import gc
    import weakref

    from cairn.action_context import ActionContext

    defn = _defn(flows.Sequence3)
    gc.collect()
    gc.disable()
    try:
        inst = WorkflowInstance(defn, _run(defn, {"x": 1}), [], seed=1)
        first = inst.activate([], now=1000.0)
        runtime, loop = weakref.ref(inst.runtime), weakref.ref(inst.loop)
        second = inst.activate([_row(first.new_steps[0], result=2)], now=1001.0)
        third = inst.activate([_row(second.new_steps[0], result=3)], now=1002.0)
        assert inst.activate([_row(third.new_steps[0], result=4)], now=1003.0).status == RunStatus.COMPLETED
        inst.close()
        del inst
        assert runtime() is None and loop() is None, "a closed run's copy waits for the garbage collector"
        ctx = ActionContext(run_id="r1", action_id="a", attempt=1, step=1)
        ctx.logger.info("kept with the step")
        assert ctx.logs == ["INFO kept with the step"]
        context = weakref.ref(ctx)
        del ctx
        assert context() is None, "an attempt's context waits for the garbage collector"
    finally:
        gc.enable()


def _drive_to_end(defn: WorkflowDef, input: dict[str, object]) -> tuple[list[StepRow], ActivationResult]:
    """Run a workflow whose actions return x+1 / x*2, recording the journal as the store would."""
    inst = WorkflowInstance(defn, _run(defn, input), [], seed=7)
    journal: list[StepRow] = []
    batch: list[StepRow] = []
    k = 0
    while True:
        k += 1
        res = inst.activate(batch, now=1000.0 + k)
        journal = [replace(r, delivered_in=k) if r in batch else r for r in journal]
        if res.status != RunStatus.RUNNING:
            return journal, res
        batch = []
        for step in res.new_steps:
            if step.delivered:
                journal.append(_row(step, result=json.loads(step.result or "null"), delivered_in=0))
                continue
            x = json.loads(step.args or "{}")["x"]
            row = _row(step, result=x + 1 if step.name.endswith("add_one") else x * 2)
            journal.append(row)
            batch.append(row)


def test_replay_reaches_same_state_without_emitting_recorded_steps() -> None:
    defn = _defn(flows.tasks_flow)
    journal, res = _drive_to_end(defn, {"x": 10})
    assert res.result == "31"
    # Rebuild from the journal at every point: no step that is recorded is emitted again. A step
    # delivered later was in the journal then, not yet resolved (a restore that finds no row for a
    # step its replay schedules takes it for a divergence).
    for k in range(1, max(r.delivered_in or 0 for r in journal) + 1):
        unresolved = {"delivered_in": None, "status": StepStatus.SCHEDULED, "result": None}
        part = [r if (r.delivered_in or 0) < k else dataclasses.replace(r, **unresolved) for r in journal]
        inst = WorkflowInstance.restore(defn, _run(defn, {"x": 10}, activations=k - 1), part, seed=99)
        assert inst.runtime.fatal is None


async def test_a_long_replay_on_an_event_loop_gives_the_loop_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker replays a journal on its event loop: a journal of 50,000 steps held it for 2.6 s,
    the heartbeat that keeps its leases included (past the lease, two workers took the run from
    each other for ever). The loop gets a turn every REPLAY_TURN seconds of replay (0 here)."""
    defn = _defn(flows.count_up)
    journal, res = _drive_to_end(defn, {"n": 30})
    assert res.result == "30"
    monkeypatch.setattr(instance_module, "REPLAY_TURN", 0.0)
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    before = turns
    recorded = max(r.delivered_in or 0 for r in journal)
    inst = await WorkflowInstance.restore_async(defn, _run(defn, {"n": 30}, activations=recorded), journal, seed=3)
    during = turns - before
    task.cancel()
    assert inst.runtime.fatal is None and inst.finished
    assert during >= recorded - 1, f"the loop had {during} turns during a replay of {recorded} activations"


def test_divergent_replay_pauses_with_named_step() -> None:
    defn = _defn(flows.Sequence3)
    recorded = _row(NewStep(1, StepKind.ACTION, "tests.flows.double", '{"x":1}'), delivered_in=None)
    inst = WorkflowInstance.restore(defn, _run(defn, {"x": 1}, activations=1), [recorded], seed=1)
    res = inst.activate([recorded], now=1002.0)
    assert res.status == RunStatus.PAUSED
    err = json.loads(res.error or "{}")
    assert err["type"] == "NonDeterminismError"
    assert "step 1" in err["message"]
    assert 'action tests.flows.double({"x":1})' in err["message"]
    assert 'action tests.flows.add_one({"x":1})' in err["message"]


def test_recorded_values_are_replayed_not_regenerated() -> None:
    defn = _defn(flows.recorded_values)
    inst = WorkflowInstance(defn, _run(defn, {}), [], seed=1)
    res = inst.activate([], now=1000.0)
    assert res.status == RunStatus.COMPLETED
    rows = [_row(s, result=json.loads(s.result or "null"), delivered_in=0) for s in res.new_steps]
    again = WorkflowInstance.restore(defn, _run(defn, {}, activations=0), rows, seed=12345)
    replayed = again.activate([], now=5000.0)
    assert replayed.result == res.result and replayed.new_steps == []


def test_workflow_io_raises_sandbox_error() -> None:
    @cairn.workflow(id="tests.unit.io")
    async def does_io() -> None:
        import asyncio

        await asyncio.open_connection("127.0.0.1", 5432)

    defn = _defn(does_io)
    res = WorkflowInstance(defn, _run(defn, {}), [], seed=1).activate([], now=1.0)
    assert res.status == RunStatus.FAILED
    err = json.loads(res.error or "{}")
    assert err["type"] == "WorkflowSandboxError" and "do I/O in an action" in err["message"]


def test_not_in_workflow_errors() -> None:
    with pytest.raises(cairn.NotInWorkflow):
        cairn.wait_for_signal("x")
    with pytest.raises(cairn.NotInWorkflow):
        cairn.patched("x")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("open('/tmp/cairn-sandbox-test.txt', 'w')", "opening files"),
        ("time.time()", "use cairn.now()"),
        ("time.sleep(0.01)", "cairn.sleep"),
        ("time.localtime()", "time.localtime() without a time reads the real clock"),
        ("time.gmtime(None)", "time.gmtime() without a time reads the real clock"),
        ("time.ctime()", "time.ctime() without a time"),
        ("time.asctime()", "time.asctime() without a time"),
        ("time.strftime('%Y')", "time.strftime() without a time"),
        ("threading.Thread(target=print).start()", "threads are not deterministic"),
        ("socket.socket()", "sockets are I/O"),
        ("subprocess.run(['true'])", "subprocesses"),
        ("random.random()", "random.random() draws from the process's shared generator"),
        ("random.randint(1, 6)", "random.randint() draws"),
        ("random.choice([1, 2])", "random.choice() draws"),
        ("random.shuffle([1, 2])", "random.shuffle() draws"),
        ("random.uniform(0, 1)", "random.uniform() draws"),
        ("random.seed(4)", "use cairn.random()"),
        # bound to the shared generator before the guard existed, as `from random import choice` is
        ("random.Random.choice.__get__(random._inst)([1, 2])", "the random module's functions"),
        # reached through a value, past the static check: they were allowed at run time
        ("os.remove('/tmp/cairn-sandbox-victim.txt')", "changing files (/tmp/cairn-sandbox-victim.txt)"),
        ("os.rename('/tmp/cairn-a', '/tmp/cairn-b')", "changing files (/tmp/cairn-a)"),
        ("os.mkdir('/tmp/cairn-sandbox-dir')", "changing files"),
        ("os.listdir('/tmp')", "listing files (/tmp)"),
        ("os.open('/tmp/cairn-sandbox-test.py', os.O_WRONLY | os.O_CREAT)", "opening files"),
        ("time.monotonic_ns()", "time.monotonic_ns() reads the real clock"),
        ("time.perf_counter_ns()", "time.perf_counter_ns() reads the real clock"),
        ("time.clock_gettime(time.CLOCK_REALTIME)", "time.clock_gettime() reads a real clock"),
        ("__import__('_thread').start_new_thread(print, ())", "threads are not deterministic"),
    ],
)
def test_runtime_guard_refuses_real_world_access(body: str, message: str) -> None:
    namespace: dict[str, object] = {}
    exec(  # a workflow the static check cannot see into: the run-time guard must catch it
        "import os, time, threading, socket, subprocess, random\n"
        f"async def sneaky() -> None:\n    helper()\ndef helper() -> None:\n    {body}\n",
        namespace,
    )
    wf = cairn.workflow(id=f"tests.unit.sneaky.{abs(hash(body))}")(namespace["sneaky"])
    defn = _defn(wf)
    res = WorkflowInstance(defn, _run(defn, {}), [], seed=1).activate([], now=1.0)
    err = json.loads(res.error or "{}")
    assert res.status == RunStatus.FAILED and err["type"] == "WorkflowSandboxError", err
    assert message in err["message"] and err["message"].startswith("inside a workflow")


def test_a_module_imported_in_workflow_code_may_write_its_bytecode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing one of the app's modules inside a workflow writes its `__pycache__` (through a
    temporary `*.pyc.<n>` file): refused, and not as an OSError, which the import would have
    skipped, the import failed and the run with it, on every fresh deploy."""
    (tmp_path / "lazily_imported_helper.py").write_text("def nine() -> int:\n    return 9\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)

    @cairn.workflow(id="tests.unit.lazy_import")
    async def lazy() -> int:
        import lazily_imported_helper  # type: ignore[import-not-found]

        return int(lazily_imported_helper.nine())

    defn = _defn(lazy)
    try:
        res = WorkflowInstance(defn, _run(defn, {}), [], seed=1).activate([], now=1.0)
    finally:
        sys.modules.pop("lazily_imported_helper", None)
    assert res.status == RunStatus.COMPLETED, res.error
    assert json.loads(res.result or "null") == 9
    assert list((tmp_path / "__pycache__").glob("lazily_imported_helper.*.pyc"))


def test_reading_a_time_zone_not_loaded_yet_is_allowed_in_workflow_code() -> None:
    """`zoneinfo.ZoneInfo(name)` reads the system's tz database: it failed the run unless this
    process had loaded that zone already (one worker ran the code, another failed it)."""
    import zoneinfo

    zone = next(
        z for z in ("Pacific/Chatham", "Asia/Kathmandu", "Australia/Eucla") if z in zoneinfo.available_timezones()
    )
    zoneinfo.ZoneInfo.clear_cache(only_keys=[zone])

    @cairn.workflow(id="tests.unit.zoned")
    async def zoned() -> str:
        return cairn.now().astimezone(zoneinfo.ZoneInfo(zone)).isoformat()

    defn = _defn(zoned)
    res = WorkflowInstance(defn, _run(defn, {}), [], seed=1).activate([], now=0.0)
    assert res.status == RunStatus.COMPLETED, res.error
    assert json.loads(res.result or "null").startswith("19")


def test_a_rotating_log_file_of_the_apps_takes_a_workflows_records(tmp_path: Path) -> None:
    """RotatingFileHandler reopens its file on rollover (refused: every line after the first
    rollover lost), TimedRotatingFileHandler reads time.time() from logging.handlers (all lost)."""
    import logging
    import logging.handlers

    logger = logging.getLogger("tests.unit.rotating")
    handlers = [
        logging.handlers.RotatingFileHandler(tmp_path / "size.log", maxBytes=60, backupCount=20, delay=True),
        logging.handlers.TimedRotatingFileHandler(tmp_path / "timed.log", when="S", backupCount=3),
    ]
    for handler in handlers:
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)

    @cairn.workflow(id="tests.unit.rotating")
    async def rotating() -> int:
        for i in range(10):
            logger.info("line %d of a workflow's log", i)
        return 10

    try:
        defn = _defn(rotating)
        res = WorkflowInstance(defn, _run(defn, {}), [], seed=1).activate([], now=1.0)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
    assert res.status == RunStatus.COMPLETED, res.error
    sized = "".join(p.read_text() for p in tmp_path.glob("size.log*"))
    assert sized.count("of a workflow's log") == 10
    assert (tmp_path / "timed.log").read_text().count("of a workflow's log") == 10


def test_time_functions_given_the_time_are_deterministic_and_allowed() -> None:
    @cairn.workflow(id="tests.unit.given_times")
    async def given_times() -> list[str]:
        import time

        at = cairn.now().timestamp()
        return [time.strftime("%Y-%m-%d", time.gmtime(at)), time.asctime(time.gmtime(0)), str(time.localtime(at)[0])]

    defn = _defn(given_times)
    res = WorkflowInstance(defn, _run(defn, {}), [], seed=1).activate([], now=86400.0)
    day, epoch, year = json.loads(res.result or "null")
    assert day.startswith("1970-01-") and epoch == "Thu Jan  1 00:00:00 1970" and year == "1970", res.error


def test_runtime_guard_is_off_outside_workflows_and_logging_works_inside() -> None:
    import logging
    import time

    @cairn.workflow(id="tests.unit.logs")
    async def logs() -> str:
        logging.getLogger("tests").info("a log line from a workflow is fine")
        return "ok"

    defn = _defn(logs)
    assert WorkflowInstance(defn, _run(defn, {}), [], seed=1).activate([], now=1.0).result == '"ok"'
    assert time.time() > 0  # outside a workflow the clock is the clock


def test_random_is_refused_only_in_workflow_code() -> None:
    """Another thread drawing from `random` while a workflow activation runs is untouched, and so
    is a generator the workflow seeds itself; afterwards the module works as before."""
    import random
    import threading

    drawn: list[float] = []
    go, done = threading.Event(), threading.Event()

    def elsewhere() -> None:
        go.wait(5)
        drawn.append(random.random())
        drawn.append(float(random.choice([1, 2])))
        done.set()

    @cairn.workflow(id="tests.unit.random_elsewhere")
    async def seeded() -> float:
        go.set()
        done.wait(5)  # the other thread draws while this activation is guarded
        return random.Random(7).random()  # cairn: allow

    thread = threading.Thread(target=elsewhere)
    thread.start()
    defn = _defn(seeded)
    res = WorkflowInstance(defn, _run(defn, {}), [], seed=1).activate([], now=1.0)
    thread.join(5)
    assert res.status == RunStatus.COMPLETED, res.error
    assert json.loads(res.result or "null") == random.Random(7).random()
    assert len(drawn) == 2 and 0 <= random.random() < 1 and random.randint(1, 2) in (1, 2)


FIRST_WORKFLOW = """
import json, sys
import cairn
from cairn.engine.instance import WorkflowInstance
from cairn.records import RunRow
from cairn.registry import registry
from cairn.types import RunStatus

@cairn.workflow(id="first")
async def first(order: str) -> str:
    return order.upper()

defn = registry.workflow("first")
run = RunRow(id="r", workflow="first", status=RunStatus.PENDING, input=json.dumps({"order": "o-1"}),
             result=None, error=None, queue="default", parent_id=None, parent_seq=None, created_at=1.0,
             updated_at=1.0, started_at=None, completed_at=None, activations=0, properties="{}",
             code_version="", lease_owner=None, lease_token=0, pause_reason=None)
res = WorkflowInstance(defn, run, [], seed=1).activate([], now=1.0)
print(json.dumps([res.status.value, res.result, res.error]))
"""


def test_the_first_workflow_of_a_process_decodes_its_arguments() -> None:
    """pydantic reads its plugins (entry points, from files) at the first schema it builds. In a
    process where nothing had built one, that was a workflow's first decode of its arguments, inside
    the sandbox, which refused the read: `cairn replay` failed the first run it replayed."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FIRST_WORKFLOW], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["completed", '"O-1"', None]
