"""Starting and reading runs: idempotent ids, names, bad input, listing, the blocking client."""

from __future__ import annotations

import asyncio
import decimal
import inspect
import itertools
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn import RunStatus
from cairn.client import waiter
from cairn.serialization import max_payload_bytes
from cairn.store.protocol import WorkflowInfo
from tests import flows, seedflows
from tests.conftest import _admin, _with_db, eventually
from tests.helpers import status_is

pytestmark = pytest.mark.usefixtures("worker")


@cairn.workflow(id="tests.client.echo")
async def echo(value: Any) -> Any:
    return value


async def test_start_is_idempotent_on_id(client: cairn.Client) -> None:
    first = await client.start(flows.Sequence3, 1, id="order-1")
    second = await client.start(flows.Sequence3, 99, id="order-1")
    assert first.id == second.id == "order-1"
    assert await second.result(timeout=10) == 4
    assert len(await client.list_runs(workflow=flows.Sequence3)) == 1


@cairn.workflow(id="tests.client.keyed")
class Keyed(cairn.Workflow):
    """Derives its run id from its input, as Zenaton's `id()` did."""

    async def run(self, key: str) -> str:
        return key

    def id(self, key: str) -> str:
        return key


@cairn.workflow(id="tests.client.welcome")
class Welcome(cairn.Workflow):
    """`def id(self, *args)` as the README writes it, and a `run` that takes `*extras`."""

    async def run(self, email: str, plan: str = "free", *extras: str) -> str:
        return "/".join([email, plan, *extras])

    def id(self, *args: str, **kwargs: str) -> str:
        return "welcome-" + "/".join([*args, *(f"{k}={v}" for k, v in sorted(kwargs.items()))])


@cairn.workflow(id="tests.client.welcomes")
async def welcomes(email: str) -> list[str]:
    return [await cairn.child(Welcome, email, "pro"), await cairn.start_child(Welcome, email, plan="team").result()]


async def test_id_and_run_get_the_arguments_as_the_start_gave_them(client: cairn.Client, worker: cairn.Worker) -> None:
    """`id(self, *args)` raised TypeError (it got every argument by name), and `run(self, email,
    plan, *extras)` given extras failed with "multiple values for argument 'email'"."""
    assert (await client.start(Welcome, "ada@x", "pro")).id == "welcome-ada@x/pro"
    assert (await client.start(Welcome, "bob@x", plan="pro")).id == "welcome-bob@x/plan=pro"
    assert (await client.start("tests.client.welcome", "eve@x")).id == "welcome-eve@x"
    extras = await client.start(Welcome, "cy@x", "pro", "beta", "vip")
    assert extras.id == "welcome-cy@x/pro/beta/vip"
    assert await extras.result(timeout=10) == "cy@x/pro/beta/vip"
    assert await client.run(welcomes, "dan@x", timeout=10) == ["dan@x/pro", "dan@x/team"]
    ids = {r.id for r in await client.list_runs(workflow=Welcome)}
    assert {"welcome-dan@x/pro", "welcome-dan@x/plan=team"} <= ids


async def test_an_empty_run_id_is_an_error_not_a_new_run(client: cairn.Client) -> None:
    """An empty id (a blank field passed as `id=`, or derived by `id()`) would make an idempotent
    start start a new run on every call: it is refused before anything is written."""
    with pytest.raises(ValueError, match="run id must be a non-empty string"):
        await client.start(flows.Sequence3, 1, id="")
    with pytest.raises(ValueError, match="run id must be a non-empty string"):
        await client.start(Keyed, "")
    with pytest.raises(ValueError, match="run id must be a non-empty string"):
        await client.start("tests.flows.Sequence3", 1, id="")
    for blank in (" ", "\t\n"):
        with pytest.raises(ValueError, match="run id must not be blank"):
            await client.start(flows.Sequence3, 1, id=blank)
        with pytest.raises(ValueError, match="run id must not be blank"):
            await client.start(Keyed, blank)
    with pytest.raises(ValueError, match="queue key must not be blank"):
        await client.start(flows.Sequence3, 1, key="  ")
    assert await client.list_runs() == []
    assert (await client.start(Keyed, "k-1")).id == "k-1"


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


@cairn.workflow
class Collects(cairn.Workflow):
    async def run(self, sizes: list[int]) -> int:
        self.label = "small"
        for i, size in enumerate(sizes):
            setattr(self, f"blob_{i}", "x" * size)
        await cairn.sleep(0)
        return len(sizes)


