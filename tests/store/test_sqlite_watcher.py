"""SQLite has no NOTIFY: a process's watcher reads `PRAGMA data_version` to hear of other processes'
commits and wakes its claim loops. It reads it on the process's writer connection, whose version
moves only for other connections' commits, so a look wakes exactly when another process committed,
whatever this process committed meanwhile. (Read on a connection of its own, the version moved for
both, and a look that saw both woke nothing: an idle worker finishing a run as another process
started the next missed it until its safety poll, a minute in `tests/process/test_wakeup.py`.)"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import cairn
from cairn.store.base import WORK
from tests import flows
from tests.conftest import eventually
from tests.helpers import holds, sqlite_db


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[tuple[cairn.Client, cairn.Client]]:
    """This process's client and another's (a store of its own on the same file)."""
    url = f"sqlite:///{tmp_path}/watched.db"
    here, there = cairn.Client(url), cairn.Client(url)
    await here.store.open()
    await there.store.open()
    yield here, there
    await here.close()
    await there.close()


def _looker(client: cairn.Client) -> Any:
    """`look(version)`: one look of the watcher (run here, not on its thread), and whether it woke."""
    db = sqlite_db(client)
    woken: list[object] = []
    dispatch = db._dispatch

    def spy(notes: Any) -> None:
        woken.append(notes)
        dispatch(notes)

    db._dispatch = spy  # type: ignore[method-assign]

    def look(version: int | None) -> tuple[int, bool]:
        before = len(woken)
        now = db._look(version)
        assert now is not None, "the writer's connection was busy with nothing running"
        return now, len(woken) > before

    return look


async def test_a_look_wakes_for_another_process_commit_beside_its_own(two: tuple[cairn.Client, cairn.Client]) -> None:
    here, there = two
    look = _looker(here)
    version, _ = look(None)
    await here.start(flows.sleeper, 1.0)
    version, woke = look(version)
    assert not woke, "this process's own commit woke its claim loops"
    await here.start(flows.sleeper, 1.0)
    await there.start(flows.sleeper, 1.0)
    version, woke = look(version)
    assert woke, "another process's commit went unheard beside this process's own"
    await there.start(flows.sleeper, 1.0)
    await here.start(flows.sleeper, 1.0)
    version, woke = look(version)
    assert woke, "another process's commit went unheard before this process's own"
    version, woke = look(version)
    assert not woke, "a look with nothing committed since the last woke"


async def test_randomized_commits_on_both_sides(two: tuple[cairn.Client, cairn.Client]) -> None:
    """2,000 looks, each after a random sequence of up to 3 commits from either side: a look wakes
    if and only if the other process committed since the last."""
    here, there = two
    look = _looker(here)
    rng = random.Random(17)
    version, _ = look(None)
    wrong = []
    for i in range(2000):
        sides = [rng.choice((here, there)) for _ in range(rng.randint(0, 3))]
        for side in sides:
            await side.start(flows.sleeper, 1.0)
        version, woke = look(version)
        if woke != (there in sides):
            wrong.append((i, ["here" if s is here else "there" for s in sides], woke))
    assert wrong == [], f"looks that woke wrongly (look, commits before it, woke): {wrong[:10]}"


async def test_a_new_watcher_looks_at_the_quiet_pace_until_it_hears_news(tmp_path: Path) -> None:
    """A worker that just started has heard nothing that says more is coming: its watcher looks
    every WATCH_QUIET (50 ms), not every 5 ms as after another process's commit (those 2 s of
    fast looks were most of a new idle worker's CPU in its first seconds)."""
    client = cairn.Client(f"sqlite:///{tmp_path}/quiet.db")
    await client.store.open()
    db = sqlite_db(client)
    looks = 0
    look = db._look

    def counted(version: int | None) -> int | None:
        nonlocal looks
        looks += 1
        return look(version)

    db._look = counted  # type: ignore[method-assign]
    unsubscribe = db.subscribe_key(WORK, lambda *_: None)
    try:
        await asyncio.sleep(0.5)  # a window to count looks in, not a synchronisation
    finally:
        unsubscribe()
        await client.close()
    # 0.5 s at 50 ms is 10 looks; at 5 ms it was about 100.
    assert 2 <= looks <= 40, f"{looks} looks in the watcher's first 0.5 s"


async def test_the_watcher_ends_when_nobody_listens_and_starts_again(two: tuple[cairn.Client, cairn.Client]) -> None:
    """A process that ran a worker, or waited for a result, looked 20 times a second for as long as
    it lived: the watcher now ends once nobody here listens, and the next subscriber starts one
    that hears the other process's commits again."""
    here, there = two
    db = sqlite_db(here)
    db.watch_linger = 0.05
    unsubscribe = db.subscribe_key(WORK, lambda *_: None)
    watcher = db._watcher
    assert watcher is not None and watcher.is_alive()
    unsubscribe()
    await asyncio.to_thread(watcher.join, 5.0)
    assert not watcher.is_alive() and db._watcher is None, "the watcher went on with nobody listening"
    woken = asyncio.Event()
    loop = asyncio.get_running_loop()
    db.subscribe_key(WORK, lambda *_: loop.call_soon_threadsafe(woken.set))
    await asyncio.wait_for(woken.wait(), 5.0)  # the new watcher's first look: what it may have missed
    woken.clear()
    await there.start(flows.sleeper, 1.0)
    await asyncio.wait_for(woken.wait(), 5.0)


async def test_subscribers_hear_commits_while_the_watcher_comes_and_goes(
    two: tuple[cairn.Client, cairn.Client],
) -> None:
    """Randomized: 300 subscribers come and go while the watcher ends after 10 ms with nobody
    listening, so a subscriber often comes as it ends. Each is woken at a moment when the other
    process's commit that follows its subscription can be seen (a claim loop woken then finds it)."""
    import sqlite3

    here, there = two
    db = sqlite_db(here)
    db.watch_linger = 0.01
    rng = random.Random(29)

    def runs_now() -> int:
        with contextlib.closing(sqlite3.connect(db.path)) as conn:
            return int(conn.execute("SELECT count(*) FROM cairn_runs").fetchone()[0])

    for i in range(300):
        seen: list[int] = []  # the runs there were as each wake-up came
        unsubscribe = db.subscribe_key(WORK, lambda *_, seen=seen: seen.append(runs_now()))  # type: ignore[misc]
        await there.start(flows.sleeper, 1.0)  # the (i + 1)th run
        heard = lambda seen=seen, i=i: holds(any(n > i for n in seen))  # noqa: E731
        await eventually(heard, timeout=5.0, what=f"subscriber {i} woken once the commit after it could be seen")
        unsubscribe()
        await asyncio.sleep(rng.random() * 0.03)  # around the watcher's end, not a synchronisation
