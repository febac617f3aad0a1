"""Work that no live worker can do is visible at once (the run's diagnosis, an event, the CLI), stays
cancellable, and goes on as soon as a worker that can do it appears."""

from __future__ import annotations

import pytest

import cairn
from cairn import RunStatus
from cairn.clock import SkippingClock
from cairn.registry import Registry
from cairn.store.protocol import WorkerInfo
from tests import flows
from tests.conftest import eventually
from tests.helpers import cli_in_thread

pytestmark = pytest.mark.timeout(60)


def without(*missing: object) -> Registry:
    """A registry of everything in tests.flows but `missing` (a worker deployed without them)."""
    gone = {m.__cairn_workflow__.id if hasattr(m, "__cairn_workflow__") else m.defn.id for m in missing}  # type: ignore[attr-defined]
    registry = Registry()
    for defn in cairn.registry.entries():
        if defn.id not in gone and defn.origin.startswith("tests.flows."):
            registry.register(defn)
    return registry


async def test_a_step_whose_action_no_live_worker_has_is_reported_and_goes_on_later(client: cairn.Client) -> None:
    partial = without(flows.enrich)
    async with cairn.Worker(client, poll_interval=0.05, lease=0.6, registry=partial):
        handle = await client.start(flows.needs_elsewhere, 1)
        reason = await eventually(handle.diagnose, what="the run diagnosed")
        assert "no live worker runs action 'tests.elsewhere.enrich' (step 2)" in reason
        assert "live workers:" in reason and "serves" in reason
        assert await handle.status() == RunStatus.RUNNING

        async def reported() -> bool:
            return any(
                e.kind == "blocked" and "tests.elsewhere.enrich" in e.detail["reason"] for e in await handle.events()
            )

        await eventually(reported, what="a 'blocked' event")  # from the worker's sweep
        shown = await cli_in_thread(["show", handle.id, "--db", client.url])
        assert "blocked" in shown.stdout and "tests.elsewhere.enrich" in shown.stdout
        listed = await cli_in_thread(["runs", "--db", client.url])
        assert "!" in listed.stdout and "tests.elsewhere.enrich" in listed.stdout
        async with cairn.Worker(client, poll_interval=0.05):  # one that has it
            assert await handle.result(timeout=20) == 200
    assert await handle.diagnose() is None


async def test_a_run_of_a_workflow_no_live_worker_serves_is_reported_and_cancellable(client: cairn.Client) -> None:
    handle = await client.start(flows.Sequence3, 1)
    reason = await handle.diagnose()
    assert reason is not None and "no live worker runs workflow 'tests.flows.Sequence3'" in reason
    assert "live workers: none" in reason
    async with cairn.Worker(client, poll_interval=0.05, registry=without(flows.Sequence3)):
        reason = await handle.diagnose()
        assert reason is not None and "tests.flows.Sequence3" in reason and "live workers: none" not in reason
        listed = await cli_in_thread(["workers", "--db", client.url])
        assert "no live worker can do" in listed.stdout and handle.id in listed.stdout
        assert await handle.cancel() == RunStatus.CANCELLED
    assert await handle.diagnose() is None


async def test_a_worker_silent_past_its_lease_serves_nothing(client: cairn.Client) -> None:
    """A worker SIGKILLed stops its heartbeat; past its lease its work is taken over, yet it counted
    as live for a minute whatever its lease: a run only it served showed no reason for 60 s."""
    clock = SkippingClock()
    client.store.clock = clock
    serves = WorkerInfo("gone", "host", 1, "*", clock.now(), clock.now(), 0, workflows=("tests.flows.Sequence3",))
    await client.store.heartbeat(serves, 1.0)
    handle = await client.start(flows.Sequence3, 1)
    assert await handle.diagnose() is None  # its worker beats
    clock.advance(1.5)  # then it stops: past its lease of a second
    reason = await handle.diagnose()
    assert reason is not None and "no live worker runs workflow 'tests.flows.Sequence3'" in reason, reason
    assert "live workers: none" in reason