@pytest.mark.parametrize(
    ("sizes", "missing"),
    [([3000], ["blob_0"]), ([700, 400, 600], ["blob_0"])],
    ids=["one over the limit", "together over the limit"],
)
async def test_properties_are_held_to_the_payload_limit(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch, sizes: list[int], missing: list[str]
) -> None:
    """Recorded after every step, they were the one payload nobody measured: a 3 MB attribute was
    written a hundred times. Over the limit, a property is a note saying why, and the run goes on."""
    monkeypatch.setenv("CAIRN_MAX_PAYLOAD_BYTES", "1500")
    max_payload_bytes.cache_clear()
    try:
        handle = await client.start(Collects, sizes)
        assert await handle.result(timeout=10) == len(sizes)
    finally:
        monkeypatch.undo()
        max_payload_bytes.cache_clear()
    props = await handle.properties()
    assert props["label"] == "small"
    for key, size in zip([f"blob_{i}" for i in range(len(sizes))], sizes, strict=True):
        if key in missing:
            assert props[key].startswith(f"<not recorded: property {key!r} is {size + 2} bytes of JSON")
            assert "1500-byte payload limit (CAIRN_MAX_PAYLOAD_BYTES)" in props[key]
        else:
            assert props[key] == "x" * size
    assert len(json.dumps(props)) <= 1500


class Detached:
    """As an ORM object whose session closed: no JSON, and a repr that raises."""

    def __repr__(self) -> str:
        raise RuntimeError("instance is not bound to a session")


@cairn.workflow
class KeepsADetachedObject(cairn.Workflow):
    async def run(self) -> str:
        self.order = Detached()
        await cairn.sleep(0)
        return "done"


async def test_a_property_whose_repr_raises_does_not_fail_the_run(client: cairn.Client) -> None:
    """Recording properties only watches a run: the repr's error failed it, though its code raised nothing."""
    handle = await client.start(KeepsADetachedObject)
    assert await handle.result(timeout=10) == "done"
    assert (await handle.properties())["order"] == "<Detached object: its repr() raised RuntimeError>"


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


async def test_runs_are_listed_by_any_name_a_start_takes(client: cairn.Client) -> None:
    """A filter names a workflow as a start does: the workflow, its id, or an unambiguous short
    name ("Sequence3" for "tests.flows.Sequence3"), here and where its code is not imported."""
    run = await client.start("Sequence3", 1)
    await run.result(timeout=10)
    for name in (flows.Sequence3, "tests.flows.Sequence3", "Sequence3"):
        assert [r.id for r in await client.list_runs(workflow=name)] == [run.id], name
    await _register_remotely(client, "remote.billing.Invoice", flows.checkout_order)
    remote = await client.start("Invoice", "o-1", "bob@example.com", 1)  # no code for it here
    for name in ("remote.billing.Invoice", "Invoice"):
        assert [r.id for r in await client.list_runs(workflow=name)] == [remote.id], name
        assert [r.id for r in (await client.runs_page(workflow=name)).runs] == [remote.id], name
    assert await client.list_runs(workflow="NoSuchWorkflow") == []


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
    # A process's first wait on runs' news reads its run once on PostgreSQL (it may have ended
    # before the process listened: tests/store/test_listen_by_interest.py); the waits below follow.
    assert await client.run(flows.Sequence3, 0, id="first", timeout=10) == 3
    reads: list[str] = []
    store: Any = client.store
    runs_by_ids, get_run = store.runs_by_ids, store.get_run

    async def counted_runs(ids: Any, finished_only: bool = False) -> Any:
        reads.append(f"runs_by_ids {list(ids)}")
        return await runs_by_ids(ids, finished_only)

    async def counted_run(run_id: str) -> Any:
        reads.append(f"get_run {run_id}")
        return await get_run(run_id)

    # The reads a result wait makes (the worker's heartbeat, which reads on this store too when it
    # comes in between, is not counted: it made this test fail now and then).
    store.runs_by_ids, store.get_run = counted_runs, counted_run
    try:
        assert await client.run(flows.Sequence3, 1, id="done", timeout=10) == 4
        with pytest.raises(ValueError, match="bad input"):
            await client.run(flows.fails, "bad input", id="failed", timeout=10)
    finally:
        store.runs_by_ids, store.get_run = runs_by_ids, get_run
    assert reads == []
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
            client = cairn.Client(db_url)
            try:
                async with cairn.Worker(client, poll_interval=0.1):
                    await asyncio.to_thread(_drive, sync)
            finally:
                await client.close()  # else its LISTEN thread outlives the test's database

        asyncio.run(serve())


def _drive(sync: cairn.SyncClient) -> None:
    handle = sync.start(flows.Sequence3, 7, id="sync-1")
    assert handle.result(timeout=10) == 10
    assert handle.status() == RunStatus.COMPLETED
    assert [s.result for s in handle.steps()] == [8, 9, 10]
    assert sync.run(flows.function_style, 1, timeout=10) == 3
    again = sync.start(flows.Sequence3, 8, id="sync-1")  # the id exists: nothing started, and it says so
    assert (handle.created, again.created, again.input_differs) == (True, False, True)
    assert [r.id for r in sync.list_runs(workflow=flows.Sequence3)] == ["sync-1"]
    found = flows.Sequence3.where_id("sync-1", client=sync)  # Zenaton's blocking where_id(...).pause()
    assert isinstance(found, cairn.SyncRunHandle) and found.result(timeout=10) == 10


