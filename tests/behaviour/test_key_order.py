"""A dict comes back with its keys in the order it had, as Python keeps them: a run's input, an
action's arguments and result, a signal's payload, memory, properties and the run's result, on both
backends. Before, every payload was stored with sorted keys, so `{"zeta": 1, "alpha": 2}` came back
as `{"alpha": 2, "zeta": 1}`.

Journals written then have their keys sorted: a replay compares a step's arguments as values when
the texts differ, so those runs go on under the new code instead of diverging."""

from __future__ import annotations

import pytest

import cairn
from cairn import RunStatus
from cairn.serialization import dumps, loads, same_json
from tests import order_flows as of
from tests.conftest import eventually
from tests.helpers import raw_sql, sql_row, status_is

pytestmark = pytest.mark.timeout(60)

DATA = {"zeta": 1, "alpha": 2, "mid": 3}


async def test_dict_keys_keep_their_order_through_a_run(client: cairn.Client) -> None:
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(of.KeepsOrder, DATA)
        await eventually(lambda: status_is(handle, RunStatus.WAITING), what="the run waiting for its signal")
        await handle.signal("more", {"yak": 1, "bee": 2})
        result = await handle.result(timeout=20)
    assert list(result) == ["input", "echoed", "signalled", "last"]
    assert result["input"] == ["zeta", "alpha", "mid"]
    assert result["echoed"] == ["z-zeta", "z-alpha", "z-mid"]
    assert result["signalled"] == ["yak", "bee"]
    step = (await handle.steps())[0]
    assert list(step.args["data"]) == ["zeta", "alpha", "mid"] and list(step.result) == ["z-zeta", "z-alpha", "z-mid"]
    assert list((await handle.memory())["echoed"]) == ["zeta", "alpha"]
    assert list((await handle.properties())["seen"]) == ["zeta", "alpha"]
    row = await handle.describe()
    assert list(loads(row.input)["data"]) == ["zeta", "alpha", "mid"]


async def test_a_journal_with_sorted_keys_replays_under_the_new_code(client: cairn.Client, db_url: str) -> None:
    """The step's arguments as an older Cairn wrote them (keys sorted: alpha before zulu), or as code
    that built the dict in another order would: the run goes on, no NonDeterminismError."""
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(of.pairs_then_waits, 9, 4)
        await eventually(lambda: status_is(handle, RunStatus.WAITING), what="the run waiting")
        assert sql_row(db_url, "SELECT args FROM cairn_steps WHERE run_id = ? AND seq = 1", handle.id) == (
            '{"zulu":9,"alpha":4}',
        )
        raw_sql(
            db_url, "UPDATE cairn_steps SET args = ? WHERE run_id = ? AND seq = 1", '{"alpha":4,"zulu":9}', handle.id
        )
        await handle.signal("go")  # the run is rebuilt by replay against the sorted journal
        assert await handle.result(timeout=20) == 5


@pytest.mark.parametrize("recorded", ['{"alpha":4.0,"zulu":9}', "{garbage"])
async def test_other_arguments_in_the_journal_still_diverge(client: cairn.Client, db_url: str, recorded: str) -> None:
    """Other values, or text that is not JSON: a NonDeterminismError at that step, the run paused
    (never a JSON error raised into the workflow's code)."""
    async with cairn.Worker(client, poll_interval=0.05):
        handle = await client.start(of.pairs_then_waits, 9, 4)
        await eventually(lambda: status_is(handle, RunStatus.WAITING), what="the run waiting")
        raw_sql(db_url, "UPDATE cairn_steps SET args = ? WHERE run_id = ? AND seq = 1", recorded, handle.id)
        await handle.signal("go")
        await eventually(lambda: status_is(handle, RunStatus.PAUSED), what="the run paused on its divergence")
        error = (await handle.describe()).error or ""
        assert "NonDeterminismError" in error and "at step 1" in error, error


def test_same_json_compares_values_not_key_order() -> None:
    assert dumps({"b": 1, "a": 2}) == '{"b":1,"a":2}'
    assert same_json('{"b":1,"a":{"y":1,"x":2}}', '{"a":{"x":2,"y":1},"b":1}')
    assert not same_json('{"a":1}', '{"a":1.0}') and not same_json('{"a":1}', '{"a":true}')
    assert same_json(None, None) and not same_json(None, "null") and not same_json("[1,2]", "[2,1]")
    assert not same_json("{garbage", '{"a":1}') and same_json("{garbage", "{garbage")
