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