def test_closing_the_blocking_client_leaves_no_task_pending(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Closed between two reads of its result waiter, the blocking client's loop finishes its tasks
    (as asyncio.run does) instead of dropping them pending, which asyncio reports as an error."""
    import gc
    import logging

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        with cairn.connect_sync(db_url) as sync:
            handle = sync.start(flows.Sequence3, 1, id="never-served")  # no worker: it stays pending
            with pytest.raises(TimeoutError):
                handle.result(timeout=0.05)
        del sync, handle
        gc.collect()
    assert "destroyed but it is pending" not in caplog.text


async def test_the_blocking_client_controls_schedules(client: cairn.Client, db_url: str) -> None:
    def drive() -> None:
        with cairn.connect_sync(db_url) as sync:
            sync.create_schedule(cairn.Schedule("sync-ctl", flows.tick, cron="0 3 * * *", args=("s",), register=False))
            (row,) = sync.list_schedules()
            assert (row.spec.id, row.source, row.paused, row.last_run_id) == ("sync-ctl", "api", False, None)
            assert (row.id, row.workflow) == ("sync-ctl", "tests.flows.tick")  # as a user reaches for them
            sync.pause_schedule("sync-ctl")
            assert sync.list_schedules()[0].paused
            sync.resume_schedule("sync-ctl")
            assert not sync.list_schedules()[0].paused
            handle = sync.trigger_schedule("sync-ctl")  # a run starts now, served by the test's worker
            assert isinstance(handle, cairn.SyncRunHandle) and handle.id.startswith("sync-ctl@manual:")
            assert handle.result(timeout=10) == "s"
            assert [r.id for r in sync.list_runs(workflow=flows.tick)] == [handle.id]
            sync.delete_schedule("sync-ctl")
            assert sync.list_schedules() == []
            controls = (sync.pause_schedule, sync.resume_schedule, sync.delete_schedule, sync.trigger_schedule)
            for control in controls:
                with pytest.raises(cairn.ScheduleNotFound):
                    control("sync-ctl")

    await asyncio.to_thread(drive)


def _sync_threads() -> int:
    return sum(t.name == "cairn-sync-client" for t in threading.enumerate())


def test_connect_sync_takes_a_retention_as_connect_does(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CAIRN_RETENTION", raising=False)
    with cairn.connect_sync(db_url, retention=timedelta(days=1)) as sync:
        assert sync.retention == sync.inner.retention == timedelta(days=1)
    with cairn.connect_sync(db_url, retention=3600) as sync:  # seconds, as Client takes them
        assert sync.retention == timedelta(hours=1)
    with cairn.connect_sync(db_url) as sync:
        assert sync.retention is None  # keep everything
    monkeypatch.setenv("CAIRN_RETENTION", "2d")
    with cairn.connect_sync(db_url) as sync:
        assert sync.retention == timedelta(days=2)
    threads = _sync_threads()
    for bad, said in ((timedelta(0), "got 0s"), (-5, "got -5s"), (timedelta(seconds=-1), "got -1s")):
        with pytest.raises(ValueError) as blocking:
            cairn.connect_sync(db_url, retention=bad)
        with pytest.raises(ValueError) as async_:
            cairn.Client(db_url, retention=bad)
        assert str(blocking.value) == str(async_.value)
        assert f"retention must be a positive duration, {said}:" in str(async_.value)  # not timedelta(days=-1, ...)
    assert _sync_threads() == threads  # a refused client leaves no loop thread behind
    for zero in ("0", "0s", "0d"):  # taken, it deleted every run as soon as it finished
        monkeypatch.setenv("CAIRN_RETENTION", zero)
        with pytest.raises(ValueError, match=f"CAIRN_RETENTION='{zero}' must be a positive duration, got 0s"):
            cairn.Client(db_url)


ASYNC_ONLY: dict[type, set[str]] = {
    # Per event loop: the blocking client waits through its inner client's, on its own loop.
    cairn.Client: {"waiters"},
    # The async client the handle reads through; a SyncRunHandle reads through `inner` instead.
    cairn.RunHandle: {"client"},
}
"""Public names of the async client and handle with no blocking counterpart, and why. Anything
else added to `Client` or `RunHandle` must be bridged in `cairn.client.sync` too."""


def _public(obj: object) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


def _parameters(fn: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def test_the_blocking_client_has_every_public_method_and_attribute_of_the_async_one(tmp_path: Path) -> None:
    inner = cairn.Client(f"sqlite:///{tmp_path}/parity.db")
    sync = cairn.SyncClient(client=inner)
    try:
        pairs: list[tuple[object, object]] = [(inner, sync), (inner.get("r"), sync.get("r"))]
        for async_side, sync_side in pairs:
            kind = type(async_side)
            missing = _public(async_side) - _public(sync_side) - ASYNC_ONLY[kind]
            assert not missing, f"{type(sync_side).__name__} lacks {sorted(missing)} of {kind.__name__}"
            for name in sorted(_public(async_side) - ASYNC_ONLY[kind]):
                method = getattr(kind, name, None)
                if callable(method):  # the same parameters: names, kinds, defaults
                    assert _parameters(method) == _parameters(getattr(type(sync_side), name)), name
    finally:
        sync.close()


@pytest.fixture
def unmigrated_url(db_url: str, pg_server: str, tmp_path: Path) -> Iterator[str]:
    """A database no Cairn process has opened yet: an empty SQLite path, or an empty PostgreSQL
    database (not cloned from the migrated template)."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path}/fresh/cairn.db"
        return
    name = f"cairn_empty_{uuid.uuid4().hex[:12]}"
    _admin(pg_server, f'CREATE DATABASE "{name}" TEMPLATE template0')
    try:
        yield _with_db(pg_server, name)
    finally:
        _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_a_burst_of_starts_as_a_new_clients_first_use_all_succeed(unmigrated_url: str) -> None:
    """Opening is shared by every concurrent first call, and none sees the database unmigrated."""
    client = cairn.Client(unmigrated_url)
    try:
        handles = await asyncio.gather(*(client.start(flows.Sequence3, i, id=f"first-{i}") for i in range(100)))
        assert len({h.id for h in handles}) == 100
        assert len(await client.list_runs(limit=200)) == 100
    finally:
        await client.close()


async def _register_remotely(client: cairn.Client, name: str, wf: Any) -> None:
    """Register `wf`'s schema under `name`, as a worker elsewhere would: no code for it here."""
    info = WorkflowInfo(name, "", json.dumps(wf.__cairn_workflow__.input_schema()), "default")
    await client.store.register_workflows([info])


async def test_start_by_name_binds_positional_arguments_in_signature_order(client: cairn.Client) -> None:
    await _register_remotely(client, "remote.checkout", flows.checkout_order)
    handle = await client.start("remote.checkout", "o-2", "bob@example.com", 99)
    assert json.loads((await handle.describe()).input) == {"order_id": "o-2", "email": "bob@example.com", "cents": 99}
    handle = await client.start("remote.checkout", "o-3", email="eve@example.com")
    assert json.loads((await handle.describe()).input) == {"order_id": "o-3", "email": "eve@example.com"}


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("o-2", "bob@example.com", "lots"), {}, cairn.SerializationError, r"argument 'cents' of remote.checkout"),
        ((7, "bob@example.com"), {}, cairn.SerializationError, r"argument 'order_id' of remote.checkout"),
        (("o-2",), {}, TypeError, r"missing required arguments: email"),
        (("o-2", "b", 1, 2), {}, TypeError, r"takes 3 positional arguments \(order_id, email, cents\), got 4"),
        (("o-2", "b"), {"order_id": "x"}, TypeError, r"multiple values for argument 'order_id'"),
        (("o-2", "b"), {"coupon": "x"}, TypeError, r"unexpected argument 'coupon'"),
    ],
)
async def test_start_by_name_checks_arguments_against_the_registered_schema(
    client: cairn.Client, args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    await _register_remotely(client, "remote.checkout", flows.checkout_order)
    with pytest.raises(error, match=message):
        await client.start("remote.checkout", *args, **kwargs)
    assert await client.list_runs() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("o-2", "bob@example.com", "99"),
            "argument 'cents' of {name} does not match its schema: '99' is not of type 'integer'",
        ),
        (
            ("o-2", "bob@example.com", True),
            "argument 'cents' of {name} does not match its schema: True is not of type 'integer'",
        ),
        ((7, "bob@example.com"), "argument 'order_id' of {name} does not match its schema: 7 is not of type 'string'"),
    ],
)
async def test_a_start_by_name_is_checked_alike_with_or_without_the_code(
    client: cairn.Client, args: tuple[Any, ...], message: str
) -> None:
    """By name, arguments are checked against the workflow's schema (JSON's types), whether the
    code is imported in this process or not: `cairn dev` took `"99"` for an int that `cairn
    dashboard` (which imports no code) refused. A Python caller passing the function keeps
    pydantic's lenient validation."""
    await _register_remotely(client, "remote.checkout", flows.checkout_order)
    local = "tests.flows.checkout_order"
    for name in ("remote.checkout", local):
        with pytest.raises(cairn.SerializationError) as refused:
            await client.start(name, *args)
        assert str(refused.value) == message.format(name=name)
    assert await client.list_runs() == []
    if args[2:] == ("99",):
        handle = await client.start(flows.checkout_order, *args)  # the function: lenient, as pydantic is
        assert json.loads((await handle.describe()).input)["cents"] == "99"


