"""`cairn result RUN [--wait S] [--json]`: a run's result for scripts, on both backends."""

from __future__ import annotations

import contextlib
import json

import cairn
from tests import flows
from tests.helpers import cli_in_thread


async def test_result_prints_a_completed_runs_result(client: cairn.Client, worker: cairn.Worker) -> None:
    handle = await client.start(flows.Sequence3, 1, id="r-ok")
    await handle.result(timeout=30)
    done = await cli_in_thread(["result", "r-ok", "--db", client.url])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == await handle.result()
    as_json = await cli_in_thread(["result", "r-ok", "--db", client.url, "--json"])
    assert json.loads(as_json.output) == {
        "id": "r-ok",
        "status": "completed",
        "result": await handle.result(),
        "error": None,
    }


async def test_result_waits_for_a_run_to_finish(client: cairn.Client, worker: cairn.Worker) -> None:
    await client.start(flows.sleeper, 0.2, id="r-wait")
    done = await cli_in_thread(["result", "r-wait", "--db", client.url, "--wait", "30"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output.strip().splitlines()[-1]) == "slept True"


async def test_result_of_an_unfinished_or_failed_run_exits_1(client: cairn.Client, worker: cairn.Worker) -> None:
    handle = await client.start(flows.Approval, "o-1", id="r-open")
    unfinished = await cli_in_thread(["result", "r-open", "--db", client.url])
    assert unfinished.exit_code == 1
    assert "did not finish" in unfinished.output
    await handle.cancel()
    failing = await client.start(flows.fails, "broken", id="r-fail")
    with contextlib.suppress(Exception):
        await failing.result(timeout=30)
    failed = await cli_in_thread(["result", "r-fail", "--db", client.url])
    assert failed.exit_code == 1
    assert "broken" in failed.output
    missing = await cli_in_thread(["result", "nope", "--db", client.url])
    assert missing.exit_code == 2
    assert "no run with id 'nope'" in missing.output


@cairn.workflow
async def echo_value(value: str) -> str:
    return await flows.slow_echo(value, 0)


async def test_a_result_holding_a_lone_surrogate_is_printed_escaped(client: cairn.Client, worker: cairn.Worker) -> None:
    """What `os.fsdecode` makes of a file name that is not UTF-8: the engine and the HTTP API carry
    it, and printing it failed `cairn result` and `cairn show` (exit 2, after the run was made)."""
    name = "report-\udcff.csv"
    handle = await client.start(echo_value, name, id="r-surrogate")
    assert await handle.result(timeout=30) == name
    for args in (["result", "r-surrogate"], ["result", "r-surrogate", "--json"], ["show", "r-surrogate", "--json"]):
        done = await cli_in_thread([*args, "--db", client.url])
        assert done.exit_code == 0, done.output
        assert "report-\\udcff.csv" in done.output
    shown = await cli_in_thread(["show", "r-surrogate", "--db", client.url])
    assert shown.exit_code == 0, shown.output
