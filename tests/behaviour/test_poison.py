"""One bad run never hurts the others: a value the database cannot store is refused at the door
with a clear error, or fails only its own run, once and visibly; a grouped commit that the database
refuses for one run applies every other run's part; lookups of such values answer "not found"."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import cairn
from cairn import RunStatus
from cairn.records import ActivationResult, NewRun, NewStep
from cairn.store.protocol import Commit
from cairn.types import StepKind, StepStatus
from tests import flows

pytestmark = pytest.mark.timeout(60)


async def test_a_poisoned_run_beside_thirty_ordinary_ones(client: cairn.Client, db_url: str) -> None:
    async with cairn.Worker(client, poll_interval=0.1):
        began = time.monotonic()
        poisoned = [
            await client.start(flows.nul_memory_key),
            await client.start(flows.nul_signal_name),
            await client.start(flows.nul_memory_key_from_action),
            await client.start(flows.nul_past_the_door),
        ]
        ordinary = await asyncio.gather(*(client.start(flows.Sequence3, i) for i in range(30)))
        assert await asyncio.gather(*(h.result(timeout=20) for h in ordinary)) == [i + 3 for i in range(30)]
        assert time.monotonic() - began < 15
        for handle in poisoned[:3]:
            with pytest.raises(ValueError, match=r"contains a NUL byte, which cannot be stored"):
                await handle.result(timeout=20)
        if db_url.startswith("postgresql"):
            with pytest.raises(cairn.CairnError, match=r"the database refused to record the progress of run"):
                await poisoned[3].result(timeout=20)
        else:
            assert await poisoned[3].result(timeout=20) == "stored"  # SQLite's text holds NUL bytes
    for handle in poisoned:  # failed once, not claimed and refused again and again
        kinds = [e.kind for e in await handle.events()]
        assert kinds.count("failed") <= 1 and len(kinds) < 12, kinds


async def test_a_run_failed_for_a_refused_commit_holds_no_open_step(client: cairn.Client, db_url: str) -> None:
    """The refused commit also recorded an action's result: the run failed with its step still
    `running` (a finished run with an open step, shown as running for ever)."""
    async with cairn.Worker(client, poll_interval=0.1):
        handle = await client.start(flows.nul_after_an_action)
        if db_url.startswith("postgresql"):
            with pytest.raises(cairn.CairnError, match=r"the database refused to record the progress of run"):
                await handle.result(timeout=20)
        else:
            assert await handle.result(timeout=20) == "stored"  # SQLite's text holds NUL bytes
    open_steps = [s.seq for s in await handle.steps() if s.status in (StepStatus.SCHEDULED, StepStatus.RUNNING)]
    assert open_steps == []


async def test_a_refused_piece_never_fails_its_batch_mates(client: cairn.Client) -> None:
    """Eight activation commits go to the store at once (grouped into shared transactions); one
    inserts a step twice, which the database refuses. The seven others land."""
    store = client.store
    for i in range(8):
        assert await store.insert_run(NewRun(f"b{i}", "tests.flows.Sequence3", '{"x":1}', "default")) is None
    runs = [row for row in await store.runs_by_ids([f"b{i}" for i in range(8)]) if row is not None]
    runs.sort(key=lambda r: r.id)

    def commit(i: int) -> Commit:
        step = NewStep(1, StepKind.ACTION, "tests.flows.add_one", '{"x":1}')
        steps = [step, step] if i == 5 else [step]  # run b5's commit is refused
        return Commit(runs[i], 0, ActivationResult(new_steps=steps), now=time.time())

    outcomes = await asyncio.gather(
        *(client.store.commit_activation(commit(i)) for i in range(8)), return_exceptions=True
    )
    assert [i for i, o in enumerate(outcomes) if isinstance(o, Exception)] == [5]
    for i, run in enumerate(runs):
        steps = await client.store.list_steps(run.id)
        assert len(steps) == (0 if i == 5 else 1)


async def test_lookups_and_starts_with_nul_bytes_answer_clearly(client: cairn.Client) -> None:
    with pytest.raises(cairn.RunNotFound):
        await client.get("a\x00b").status()
    with pytest.raises(cairn.RunNotFound):
        await client.get("a\x00b").cancel()
    with pytest.raises(cairn.RunNotFound):
        await client.get("a\x00b").signal("go")
    handle = await client.start(flows.Approval, "o-1")
    with pytest.raises(ValueError, match=r"signal name 'a\\x00b' contains a NUL byte"):
        await handle.signal("a\x00b")
    assert await client.list_runs(workflow="tests.flows.Sequence3\x00") == []
    with pytest.raises(ValueError, match=r"queue name"):
        await client.start(flows.Sequence3, 1, queue="q\x00")
    with pytest.raises(ValueError, match=r"run id"):
        await client.start(flows.Sequence3, 1, id="r\x00")
    with pytest.raises(ValueError, match=r"workflow name"):
        await client.start("tests.flows.Nope\x00", 1)
    assert [r.id for r in await client.list_runs()] == [handle.id]
    assert json.loads((await handle.describe()).input) == {"order": "o-1"}
    assert await handle.status() in (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)


@cairn.workflow
async def surrogate_memory_key() -> str:
    try:
        cairn.memory.add(key="report-\udcff.txt", value=1)  # a file name that is not UTF-8, fsdecoded
    except ValueError as exc:
        return f"refused: {exc}"
    return "stored"


async def test_names_with_a_lone_surrogate_are_refused_at_the_call(client: cairn.Client) -> None:
    """UTF-8 cannot carry a lone surrogate: a memory key holding one failed the run's commit, out
    of the workflow's reach; run ids, signal and queue names raised a bare UnicodeEncodeError."""
    async with cairn.Worker(client, poll_interval=0.1):
        said = await client.run(surrogate_memory_key, timeout=20)
    assert said.startswith("refused: memory key 'report-\\udcff.txt' contains a lone surrogate")
    handle = await client.start(flows.Approval, "o-1")
    with pytest.raises(ValueError, match=r"signal name .* contains a lone surrogate"):
        await handle.signal("go-\udcff")
    with pytest.raises(ValueError, match=r"run id .* contains a lone surrogate"):
        await client.start(flows.Sequence3, 1, id="r-\udcff")
    with pytest.raises(ValueError, match=r"queue name .* contains a lone surrogate"):
        await client.start(flows.Sequence3, 1, queue="q-\udcff")
    with pytest.raises(cairn.RunNotFound):
        await client.get("r-\udcff").status()
    assert len(await client.list_runs()) == 2  # the workflow's run and the one started: nothing else