REF = "6f1c2a3e-8b9d-4e5f-a1b2-c3d4e5f6a7b8"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("not a date", REF), "argument 'when' of {name} does not match its schema: 'not a date' is not a 'date-time'"),
        (
            ("2026-12-06T10:00:00", "not a uuid"),
            "argument 'ref' of {name} does not match its schema: 'not a uuid' is not a 'uuid'",
        ),
        (
            ("2026-12-06T10:00:00", REF, 1e19),
            "argument 'seats' of {name} does not match its schema: 1e+19 is not of type 'integer'",
        ),
    ],
)
async def test_a_start_by_name_refuses_what_the_worker_would_refuse(
    client: cairn.Client, worker: cairn.Worker, args: tuple[Any, ...], message: str
) -> None:
    """JSON Schema alone took `"not a date"` for a `datetime` and `1e19` for an `int`: `cairn
    dashboard` (no code imported) wrote the run, which failed at once on the worker. The formats
    pydantic writes are now checked by pydantic's own parser, so what it takes is taken too."""
    await _register_remotely(client, "remote.book", flows.book_slot)
    for name in ("remote.book", "tests.flows.book_slot"):
        with pytest.raises(cairn.SerializationError) as refused:
            await client.start(name, *args)
        assert str(refused.value) == message.format(name=name)
    assert await client.list_runs() == []
    # pydantic's leniency holds by name: no time zone, a space for the T, a whole float for an int
    handle = await client.start("remote.book", "2026-12-06 10:00", REF.upper(), 3.0)
    assert json.loads((await handle.describe()).input) == {"when": "2026-12-06 10:00", "ref": REF.upper(), "seats": 3.0}
    assert await client.run("tests.flows.book_slot", "2026-12-06 10:00", REF.upper(), 3.0, timeout=30) == (
        f"{REF} at 2026-12-06T10:00:00 x3"
    )


