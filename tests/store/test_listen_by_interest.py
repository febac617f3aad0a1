"""PostgreSQL: a process hears only the notifications it has subscribers for. A run's news goes on
a channel of its own, so a worker does not wake for every run that ends anywhere, a process waiting
for results does not wake for every start and commit, and a process that only starts runs hears
nothing, not even the echo of its own starts (each heard notification wakes a thread that takes
the GIL from the event loop: that echo was a third of a start's time). A subscriber relies on
hearing whatever is sent after it subscribed."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

import cairn
from cairn.store.base import WORK
from cairn.store.postgres import PostgresDatabase
from cairn.store.sql import RUN_CHANNEL
from tests import flows
from tests.conftest import eventually
from tests.helpers import holds, terminate_listeners

pytestmark = [pytest.mark.timeout(120), pytest.mark.parametrize("db_url", ["postgres"], indirect=True)]


@pytest.fixture
async def clients(db_url: str) -> AsyncIterator[Callable[[], Any]]:
    made: list[cairn.Client] = []

    async def make() -> tuple[cairn.Client, list[str]]:
        """An opened client, as another process would have, and every payload its listener heard."""
        client = cairn.Client(db_url)
        await client.store.open()
        made.append(client)
        db = client.store.db  # type: ignore[attr-defined]
        assert isinstance(db, PostgresDatabase)
        heard: list[str] = []
        dispatch = db._dispatch

        def spy(notes: Any) -> None:
            if isinstance(notes, list):  # from the listener; a commit here dispatches its own notes as a mapping
                heard.extend(notes)
            dispatch(notes)

        db._dispatch = spy  # type: ignore[method-assign]
        return client, heard

    yield make
    for client in made:
        await client.close()


async def _notify(client: cairn.Client, *keys: str) -> None:
    def tx_fn(tx: Any) -> None:
        for key in keys:
            tx.notify(key)

    await client.store.db.transaction(tx_fn)  # type: ignore[attr-defined]


async def test_each_process_hears_only_what_it_has_subscribers_for(clients: Callable[[], Any]) -> None:
    waiter, waiter_heard = await clients()
    worker, worker_heard = await clients()
    starter, starter_heard = await clients()
    waiter.store.subscribe_key("run:r1", lambda _detail: None)
    worker.store.subscribe_key(WORK, lambda _detail: None)

    await _notify(starter, WORK, "run:r1")
    await _notify(starter, WORK, "run:last")  # heard after the first, by whoever hears it (commit order)
    await eventually(lambda: holds("run:last" in waiter_heard), what="the run's news")
    await eventually(lambda: holds(worker_heard.count(WORK) == 2), what="both wake-ups")

    # The first is what its first subscription may have missed (see below), then what was sent.
    assert waiter_heard == ["run:r1", "run:r1", "run:last"], "a result waiter heard the claim loops' wake-ups"
    assert worker_heard == [WORK, WORK], "a worker heard the runs' news"
    assert starter_heard == [], "a process with no subscribers heard its own commits"


async def test_what_is_sent_after_subscribing_is_heard(clients: Callable[[], Any]) -> None:
    """The first subscriber of a channel returns once LISTEN is in place: a notification sent at
    once after it (here, from another process) is never missed. Fresh processes each time."""
    sender, _ = await clients()
    for i in range(10):
        listener, heard = await clients()
        got: list[object] = []
        listener.store.subscribe_key(f"run:r{i}", got.append)
        await _notify(sender, f"run:r{i}")
        await eventually(lambda got=got: holds(len(got) == 2), timeout=5.0, what=f"news of run r{i}")  # type: ignore[misc]
        # What it may have missed (see the next test), then what was sent.
        assert heard == [f"run:r{i}", f"run:r{i}"]
        await listener.close()


async def test_a_run_that_ended_before_its_process_listened_is_news_at_once(clients: Callable[[], Any]) -> None:
    """A result waiter does not read a run it has just started: it counts on hearing its end. In a
    process not yet listening for runs' news, that end may come before LISTEN is in place; the
    first subscriber hears of its run at once (and reads it), not at the next safety read."""
    sender, _ = await clients()
    listener, _ = await clients()
    await _notify(sender, "run:early")  # ended before anyone here listened
    got: list[object] = []
    listener.store.subscribe_key("run:early", got.append)
    assert got == [None], "the first waiter of a run's news was not told it may have missed it"
    later: list[object] = []
    listener.store.subscribe_key("run:later", later.append)
    assert later == [], "only the first subscriber, whose run's end may predate LISTEN, is told"


async def test_news_is_never_lost_while_the_listener_reconnects(clients: Callable[[], Any], db_url: str) -> None:
    """Randomized: the listener's connection terminated by the server at random moments, while
    subscribers come and notifications follow at once. Each subscriber hears its news, heard or
    dispatched after the reconnection as news without a row (what a reconnect may have missed)."""
    rng = random.Random(17)
    sender, _ = await clients()
    listener, _ = await clients()
    terminated = 0
    for i in range(300):
        got: list[object] = []
        if rng.random() < 0.3:
            terminated += await asyncio.to_thread(terminate_listeners, db_url)
        if rng.random() < 0.5:
            await asyncio.sleep(rng.random() * 0.002)  # a varied interleaving, not a synchronisation
        unsubscribe = listener.store.subscribe_key(f"run:n{i}", got.append)
        await _notify(sender, f"run:n{i}")
        await eventually(lambda got=got: holds(bool(got)), timeout=10.0, what=f"news of run n{i}")  # type: ignore[misc]
        unsubscribe()
    assert terminated >= 30, f"only {terminated} listener connections were terminated"


async def test_a_start_refused_for_its_id_wakes_nobody(client: cairn.Client, db_url: str) -> None:
    """A start is one statement that writes the run and sends its wake-up together. A start whose
    id is taken writes nothing, and must send nothing either: every worker would wake and claim
    for it."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as listener, psycopg.connect(db_url, autocommit=True) as other:
        listener.execute("LISTEN cairn")
        first = await client.start(flows.sleeper, 1.0, id="taken")
        again = await client.start(flows.sleeper, 2.0, id="taken")  # the run that exists, unchanged
        assert again.id == first.id
        other.execute("NOTIFY cairn, 'marker'")  # after both starts: heard after whatever they sent
        heard = []
        for note in listener.notifies(timeout=30):
            if note.payload == "marker":
                break
            heard.append(note.payload.split(" ", 1)[1])
    assert heard == [WORK], "a start refused for its id sent a wake-up"


