"""Starting and reading runs: idempotent ids, names, bad input, listing, the blocking client."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import cairn
from cairn import RunStatus
from cairn.serialization import max_payload_bytes
from tests import flows

pytestmark = pytest.mark.usefixtures("worker")


async def test_start_is_idempotent_on_id(client: cairn.Client) -> None:
    first = await client.start(flows.Sequence3, 1, id="order-1")
    second = await client.start(flows.Sequence3, 99, id="order-1")
    assert first.id == second.id == "order-1"
    assert await second.result(timeout=10) == 4
    assert len(await client.list_runs(workflow=flows.Sequence3)) == 1


async def test_concurrent_starts_with_one_id_create_one_run(client: cairn.Client) -> None:
    handles = await asyncio.gather(*(client.start(flows.Sequence3, i, id="same") for i in range(10)))
    assert {h.id for h in handles} == {"same"}
    assert len(await client.list_runs()) == 1


async def test_start_by_registered_name(client: cairn.Client) -> None:
    handle = await client.start("tests.flows.Sequence3", 10)
    assert await handle.result(timeout=10) == 13
    assert await client.run("Sequence3", 20, timeout=10) == 23  # the human name works too


async def test_unknown_workflow_name_is_a_clear_error_and_writes_nothing(client: cairn.Client) -> None:
    with pytest.raises(cairn.UnknownWorkflowError, match=r"no workflow named 'billing.Nope'"):
        await client.start("billing.Nope", 1)
    assert await client.list_runs() == []


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("not a number",), {}, "argument 'x' of tests.flows.Sequence3 does not match its type int"),
        ((), {}, "missing a required argument: 'x'"),
        ((1, 2), {}, "too many positional arguments"),
        ((1,), {"y": 1}, "unexpected keyword argument 'y'"),
        ((float("nan"),), {}, "NaN|nan"),
        ((object(),), {}, "argument 'x' of tests.flows.Sequence3 is not JSON-serializable"),
    ],
)
async def test_input_that_does_not_match_the_signature_is_rejected(
    client: cairn.Client, args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises((TypeError, cairn.SerializationError), match=message):
        await client.start(flows.Sequence3, *args, **kwargs)
    assert await client.list_runs() == []


async def test_oversized_payload_is_rejected(client: cairn.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAIRN_MAX_PAYLOAD_BYTES", "1000")
    max_payload_bytes.cache_clear()  # read once per process: as if this process started with it
    try:
        with pytest.raises(cairn.PayloadTooLarge, match=r"over the 1000-byte payload limit"):
            await client.start(flows.plain_def, list(range(1000)))
    finally:
        monkeypatch.undo()
        max_payload_bytes.cache_clear()
    assert await client.list_runs() == []


async def test_nul_bytes_and_unicode_round_trip(client: cairn.Client) -> None:
    handle = await client.start(flows.Approval, "nul\x00byte ✓")
    await handle.signal("approval", {"ok": True, "by": "zoë\x00"})
    assert await handle.result(timeout=10) == "nul\x00byte ✓:zoë\x00:approved"


async def test_list_runs_filters_and_validates(client: cairn.Client) -> None:
    await client.run(flows.Sequence3, 1, timeout=10)
    failed = await client.start(flows.fails, "x")
    with pytest.raises(ValueError):
        await failed.result(timeout=10)
    assert [r.id for r in await client.list_runs(status="failed")] == [failed.id]
    assert len(await client.list_runs(status=RunStatus.COMPLETED)) == 1
    with pytest.raises(ValueError, match=r"unknown status 'exploded'"):
        await client.list_runs(status="exploded")


async def test_unknown_run_id(client: cairn.Client) -> None:
    with pytest.raises(cairn.RunNotFound):
        await client.get("nope").status()
    with pytest.raises(cairn.RunNotFound):
        await client.get("nope").signal("x", 1)


async def test_events_tell_a_run_in_the_order_it_happened(client: cairn.Client) -> None:
    # Several of these are written by one transaction (an action scheduled and started at once,
    # its result and the next action): they are buffered and written together, in order.
    handle = await client.start(flows.function_style, 3)
    assert await handle.result(timeout=10) == 7
    events = await handle.events()
    assert [(e.kind, e.step) for e in events] == [
        ("started", None),
        ("step.scheduled", 1),
        ("step.started", 1),
        ("step.completed", 1),
        ("step.scheduled", 2),
        ("step.started", 2),
        ("step.completed", 2),
        ("completed", None),
    ]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert events[1].detail == {"kind": "action", "name": "tests.flows.double"}


async def test_result_timeout(client: cairn.Client) -> None:
    handle = await client.start(flows.Approval, "never approved")
    with pytest.raises(TimeoutError, match=r"did not finish within 0.2s"):
        await handle.result(timeout=0.2)


async def test_a_run_that_ends_in_this_process_hands_its_result_to_the_waiter(client: cairn.Client) -> None:
    """The commit that ends a run (by the worker in this process) carries its row to the waiter of
    `run`: no read back. The value and the error are those the database holds."""
    reads: list[str] = []
    real = client.store.db.transaction

    async def counted(fn: Any, write: bool = True, rerunnable: bool = False) -> Any:
        if not write:
            reads.append(getattr(fn, "__qualname__", "?"))
        return await real(fn, write, rerunnable)

    client.store.db.transaction = counted  # type: ignore[method-assign]
    assert await client.run(flows.Sequence3, 1, id="done", timeout=10) == 4
    with pytest.raises(ValueError, match="bad input"):
        await client.run(flows.fails, "bad input", id="failed", timeout=10)
    assert reads == []

    client.store.db.transaction = real  # type: ignore[method-assign]
    for handle, status in ((client.get("done"), RunStatus.COMPLETED), (client.get("failed"), RunStatus.FAILED)):
        row = await handle.describe()
        assert row.status == status and row.completed_at is not None


async def test_where_id_returns_handle(client: cairn.Client) -> None:
    await client.start(flows.Sequence3, 5, id="w-1")
    handle = flows.Sequence3.where_id("w-1", client)
    assert await handle.result(timeout=10) == 8


def test_blocking_client(db_url: str) -> None:
    with cairn.connect_sync(db_url) as sync:

        async def serve() -> None:
            async with cairn.Worker(cairn.Client(db_url), poll_interval=0.1):
                await asyncio.to_thread(_drive, sync)

        asyncio.run(serve())


def _drive(sync: cairn.SyncClient) -> None:
    handle = sync.start(flows.Sequence3, 7, id="sync-1")
    assert handle.result(timeout=10) == 10
    assert handle.status() == RunStatus.COMPLETED
    assert [s.result for s in handle.steps()] == [8, 9, 10]
    assert sync.run(flows.function_style, 1, timeout=10) == 3
    assert [r.id for r in sync.list_runs(workflow=flows.Sequence3)] == ["sync-1"]
