"""Wait for a person: an approval signal, a durable sleep, then a child workflow.

While it waits, the run holds no worker memory: it is a row in the database with status
"waiting". A signal sent from outside (`handle.signal(...)`, the CLI or the HTTP API) wakes it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import cairn
from cairn import Workflow, action, workflow
from examples._show import print_steps


@action
def reserve_stock(order_id: str) -> str:
    """Reserve the order's items in the warehouse."""
    return f"stock reserved for {order_id}"


@action
def ship(order_id: str) -> str:
    """Hand the parcel to the carrier; returns its tracking number."""
    return f"TRK-{order_id.upper()}"


@workflow
async def fulfil(order_id: str) -> str:
    """Child workflow: reserve, then ship."""
    await reserve_stock(order_id)
    tracking = await ship(order_id)
    return f"order {order_id} shipped, tracking {tracking}"


@workflow
class OrderApproval(Workflow):
    """Hold an order until someone approves it, give them a moment to change their mind, then fulfil."""

    async def run(self, order_id: str) -> str:
        self.order_id = order_id
        self.state = "awaiting approval"
        approval: dict[str, Any] = await cairn.wait_for_signal("approval", timeout=60)
        self.approved_by = approval["by"]
        self.state = "approved, cooling off"
        await cairn.sleep(1)
        self.state = "fulfilling"
        result: str = await fulfil(order_id)
        self.state = "done"
        return result


async def wait_for_status(handle: cairn.RunHandle, wanted: str, timeout: float = 15.0) -> None:
    """Poll the run's status until it is `wanted`, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while (status := await handle.status()) != wanted:
        if status.is_terminal or time.monotonic() > deadline:
            raise TimeoutError(f"run {handle.id} is {status!r}, expected {wanted!r} within {timeout}s")
        await asyncio.sleep(0.05)


async def demo(client: cairn.Client) -> None:
    handle = await client.start(OrderApproval, "order-7")
    print(f"started run {handle.id}: status {await handle.status()}")
    await wait_for_status(handle, "waiting")
    print(f"run is {await handle.status()} for a signal; properties: {await handle.properties()}")

    await handle.signal("approval", {"by": "alice"})
    print('sent signal "approval" {"by": "alice"}')
    started = time.monotonic()
    result = await handle.result(timeout=30)
    print(f"result after {time.monotonic() - started:.1f}s (incl. the 1s durable sleep): {result!r}")
    print(f"properties: {await handle.properties()}")
    print("steps:")
    await print_steps(handle)
    for run in await client.list_runs(workflow=fulfil):
        if run.parent_id == handle.id:
            print(f"child run {run.id} ({run.workflow}, step {run.parent_seq} of the parent), steps:")
            await print_steps(client.get(run.id), indent="    ")