@cairn.workflow
async def priced(price: decimal.Decimal, seats_by_row: dict[int, str]) -> str:
    return f"{price} for {sorted(seats_by_row)}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("abc", {}), "argument 'price' of {name} does not match its schema: 'abc' is not a 'decimal'"),
        (
            ("9.50", {"x": "a"}),
            "argument 'seats_by_row' of {name} does not match its schema: 'x' is not a 'whole number'",
        ),
    ],
)
async def test_a_start_by_name_refuses_a_decimal_or_an_int_key_the_worker_would_refuse(
    client: cairn.Client, worker: cairn.Worker, args: tuple[Any, ...], message: str
) -> None:
    """pydantic's schema says a Decimal is any string and a dict[int, ...] takes any key: by name,
    where the code is not imported, "abc" and {"x": ...} were taken, and the run failed at once."""
    await _register_remotely(client, "remote.priced", priced)
    for name in ("remote.priced", f"{__name__}.priced"):
        with pytest.raises(cairn.SerializationError) as refused:
            await client.start(name, *args)
        assert str(refused.value).startswith(message.format(name=name))
    assert await client.list_runs() == []
    handle = await client.start("remote.priced", "9.50", {"2": "b", "1": "a"})
    assert json.loads((await handle.describe()).input) == {"price": "9.50", "seats_by_row": {"2": "b", "1": "a"}}
    assert await client.run(f"{__name__}.priced", 9.5, {"3": "c"}, timeout=30) == "9.5 for [3]"


async def test_an_argument_as_deep_as_the_limit_is_taken_by_name_as_by_function(client: cairn.Client) -> None:
    """Nested 128 levels deep (the limit), an argument was taken where the code is imported and
    refused by name where it is not: the object holding the arguments counted as one more level."""
    deep: Any = []
    for _ in range(127):
        deep = [deep]
    await _register_remotely(client, "remote.anything", flows.takes_anything)
    for workflow in (flows.takes_anything, "tests.flows.takes_anything", "remote.anything"):
        handle = await client.start(workflow, deep)
        assert json.loads((await handle.describe()).input) == {"value": deep}
    with pytest.raises(cairn.SerializationError, match="nested more than 128 levels deep"):
        await client.start("remote.anything", [deep])


@pytest.mark.parametrize("given", ["NaN", "inf", "-Infinity"])
async def test_a_float_that_validation_would_make_nan_or_infinite_is_refused_at_the_start(
    client: cairn.Client, given: str
) -> None:
    """JSON-shaped input (as an HTTP or CLI caller sends) is validated leniently: the string "NaN"
    would become a float no step of the run could record. Refused before anything is written."""
    with pytest.raises(cairn.SerializationError, match=r"argument 'reading' of tests\.flows\.record_reading contains"):
        await client.start(flows.record_reading, {"value": given})
    assert await client.list_runs() == []
    assert await client.run(flows.record_reading, {"value": "1.5"}, timeout=10) == 1.5  # a number as text still is one


