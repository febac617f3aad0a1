"""Runs started next to a worker in the same process are born leased to it (no claim): the
activation starts at once. Being leased at birth must not cost durability or capacity."""

from __future__ import annotations

import cairn
from cairn.store.protocol import RunClaim
from tests import flows


class _CrashingTaker:
    """Stands in for a worker in the client's process that takes a run at birth and then dies
    before activating it (the process is gone, so nothing of it runs)."""

    id = "crashed-before-activating"
    lease = 0.5

    def __init__(self) -> None:
        self.taken: list[tuple[str, RunClaim | None]] = []

    def reserve_run(self, run_id: str, workflow: str, queue: str) -> bool:
        return True

    def take_run(self, run_id: str, claim: RunClaim | None) -> None:
        self.taken.append((run_id, claim))


async def test_a_run_born_leased_to_a_worker_that_died_is_taken_over(db_url: str) -> None:
    starter, other = cairn.Client(db_url), cairn.Client(db_url)
    taker = _CrashingTaker()
    starter.store.takers.append(taker)
    try:
        handle = await starter.start(flows.Sequence3, 1)
        row = await handle.describe()
        assert (row.lease_owner, row.lease_token) == (taker.id, 1)  # born leased: nobody else may claim it
        assert [(run_id, claim is not None) for run_id, claim in taker.taken] == [(handle.id, True)]
        # Another worker (another process, in effect: its own client) takes over once the lease lapses.
        async with cairn.Worker(other, poll_interval=0.1, lease=5.0):
            assert await other.get(handle.id).result(timeout=15) == 4
    finally:
        await starter.close()
        await other.close()


async def test_starting_an_existing_id_gives_the_reserved_slot_back(client: cairn.Client) -> None:
    async with cairn.Worker(client, concurrency=1, poll_interval=0.1, lease=5.0):
        assert await client.run(flows.Sequence3, 1, id="once", timeout=10) == 4
        for _ in range(3):  # each start reserves the worker's only run slot, then finds the run exists
            assert await client.run(flows.Sequence3, 1, id="once", timeout=10) == 4
        # Had a slot leaked, this worker (concurrency 1) could take no run any more.
        assert await client.run(flows.Sequence3, 2, timeout=10) == 5


async def test_a_stopped_worker_takes_no_runs_at_birth(client: cairn.Client) -> None:
    worker = cairn.Worker(client, poll_interval=0.1, lease=5.0)
    await worker.start()
    await worker.stop()
    handle = await client.start(flows.Sequence3, 1)
    assert (await handle.describe()).lease_owner is None
    async with cairn.Worker(client, poll_interval=0.1, lease=5.0):
        assert await handle.result(timeout=10) == 4


async def test_each_next_action_starts_in_the_commit_that_schedules_it(client: cairn.Client) -> None:
    # One action slot: it must be free again once an action has run, so that the commit carrying
    # the action's result can start the next action right away on this worker (born running).
    async with cairn.Worker(client, concurrency=1, poll_interval=0.1, lease=5.0):
        handle = await client.start(flows.Sequence3, 1)
        assert await handle.result(timeout=10) == 4
    events = await handle.events()
    scheduled = {e.step: e.at for e in events if e.kind == "step.scheduled"}
    started = {e.step: e.at for e in events if e.kind == "step.started"}
    assert sorted(scheduled) == [1, 2, 3]
    assert started == scheduled  # started in the same transaction: one clock reading
