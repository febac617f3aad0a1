"""Queues are checked where they are declared: a bad limit is a clear error at import, and nothing
is registered."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

import cairn
from cairn import queues
from cairn.queues import QueueSpec, declared
from cairn.registry import registry


@pytest.fixture(autouse=True)
def _registry_as_it_was() -> Iterator[None]:
    """What these tests declare does not outlive them (later tests' workers would upsert it)."""
    entries, declared_queues, registered = registry.entries(), dict(queues._DECLARED), registry.queues()
    schedules = registry.schedules()
    yield
    registry.reset()
    for d in entries:
        registry.register(d)
    for q in registered:
        registry.register_queue(q)
    for s in schedules:
        registry.register_schedule(s)
    queues._DECLARED.clear()
    queues._DECLARED.update(declared_queues)


def test_a_queue_keeps_its_limits_and_is_registered() -> None:
    q = cairn.Queue(
        "unit-billing",
        concurrency=10,
        per_worker=2,
        per_key=1,
        rate_limit=cairn.RateLimit(100, per=timedelta(minutes=1)),
        priority=True,
    )
    assert q.spec == QueueSpec("unit-billing", 10, 2, 1, 100, 60.0, True)
    assert q.spec.limited and "rate=100/60s" in q.spec.describe()
    assert q in registry.queues() and declared("unit-billing") == q.spec
    assert not cairn.Queue("unit-plain", register=False).spec.limited
    assert cairn.RateLimit(5, per=0.5).period == 0.5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"concurrency": 0}, "concurrency must be a positive integer"),
        ({"per_worker": -1}, "per_worker must be a positive integer"),
        ({"per_key": 1.5}, "per_key must be a positive integer"),
        ({"concurrency": True}, "concurrency must be a positive integer"),
        ({"rate_limit": (10, 1)}, "rate_limit must be a cairn.RateLimit"),
        ({"priority": "yes"}, "priority must be True or False"),
    ],
)
def test_bad_limits_are_refused_at_declaration(kwargs: dict[str, Any], message: str) -> None:
    before = len(registry.queues())
    with pytest.raises((ValueError, TypeError), match=message):
        cairn.Queue("unit-bad", **kwargs)
    assert len(registry.queues()) == before and declared("unit-bad") is None


@pytest.mark.parametrize(
    ("n", "per", "message"),
    [(0, 1.0, "RateLimit n"), (3, timedelta(0), "positive duration"), (3, -1, "positive duration")],
)
def test_bad_rate_limits_are_refused(n: Any, per: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cairn.RateLimit(n, per=per)


@pytest.mark.parametrize("name", ["", "a\x00b", 7, "x" * 300])
def test_bad_queue_names_are_refused(name: Any) -> None:
    with pytest.raises(ValueError, match="queue name"):
        cairn.Queue(name, concurrency=1)


def test_the_default_queue_takes_no_limits() -> None:
    with pytest.raises(ValueError, match="takes no limits"):
        cairn.Queue("default", concurrency=1)


def test_queue_objects_and_names_both_work_on_declarations(caplog: pytest.LogCaptureFixture) -> None:
    q = cairn.Queue("unit-actions", concurrency=2)

    @cairn.action(queue=q, id="unit.queued_action")
    async def act() -> int:
        return 1

    @cairn.action(queue="unit-by-name", id="unit.named_action")
    async def named() -> int:
        return 1

    assert act.defn.queue == "unit-actions" and named.defn.queue == "unit-by-name"
    keyed = cairn.Queue("unit-keyed", per_key=1)  # as SPEC's example declares one on an action
    with caplog.at_level(logging.WARNING, logger="cairn.action"):

        @cairn.action(queue=keyed, id="unit.keyed_action")
        async def per_key_action() -> int:
            return 1

    assert per_key_action.defn.queue == "unit-keyed"
    assert "per_key does not limit this action's attempts" in caplog.text