async def test_an_id_held_by_another_workflow_is_a_conflict_and_starts_nothing(client: cairn.Client) -> None:
    first = await client.start(flows.Sequence3, 1, id="taken")
    assert first.created is True
    again = await client.start(flows.Sequence3, 2, id="taken")
    assert again.created is False and again.input_differs
    with pytest.raises(
        cairn.RunIdConflict, match=r"'taken' is held by a run of workflow 'tests.flows.Sequence3'"
    ) as err:
        await client.start(flows.function_style, 1, id="taken")
    assert err.value.requested == "tests.flows.function_style"
    with pytest.raises(cairn.RunIdConflict):
        await client.run("tests.flows.fan_out", 1, id="taken")
    assert [r.workflow for r in await client.list_runs()] == ["tests.flows.Sequence3"]
    assert await first.result(timeout=10) == 4


async def test_a_child_whose_id_is_held_by_another_workflow_fails_with_the_conflict(client: cairn.Client) -> None:
    await client.start(flows.Sequence3, 1, id="kid")
    result = await client.run(flows.child_with_taken_id, "kid", timeout=10)
    assert result == "conflict: tests.flows.Sequence3 holds kid"


async def test_gathered_result_waits_read_the_database_in_batches(client: cairn.Client) -> None:
    """Waiting for many runs costs a few batched reads, not a read per wait per poll: the runs'
    notifications do the rest."""
    handles = [await client.start(flows.Sequence3, i) for i in range(200)]
    store = client.store
    original = store.runs_by_ids
    calls: list[int] = []

    async def counted(run_ids: Any, finished_only: bool = False) -> Any:
        calls.append(len(run_ids))
        return await original(run_ids, finished_only)

    store.runs_by_ids = counted  # type: ignore[method-assign]
    describe = store.get_run
    singles: list[str] = []

    async def get_run(run_id: str) -> Any:
        singles.append(run_id)
        return await describe(run_id)

    store.get_run = get_run  # type: ignore[method-assign]
    assert await asyncio.gather(*(h.result(timeout=30) for h in handles)) == [i + 3 for i in range(200)]
    assert singles == [] and len(calls) <= 6 and sum(calls) <= 400, calls


async def test_a_second_client_sees_runs_the_workers_client_ends_within_milliseconds(
    client: cairn.Client, db_url: str
) -> None:
    """A wait on another client than the worker's (another process, a blocking client, the same
    file spelled otherwise) hears of the end (SQLite's file watcher, PostgreSQL's NOTIFY), and reads
    the run then: on SQLite it read it at the next 0.1 s safety read, so each result came about
    50 ms (0 to 100) after the run's end, against 2 ms. Measured from the end's commit (the run's
    completed_at), not from the start: the run's own work is no part of the hand-off, and on a busy
    machine (the whole suite, PostgreSQL's own background work) it took most of 40 ms."""
    other = cairn.Client(db_url)
    await other.store.open()
    try:
        assert await other.run(flows.Sequence3, 0, timeout=10) == 3  # the watcher started, and warm
        late = []
        for i in range(10):
            handle = await other.start(flows.Sequence3, i)
            assert await handle.result(timeout=10) == i + 3
            returned = time.time()
            row = await other.store.get_run(handle.id)
            assert row is not None and row.completed_at is not None
            late.append(returned - row.completed_at)
    finally:
        await other.close()
    assert statistics.median(late) < 0.02, late


async def test_reads_that_news_brings_on_are_spaced_by_the_news_gap(client: cairn.Client, db_url: str) -> None:
    """On another client than the worker's, every commit of the worker is news (SQLite's watcher
    looks every 5 ms), and each read is of every run still awaited: two such reads are at least
    NEWS_GAP plus NEWS_GAP_PER_RUN per run read apart, so 200 gathered waits are not read 200
    times a second."""
    other = cairn.Client(db_url)
    await other.store.open()
    loop = asyncio.get_running_loop()
    rounds: list[tuple[float, float, int]] = []
    original = other.store.runs_by_ids

    async def timed(run_ids: Any, finished_only: bool = False) -> Any:
        began = loop.time()
        try:
            return await original(run_ids, finished_only)
        finally:
            if finished_only:
                rounds.append((began, loop.time(), len(run_ids)))

    other.store.runs_by_ids = timed  # type: ignore[method-assign]
    try:
        handles = [await other.start(flows.Sequence3, i) for i in range(200)]
        assert await asyncio.gather(*(h.result(timeout=30) for h in handles)) == [i + 3 for i in range(200)]
    finally:
        await other.close()
    for (_, ended, _), (began, _, ids) in itertools.pairwise(rounds):
        assert began - ended >= waiter.NEWS_GAP + waiter.NEWS_GAP_PER_RUN * ids - 0.001, rounds