def _unlistened(db_url: str, name: str) -> bool:
    """Whether a listener of this database last sent UNLISTEN on the channel `name`."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND query = %s", (f"UNLISTEN {name}",)
        ).fetchall()
    return bool(rows)


async def test_a_channel_with_no_subscriber_left_is_let_go(clients: Callable[[], Any], db_url: str) -> None:
    """A process that once waited for a result, or ran a worker, stops hearing that channel once
    nobody here subscribes to it (else every run's end or start in the cluster woke its listener's
    thread for good); a new subscriber listens again, and hears what follows."""
    sender, _ = await clients()
    listener, heard = await clients()
    db = listener.store.db
    db.unlisten_after = 0.0
    stop_waiting = listener.store.subscribe_key("run:r1", lambda _detail: None)
    listener.store.subscribe_key(WORK, lambda _detail: None)
    stop_waiting()  # the last subscriber of runs' news here
    db._nudge()  # the listener looks at once, else within a second
    await eventually(lambda: holds(_unlistened(db_url, RUN_CHANNEL)), what="UNLISTEN of the runs' news")
    heard.clear()
    await _notify(sender, "run:r2", "run:r3")
    await _notify(sender, WORK)  # sent after the runs' news: it would be heard after them
    await eventually(lambda: holds(WORK in heard), what="the wake-up")
    assert heard == [WORK], "the runs' news was still heard with nobody here waiting for it"
    got: list[object] = []
    listener.store.subscribe_key("run:r4", got.append)
    await _notify(sender, "run:r4")
    await eventually(lambda: holds(len(got) == 2), what="news of r4")  # maybe missed (None), then the news


async def test_a_channel_stays_listened_on_between_subscribers_that_follow_each_other(
    clients: Callable[[], Any],
) -> None:
    """A loop of `client.run` lets the runs' channel go between one run and the next: listening
    again each time would cost each run a round trip and a read (the first subscriber of a channel
    is told it may have missed its run's end). The channel is kept a while for the next one."""
    listener, _ = await clients()
    first = listener.store.subscribe_key("run:a", lambda _detail: None)
    first()
    told: list[object] = []
    listener.store.subscribe_key("run:b", told.append)
    assert told == [], "the channel was let go at once and listened on again"


async def test_news_is_never_lost_while_channels_are_let_go_and_listened_again(clients: Callable[[], Any]) -> None:
    """Randomized: subscribers come and go on both channels, the listener letting a channel go
    the moment it has none (and looking at random moments), so a subscriber often arrives while
    its channel is being let go. Each hears the news sent after it subscribed."""
    rng = random.Random(23)
    sender, _ = await clients()
    listener, _ = await clients()
    db = listener.store.db
    db.unlisten_after = 0.0
    for i in range(400):
        key = f"run:n{i}" if rng.random() < 0.7 else WORK
        got: list[object] = []
        if rng.random() < 0.5:
            db._nudge()
        if rng.random() < 0.5:
            await asyncio.sleep(rng.random() * 0.002)  # a varied interleaving, not a synchronisation
        unsubscribe = listener.store.subscribe_key(key, got.append)
        await _notify(sender, key)
        await eventually(lambda got=got: holds(bool(got)), timeout=10.0, what=f"news {i} of {key}")  # type: ignore[misc]
        unsubscribe()
