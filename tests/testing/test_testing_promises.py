"""SPEC 5's testing support as users of Temporal's and DBOS's test tools write against it, on both
backends: `env.sleep(d)` behaves as `d` of passing time (each timer and schedule tick within it in
turn), a result that nothing can bring fails instead of hanging, and two environments open at once
keep their `replace_action` fakes to themselves; and `cairn replay` with no `--limit` replays every
recorded run."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import cairn
from cairn.registry import registry
from cairn.testing import EnvironmentStalled, environment


@cairn.action
async def greet(name: str) -> str:
    return f"hello {name}"


@cairn.workflow
async def three_naps() -> list[str]:
    """Sleeps an hour three times: each timer is set when the one before has fired."""
    woke = []
    for _ in range(3):
        await cairn.sleep(timedelta(hours=1))
        woke.append(cairn.now().isoformat())
    return woke


@cairn.workflow
async def hourly_job() -> str:
    return cairn.now().isoformat()


@cairn.workflow
async def approval() -> str:
    decision = await cairn.wait_for_signal("approve")
    return f"approved by {decision['by']}"


@cairn.workflow
async def greeting(name: str) -> str:
    return await greet(name)


async def test_env_sleep_fires_each_timer_within_it_in_turn(db_url: str) -> None:
    async with environment(db_url, time_skipping=False) as env:
        handle = await env.client.start(three_naps)
        await env.sleep(timedelta(hours=3, minutes=1))
        # As after three hours of real time: the second and third timers, set once the first had
        # fired, have fired too (a single jump of the clock fired only the first).
        woke = [datetime.fromisoformat(t) - env.started for t in await handle.result(timeout=10)]
        assert [round(w / timedelta(hours=1)) for w in woke] == [1, 2, 3], woke
        assert env.now() - env.started >= timedelta(hours=3, minutes=1)


@pytest.fixture
def hourly() -> Iterator[cairn.Schedule]:
    made = cairn.Schedule("promises-hourly", hourly_job, every=timedelta(hours=1))  # default policies
    yield made
    registry._schedules.pop(made.id, None)


async def test_env_sleep_fires_every_schedule_tick_it_passes(db_url: str, hourly: cairn.Schedule) -> None:
    async with environment(db_url) as env:
        await env.sleep(timedelta(hours=3, minutes=1))
        runs = await env.client.list_runs(workflow=hourly_job)
        # A worker up for those three hours starts a run each hour (catchup drops only the ticks
        # missed while no worker was up): one jump made the three ticks look missed but the last.
        # Ticks fall on the hour, so three hours and a minute pass four of them when the test
        # starts in an hour's last minute.
        hours = [env.started + timedelta(minutes=m) for m in (0, 181)]
        expected = int(hours[1].timestamp() // 3600 - hours[0].timestamp() // 3600)
        assert expected in (3, 4)
        assert len(runs) == expected, [r.id for r in runs]
        ran_at = sorted([datetime.fromisoformat(await env.client.get(r.id).result(timeout=10)) for r in runs])
        assert [round((b - a) / timedelta(hours=1)) for a, b in itertools.pairwise(ran_at)] == [1] * (expected - 1)


async def test_a_result_nothing_can_bring_fails_instead_of_hanging(db_url: str) -> None:
    async with environment(db_url, stall_timeout=0.5) as env:
        async with asyncio.timeout(30):  # the test fails, rather than hangs, without the promise
            with pytest.raises(EnvironmentStalled, match="signal 'approve'") as caught:
                await env.client.run(approval)
            assert isinstance(caught.value, TimeoutError)
            handle = await env.client.start(approval)
            with pytest.raises(EnvironmentStalled, match=handle.id):
                await handle.result()


async def test_a_signal_sent_while_the_result_is_awaited_still_arrives(db_url: str) -> None:
    async with environment(db_url, stall_timeout=0.5) as env:
        handle = await env.client.start(approval)
        waiting = asyncio.ensure_future(handle.result())
        await env.sleep(timedelta(hours=2))  # time moving is not a stall, whatever real time it takes
        await handle.signal("approve", {"by": "ada"})
        assert await asyncio.wait_for(waiting, 30) == "approved by ada"


async def test_two_environments_at_once_keep_their_fakes_apart(db_url: str) -> None:
    async def one(name: str) -> str:
        return "one"

    async def two(name: str) -> str:
        return "two"

    async with environment(db_url) as first, environment() as second:
        first.replace_action(greet, one)
        second.replace_action(greet, two)
        assert await first.client.run(greeting, "a", timeout=30) == "one"
        assert await second.client.run(greeting, "b", timeout=30) == "two"
    async with environment() as third:
        assert await third.client.run(greeting, "c", timeout=30) == "hello c"


OLD_AND_NEW = """
import cairn


@cairn.action
async def step(n: int) -> int:
    return n


@cairn.workflow
async def first(n: int) -> int:
    return await step(n + CHANGE)


@cairn.workflow
async def later(n: int) -> int:
    return await step(n)
"""

RECORD_MANY = """
import asyncio, sys
from cairn.testing import environment
import app

async def main() -> None:
    async with environment(sys.argv[1]) as env:
        await env.client.run(app.first, 0, id="the-first")
        for batch in range(0, 1000, 100):
            await asyncio.gather(*(env.client.run(app.later, n) for n in range(batch, batch + 100)))

asyncio.run(main())
"""


@pytest.mark.process
def test_cairn_replay_without_limit_replays_every_run(db_url: str, tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for root, change in ((old, "0"), (new, "1")):
        root.mkdir()
        (root / "app.py").write_text(OLD_AND_NEW.replace("CHANGE", change))
    (old / "record.py").write_text(RECORD_MANY)
    recorded = _python(old, "record.py", db_url)
    assert recorded.returncode == 0, recorded.stderr

    # The oldest of 1001 runs diverges: a deploy gate that read only the 1000 most recent let it through.
    every = _python(new, "-m", "cairn", "replay", "app", "--db", db_url)
    assert every.returncode == 1, every.stdout + every.stderr
    assert "run the-first (app.first) diverges at step 1" in every.stdout
    assert "1001 runs replayed, 1 diverge" in every.stderr

    newest = _python(new, "-m", "cairn", "replay", "app", "--db", db_url, "--limit", "1000")
    assert newest.returncode == 0, newest.stdout + newest.stderr
    assert "1000 runs replayed, 0 diverge" in newest.stderr
    assert "only the 1000 most recent runs were read" in newest.stderr


def _python(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