async def test_retention_deletes_old_finished_runs_from_a_worker(db_url: str) -> None:
    client = cairn.Client(db_url, retention=0.001)  # anything finished is old at once
    try:
        async with cairn.Worker(client, poll_interval=0.05, lease=0.6):
            assert await client.run(flows.Sequence3, 1, timeout=10) == 4

            async def pruned() -> bool:
                return await client.list_runs() == []

            await eventually(pruned, what="the finished run deleted by the worker's retention")
    finally:
        await client.close()


async def test_a_start_that_finds_its_id_says_whether_the_input_differs(client: cairn.Client) -> None:
    first = await client.start(flows.Sequence3, 1, id="same-input")
    same = await client.start(flows.Sequence3, 1, id="same-input")
    other = await client.start(flows.Sequence3, x=2, id="same-input")
    assert (first.created, first.input_differs) == (True, False)
    assert (same.created, same.input_differs) == (False, False)
    assert (other.created, other.input_differs) == (False, True)
    assert client.get("same-input").created is None  # a handle from get() started nothing
    assert await other.result(timeout=10) == 4  # the run is the first one, with its input


async def test_a_default_written_out_is_the_same_input(client: cairn.Client) -> None:
    """A start that found its id said the input differed when it wrote a default out (`"free"`, the
    signature's own) that the first start had left to the signature."""
    await client.start(Welcome, "zed@x", id="defaults")
    same = await client.start(Welcome, "zed@x", "free", id="defaults")
    by_name = await client.start("tests.client.welcome", "zed@x", plan="free", id="defaults")
    other = await client.start(Welcome, "zed@x", "pro", id="defaults")
    assert (same.input_differs, by_name.input_differs, other.input_differs) == (False, False, True)


async def test_a_signal_to_a_finished_run_is_refused_and_records_nothing(client: cairn.Client) -> None:
    completed = await client.start(flows.Approval, "done")
    await completed.signal("approval", {"ok": True, "by": "ann"})
    await completed.result(timeout=10)
    failed = await client.start(flows.fails, "x")
    with pytest.raises(ValueError):
        await failed.result(timeout=10)
    cancelled = await client.start(flows.Approval, "gone")
    await cancelled.cancel()
    for handle, status in ((completed, "completed"), (failed, "failed"), (cancelled, "cancelled")):
        events = await handle.events()
        message = f"cannot signal run '{handle.id}': it is {status}; a finished run takes no signals; nothing was sent"
        with pytest.raises(cairn.IllegalTransition, match=message):
            await handle.signal("approval", {"ok": True, "by": "late"})
        assert await handle.events() == events
        assert await handle.status() == status
    with pytest.raises(cairn.RunNotFound):  # a run that never existed is still a different answer
        await client.get("never-was").signal("approval", 1)


async def test_a_paused_or_waiting_run_still_takes_signals(client: cairn.Client) -> None:
    handle = await client.start(flows.Approval, "held")
    await eventually(lambda: status_is(handle, RunStatus.WAITING), what="waiting for the signal")
    await handle.pause()
    await handle.signal("approval", {"ok": True, "by": "paused"})  # buffered while paused
    assert await handle.status() == RunStatus.PAUSED
    await handle.resume()
    assert await handle.result(timeout=10) == "held:paused:approved"


async def test_resuming_a_run_that_is_not_paused_changes_nothing(client: cairn.Client) -> None:
    handle = await client.start(flows.Approval, "live")
    await eventually(lambda: status_is(handle, RunStatus.WAITING), what="waiting for the signal")
    events = await handle.events()
    assert await handle.resume() == RunStatus.WAITING  # as it was: safe to repeat or race
    assert await handle.events() == events and await handle.status() == RunStatus.WAITING
    assert await handle.pause() == RunStatus.PAUSED
    assert await handle.pause() == RunStatus.PAUSED  # pausing a paused run leaves it as asked
    assert await handle.resume() == RunStatus.RUNNING


@pytest.mark.parametrize("depth", [129, 10_000])
async def test_input_nested_too_deeply_names_the_argument_and_the_limit(client: cairn.Client, depth: int) -> None:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    message = r"argument 'x' of tests.flows.Sequence3 is nested more than 128 levels deep, over Cairn's nesting limit"
    with pytest.raises(cairn.SerializationError, match=message):
        await client.start(flows.Sequence3, value)
    with pytest.raises(cairn.SerializationError, match=message):
        await client.start("tests.flows.Sequence3", x=value)
    with pytest.raises(cairn.SerializationError, match="payload of signal 'go' is nested more than 128 levels"):
        await client.get("any").signal("go", value)
    assert await client.list_runs() == []


async def test_input_nested_up_to_the_limit_round_trips(client: cairn.Client) -> None:
    value: list[Any] = []
    for _ in range(127):
        value = [value]
    handle = await client.start(echo, value)
    assert await handle.result(timeout=10) == value


