"""Schedules on both backends: each tick starts exactly one run however many workers fire it, the
overlap policies, missed ticks after downtime, and the client's and CLI's controls."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import cairn
from cairn import RunStatus
from cairn.clock import SkippingClock
from cairn.records import RunRow
from cairn.registry import registry
from cairn.store import schedule_tx
from tests import flows
from tests.conftest import eventually
from tests.helpers import cli_in_thread, raw_sql

pytestmark = pytest.mark.timeout(60)


def ticks_of(runs: list[RunRow], schedule_id: str) -> list[float]:
    stamps = [r.id.split("@", 1)[1] for r in runs if r.id.startswith(f"{schedule_id}@")]
    return sorted(datetime.fromisoformat(s).timestamp() for s in stamps if not s.startswith("manual"))


async def test_each_tick_starts_exactly_one_run_with_two_workers_firing(client: cairn.Client, db_url: str) -> None:
    other = cairn.Client(db_url)
    try:
        # Every tick must start a run, however slow the machine: a tick whose previous run is still
        # going starts one anyway (the default, "skip", would leave a gap), and ticks that fell due
        # together all start ("latest" would start one for them).
        schedule = cairn.Schedule(
            "every-quarter", flows.tick, every=0.25, args=("t",), overlap="allow", catchup="all", register=False
        )
        await client.create_schedule(schedule)
        async with cairn.Worker(client, poll_interval=0.05), cairn.Worker(other, poll_interval=0.05):

            async def enough() -> bool:
                return await client.store.count_runs("completed") >= 8

            await eventually(enough, timeout=30, what="eight ticks run")
            await client.pause_schedule("every-quarter")
        runs = await client.list_runs(limit=1000)
        ticks = ticks_of(runs, "every-quarter")
        assert len(ticks) == len(set(ticks)) == len(runs)  # one run per tick, and only scheduled runs
        gaps = {round(b - a, 3) for a, b in itertools.pairwise(ticks)}
        assert gaps == {0.25}, ticks  # no tick missed, none fired twice
        assert all(json.loads(r.input) == {"label": "t"} for r in runs)
    finally:
        await other.close()


async def test_overlap_skip_starts_nothing_while_the_last_run_goes_on(client: cairn.Client) -> None:
    await client.create_schedule(cairn.Schedule("slow", flows.tick_and_wait, every=0.1, args=("x",), register=False))
    async with cairn.Worker(client, poll_interval=0.05):
        first = await eventually(lambda: _one_run(client), what="the first tick's run")
        schedule = await eventually(lambda: _skipped(client, first), what="ticks skipped meanwhile")
        assert schedule
        assert len(await client.list_runs()) == 1  # still the one
        await client.get(first).signal("done", "ok")
        assert await client.get(first).result(timeout=10) == "okx"

        async def second() -> bool:
            return len(await client.list_runs()) >= 2

        await eventually(second, what="the next tick's run once the first ended")
        await client.delete_schedule("slow")


async def _one_run(client: cairn.Client) -> str | None:
    runs = await client.list_runs()
    return runs[0].id if runs else None


async def _skipped(client: cairn.Client, run_id: str) -> bool:
    return sum(e.kind == "schedule.skipped" for e in await client.get(run_id).events()) >= 2


@pytest.mark.parametrize(("catchup", "expected"), [("none", 0), ("latest", 1), ("all", 5)])
async def test_missed_ticks_after_downtime(client: cairn.Client, db_url: str, catchup: str, expected: int) -> None:
    spec = cairn.Schedule(
        "daily",
        flows.tick,
        every=timedelta(hours=1),
        args=("d",),
        catchup=catchup,
        overlap="allow",
        register=False,  # type: ignore[arg-type]
    )
    await client.create_schedule(spec)
    now = await client.store.now()
    last_tick = spec.spec().next_after(now) - 3600
    raw_sql(db_url, "UPDATE cairn_schedules SET next_fire_at = ? WHERE id = 'daily'", last_tick - 4 * 3600)
    await client.store.fire_schedules(["tests.flows.tick"], [])  # as a worker does, after five missed hours
    runs = await client.list_runs()
    assert len(runs) == expected
    (row,) = await client.list_schedules()
    assert row.next_fire_at == last_tick + 3600  # the next tick to come, whatever was caught up


async def test_a_schedule_is_created_from_its_arguments_as_dbos_and_temporal_take_them(client: cairn.Client) -> None:
    declared = [s.id for s in registry.schedules()]
    await client.create_schedule("by-args", flows.tick, cron="0 4 * * *", args=("a",), overlap="allow")
    (row,) = await client.list_schedules()
    assert (row.spec.id, row.spec.overlap, row.source) == ("by-args", "allow", "api")
    assert [s.id for s in registry.schedules()] == declared  # stored, not declared in this process
    for bad, message in (
        (lambda: client.create_schedule("x", flows.tick), "needs exactly one of cron=... or every=..."),
        (lambda: client.create_schedule("x", flows.tick, cron="61 * * * *"), "bad cron expression"),
        (lambda: client.create_schedule("x", cron="0 4 * * *"), "needs the workflow"),
        (lambda: client.create_schedule("x", flows.tick, every=1.0, colour="red"), "colour"),
        (lambda: client.create_schedule(row.spec, flows.tick), "a cairn.Schedule alone"),  # type: ignore[arg-type]
    ):
        with pytest.raises((ValueError, TypeError), match=message):
            await bad()
    assert [r.spec.id for r in await client.list_schedules()] == ["by-args"]  # nothing else written


async def test_client_controls_schedules_and_the_cli_lists_them(client: cairn.Client) -> None:
    await client.create_schedule(
        cairn.Schedule("ctl", flows.tick, cron="0 3 * * *", tz="Europe/Paris", args=("c",), register=False)
    )
    (row,) = await client.list_schedules()
    assert (row.spec.id, row.source, row.paused, row.last_run_id) == ("ctl", "api", False, None)
    assert datetime.fromtimestamp(row.next_fire_at or 0, UTC).astimezone().hour is not None
    await client.pause_schedule("ctl")
    assert (await client.list_schedules())[0].paused
    await client.resume_schedule("ctl")
    handle = await client.trigger_schedule("ctl")
    assert handle.id.startswith("ctl@manual:")
    async with cairn.Worker(client, poll_interval=0.05):
        assert await handle.result(timeout=10) == "c"
    listed = await cli_in_thread(["schedules", "--db", client.url])
    assert listed.exit_code == 0 and "ctl" in listed.stdout and "0 3 * * *" in listed.stdout
    paused = await cli_in_thread(["schedule", "pause", "ctl", "--db", client.url])
    assert paused.exit_code == 0 and (await client.list_schedules())[0].paused
    await client.delete_schedule("ctl")
    assert await client.list_schedules() == []
    for control in (client.pause_schedule, client.resume_schedule, client.delete_schedule, client.trigger_schedule):
        with pytest.raises(cairn.ScheduleNotFound):
            await control("ctl")


@pytest.fixture
def declared() -> Iterator[cairn.Schedule]:
    """A schedule declared in code for the test, gone from the registry after it."""
    made = cairn.Schedule("in-code", flows.tick, every=timedelta(hours=1), args=("k",))
    yield made
    registry._schedules.pop("in-code", None)


async def test_a_schedule_declared_in_code_is_upserted_and_reported_once_removed(
    client: cairn.Client, declared: cairn.Schedule
) -> None:
    async with cairn.Worker(client, poll_interval=0.05):
        (row,) = await client.list_schedules()
        assert (row.spec.id, row.source) == ("in-code", "code")
        listed = await cli_in_thread(["schedules", "--db", client.url])
        assert "in-code" in listed.stdout and "declared by no live worker" not in listed.stdout
    registry._schedules.pop("in-code", None)  # the code no longer declares it
    listed = await cli_in_thread(["schedules", "--db", client.url])
    assert "declared by no live worker" in listed.stdout
    assert (await client.list_schedules())[0].last_run_id is None and RunStatus.PENDING  # it fired nothing


async def test_resuming_a_schedule_that_is_not_paused_keeps_the_ticks_it_has_to_catch_up(client: cairn.Client) -> None:
    """The resume moved its next tick past now whatever its state: ticks missed while no worker
    was up, which `catchup="all"` runs, were lost, and the CLI said "resumed"."""
    clock = SkippingClock()
    client.store.clock = clock
    await client.create_schedule(
        cairn.Schedule("behind", flows.tick, every=60, catchup="all", overlap="allow", args=("b",), register=False)
    )
    clock.advance(300)  # five ticks fall due with no worker up
    (before,) = await client.list_schedules()
    await client.resume_schedule("behind")
    said = await cli_in_thread(["schedule", "resume", "behind", "--db", client.url])
    assert said.exit_code == 0 and said.stdout.strip() == "schedule behind: not paused; nothing changed"
    (after,) = await client.list_schedules()
    assert after.next_fire_at == before.next_fire_at and not after.paused
    await client.pause_schedule("behind")
    again = await cli_in_thread(["schedule", "pause", "behind", "--db", client.url])
    assert again.stdout.strip() == "schedule behind: already paused; nothing changed"
    await client.resume_schedule("behind")  # a real resume: from the next tick after now
    (resumed,) = await client.list_schedules()
    assert (resumed.next_fire_at or 0) > clock.now() > (before.next_fire_at or 0)


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)  # SQLite runs one write at a time
async def test_a_firing_that_began_before_another_workers_reads_the_clock_once_it_holds_the_schedule(
    client: cairn.Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's firing began, then another worker held the next tick (its schedule's run was
    going) and the run ended. The first firing went on with the clock it had read as it began:
    it started the held tick before the tick fell due, and before the end of the run it followed
    (the schedule fuzz saw both, under load, about once in 14 runs)."""
    clock = SkippingClock()
    other = cairn.Client(db_url)
    began, go = threading.Event(), threading.Event()
    fire = schedule_tx.fire

    def fire_after_the_other(tx: Any, *args: Any, **kwargs: Any) -> Any:
        if not began.is_set():  # the first firing waits here, its transaction begun
            began.set()
            assert go.wait(10)
        return fire(tx, *args, **kwargs)

    try:
        client.store.clock = other.store.clock = clock
        await client.create_schedule(
            cairn.Schedule(
                "held",
                flows.tick_and_wait,
                every=60,
                overlap="buffer_one",
                catchup="latest",
                args=("h",),
                register=False,
            )
        )
        (row,) = await client.list_schedules()
        names, first = [row.spec.workflow], row.next_fire_at or 0
        clock.advance_to(first + 1)
        await other.store.fire_schedules(names, [])
        (going,) = await client.list_runs()
        clock.advance_to(first + 50)  # ten seconds before the next tick
        monkeypatch.setattr(schedule_tx, "fire", fire_after_the_other)
        firing = asyncio.ensure_future(client.store.fire_schedules(names, []))
        await asyncio.to_thread(began.wait, 10)
        clock.advance_to(first + 65)
        await other.store.fire_schedules(names, [])  # the next tick is held: the run goes on
        (held,) = await client.list_schedules()
        assert held.buffered_at == first + 60
        assert await client.get(going.id).cancel() == RunStatus.CANCELLED
        ended = {r.id: r for r in await client.list_runs()}[going.id].updated_at
        go.set()
        await firing
        runs = {r.id: r for r in await client.list_runs()}
        started = runs[held.spec.run_id(first + 60)]
        assert started.created_at >= first + 60, f"started {first + 60 - started.created_at:.1f}s before its tick"
        assert started.created_at >= ended, "started before the run it followed had ended"
    finally:
        go.set()
        await other.close()
