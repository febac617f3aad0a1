"""A start's wake-up names the workflow and queue of the run it made, and a worker that could not
claim that run does not wake for it. Every start woke every worker process, each for a full claim
that took nothing: with a worker per queue (`cairn worker app --queues emails` beside `--queues
default`) or per workflow, on a 2-core machine 2 workers ran 172 workflows/s where 1 ran 265.

The workers here wait 30 s for their safety poll: a wake-up lost for the worker that serves a run
fails the test, which waits 5 s for each result."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

import cairn
from cairn.registry import Registry
from tests.conftest import eventually
from tests.helpers import holds

pytestmark = pytest.mark.timeout(120)

POLL = 30.0
"""Every worker's safety poll: no run of these tests may wait for it."""
SOON = 5.0
"""How long each result is waited for: its worker must have been woken for it."""
STARTS = 8


@cairn.workflow(id="tests.route.a")
async def route_a(x: int) -> int:
    return x + 1


@cairn.workflow(id="tests.route.b")
async def route_b(x: int) -> int:
    return x + 2


@cairn.workflow(id="tests.route.mail", queue="emails")
async def route_mail(x: int) -> int:
    return x + 3


def serving(*workflows: Any) -> Registry:
    registry = Registry()
    for wf in workflows:
        registry.register(wf.__cairn_workflow__)
    return registry


def counted_claims(store: Any) -> Counter[str]:
    """Claims `store` sends, by worker id: its `claim_work` wrapped, the claims themselves untouched."""
    claims: Counter[str] = Counter()
    claim_work = store.claim_work

    async def counting(worker: str, *args: Any, **kwargs: Any) -> Any:
        claims[worker] += 1
        return await claim_work(worker, *args, **kwargs)

    store.claim_work = counting
    return claims


@asynccontextmanager
async def two_workers(
    db_url: str, layout: str, taker: dict[str, Any], other: dict[str, Any]
) -> AsyncIterator[tuple[Callable[..., Awaitable[cairn.RunHandle]], Callable[[], int]]]:
    """A client that starts runs and two workers, `taker` and `other`, laid out as `layout` says:
    "apart", each on a client of its own (PostgreSQL: the starts come from other processes);
    "beside", `other` on the starter's client (it hears them as its own store's commits), `taker`
    on its own; "together", both on the starter's (its starts then go with a key, through the
    queue's insert: a worker beside the starter takes a plain start at birth, with no wake-up).
    On SQLite a store hears every commit of another store through its watcher, which wakes its
    claim loops whatever the commit was: there, only "together" is for this.
    Yields how to start a run and the count of `other`'s claims since both workers' first ones."""
    async with AsyncExitStack() as stack:
        starter = cairn.Client(db_url)
        stack.push_async_callback(starter.close)
        await starter.store.open()
        clients = {"starter": starter}

        def client(role: str) -> cairn.Client:
            if role not in clients:
                clients[role] = cairn.Client(db_url)
                stack.push_async_callback(clients[role].close)
            return clients[role]

        taker_client = starter if layout == "together" else client("taker")
        other_client = client("other") if layout == "apart" else starter
        claims = {id(c): counted_claims(c.store) for c in {taker_client, other_client}}
        w_other = await stack.enter_async_context(cairn.Worker(other_client, poll_interval=POLL, **other))
        w_taker = await stack.enter_async_context(cairn.Worker(taker_client, poll_interval=POLL, **taker))
        others, takers = claims[id(other_client)], claims[id(taker_client)]
        await eventually(lambda: holds(others[w_other.id] >= 1 and takers[w_taker.id] >= 1), what="first claims")
        before = others[w_other.id]
        starts = iter(range(1_000_000))

        async def start(workflow: Any, *args: Any, **options: Any) -> cairn.RunHandle:
            if layout == "together":
                options["key"] = f"k{next(starts)}"
            return await starter.start(workflow, *args, **options)

        yield start, lambda: others[w_other.id] - before


def layouts() -> list[Any]:
    return [
        pytest.param("sqlite", "together", id="sqlite-together"),
        pytest.param("postgres", "together", id="postgres-together"),
        pytest.param("postgres", "beside", id="postgres-beside"),
        pytest.param("postgres", "apart", id="postgres-apart"),
    ]


@pytest.mark.parametrize(("db_url", "layout"), layouts(), indirect=["db_url"])
async def test_a_worker_of_another_workflow_does_not_claim_for_a_start(db_url: str, layout: str) -> None:
    taker, other = {"registry": serving(route_a)}, {"registry": serving(route_b)}
    async with two_workers(db_url, layout, taker, other) as (start, other_claims):
        for i in range(STARTS):
            handle = await start(route_a, i)
            assert await handle.result(timeout=SOON) == i + 1
        assert other_claims() == 0, "the worker of another workflow claimed for starts it could not take"
        # It still wakes for the runs it serves.
        assert await (await start(route_b, 1)).result(timeout=SOON) == 3


@pytest.mark.parametrize(("db_url", "layout"), layouts(), indirect=["db_url"])
async def test_a_worker_of_other_queues_does_not_claim_for_a_start(db_url: str, layout: str) -> None:
    """Both serve the workflow, whose queue is "emails": one takes "emails", the other "default".
    A run started on "default" overrides its workflow's queue: the worker of "emails" ignores it."""
    both = serving(route_mail)
    mail, default = {"registry": both, "queues": ["emails"]}, {"registry": both, "queues": ["default"]}
    async with two_workers(db_url, layout, mail, default) as (start, default_claims):
        for i in range(STARTS):
            assert await (await start(route_mail, i)).result(timeout=SOON) == i + 3
        assert default_claims() == 0, "the worker of another queue claimed for starts it could not take"
    async with two_workers(db_url, layout, default, mail) as (start, mail_claims):
        for i in range(STARTS):
            assert await (await start(route_mail, i, queue="default")).result(timeout=SOON) == i + 3
        assert mail_claims() == 0, "the worker of the workflow's own queue claimed for runs started on another"


ODD_NAMES = [
    "with spaces, \"quotes\", 'single', [brackets] and \\ backslashes",
    "ünïcødé ✉ 郵便 \U0001f4e8",
    "\U0001f4e8" * 255,  # the longest name a queue may have, each character escaped as 12
]


@pytest.mark.parametrize("queue", ODD_NAMES, ids=["punctuation", "unicode", "longest"])
@pytest.mark.parametrize(("db_url", "layout"), layouts(), indirect=["db_url"])
async def test_any_queue_name_is_carried_by_a_start(db_url: str, layout: str, queue: str) -> None:
    """The queue's worker wakes for each start (its name read back whole), the other does not."""
    both = serving(route_a)
    odd, default = {"registry": both, "queues": [queue]}, {"registry": both, "queues": ["default"]}
    async with two_workers(db_url, layout, odd, default) as (start, default_claims):
        for i in range(STARTS):
            assert await (await start(route_a, i, queue=queue)).result(timeout=SOON) == i + 1
        assert default_claims() == 0