async def test_a_name_several_workflows_bear_is_refused_not_the_first_of_them(client: cairn.Client) -> None:
    """`quick` is the human name (and the short name) of several test workflows: starting by it
    must not start whichever registered first, and listing by it must not list another's runs."""
    from tests import deadlock_flows, wedge_flows

    assert deadlock_flows.quick and wedge_flows.quick  # both registered: "quick" is ambiguous
    with pytest.raises(cairn.UnknownWorkflowError, match=r"'quick' names several workflows \(.*wedge_flows.quick\)"):
        await client.start("quick", 1)
    assert await client.list_runs() == []
    from cairn.registry import registry

    assert registry.workflow("quick") is None
    assert registry.workflow("tests.wedge_flows.quick") is wedge_flows.quick.__cairn_workflow__


async def test_a_result_with_no_time_to_wait_answers_for_a_finished_run(client: cairn.Client) -> None:
    """`result(timeout=0)` of a finished run raised TimeoutError saying the run was completed: the
    wait ran out before its first read, as it can when the run ends just as a timeout runs out."""
    handle = await client.start(flows.function_style, 4)
    assert await handle.result(timeout=10) == 9
    assert await handle.result(timeout=0) == 9
    assert await client.get(handle.id).result(timeout=0) == 9  # a handle that never waited before

    def blocking() -> Any:
        with cairn.connect_sync(client.url) as sync:
            return sync.get(handle.id).result(timeout=0)

    assert await asyncio.to_thread(blocking) == 9
    for bad in (-1, float("nan")):
        with pytest.raises(ValueError, match="timeout must be a number of seconds, 0 or more"):
            await handle.result(timeout=bad)


async def test_a_workflow_deriving_its_run_id_started_by_name_without_its_code_must_be_given_the_id(
    client: cairn.Client,
) -> None:
    """Its id() runs only where its code is imported. Started by name elsewhere (`cairn start`, the
    HTTP API of `cairn dashboard`), it got a new id each time: the same input started twice made
    two runs, where the code's own start made one."""
    defn = seedflows.WelcomeFlow.__cairn_workflow__  # type: ignore[attr-defined]
    # The worker of this test registered what it imports, saying whether each derives its ids.
    (registered,) = [w for w in await client.store.list_workflows() if w.name == defn.id]
    assert registered.derives_id
    info = WorkflowInfo("remote.Welcome", "", registered.input_schema, "default", derives_id=True)
    await client.store.register_workflows([info])
    user = {"email": "ada@example.com", "slack_id": "U1"}
    with pytest.raises(ValueError, match=r"remote.Welcome derives a run's id from its input .* give the run id"):
        await client.start("remote.Welcome", user)
    assert await client.list_runs() == []  # nothing was written
    assert (await client.start("remote.Welcome", user, id="welcome-ada")).id == "welcome-ada"
    assert (await client.start(seedflows.WelcomeFlow, user)).id == "ada@example.com"  # with the code: derived


async def test_start_by_name_says_which_parameters_are_by_name_only(client: cairn.Client) -> None:
    """The message listed the keyword-only parameters among the positional ones: `takes 1
    positional arguments (a, b, c)`."""
    await _register_remotely(client, "remote.keyword_only", flows.keyword_only)
    with pytest.raises(TypeError, match=r"takes 1 positional arguments \(a\), got 2: \[1, 'y'\]; b, c only by name"):
        await client.start("remote.keyword_only", 1, "y")
    assert await client.list_runs() == []
    handle = await client.start("remote.keyword_only", 1, b="y")
    assert json.loads((await handle.describe()).input) == {"a": 1, "b": "y"}


def test_sync_code_awaiting_results_with_asyncio_run_keeps_no_loop(db_url: str) -> None:
    """Sync code that reaches the async client through `asyncio.run(handle.result())` on each
    call (a Flask view, a Celery task): each call's loop was kept for ever by the client's result
    waiter of that loop (about 7 KB a call)."""
    import gc
    import weakref

    client = cairn.Client(db_url)

    async def finished_run() -> str:
        async with cairn.Worker(client):
            return (await client.run(flows.function_style, 1, id="done", timeout=30), "done")[1]

    run_id = asyncio.run(finished_run())
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def result() -> object:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return await client.get(run_id).result(timeout=10)

    try:
        assert [asyncio.run(result()) for _ in range(20)] == [3] * 20
        gc.collect()
        assert sum(ref() is not None for ref in loops) <= 1, "closed loops kept by the client"
        # Threads sharing the client (a threaded web server), each its own loop at each call: the
        # waiters of closed loops were let go while other threads added theirs ("dictionary
        # changed size during iteration", KeyError). Thread switches made frequent to meet it.
        failed: list[BaseException] = []

        def calls() -> None:
            for _ in range(300):
                try:
                    assert asyncio.run(client.get(run_id).result(timeout=10)) == 3
                except BaseException as exc:
                    failed.append(exc)

        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            threads = [threading.Thread(target=calls) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(switch)
        assert failed == []
    finally:
        asyncio.run(client.close())
