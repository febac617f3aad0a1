"""Two versions of one checkout, for replay: the recorded one and one that inserts a new action
call before an old one. Their steps name the same actions, as after a deploy."""

from __future__ import annotations

from datetime import timedelta

import cairn
from cairn import Workflow, action, workflow


@action(id="replayflows.reserve")
async def reserve(order: str) -> str:
    return f"r-{order}"


@action(id="replayflows.charge")
async def charge(order: str) -> str:
    return f"c-{order}"


@action(id="replayflows.check_fraud")
async def check_fraud(order: str) -> bool:
    return True


@workflow(id="replayflows.Checkout")
class Checkout(Workflow):
    async def run(self, order: str) -> str:
        r = await reserve(order)
        await cairn.sleep(timedelta(hours=1))
        c = await charge(order)
        return f"{r}|{c}"


@workflow(id="replayflows.CheckoutSame")
class CheckoutSame(Workflow):
    async def run(self, order: str) -> str:
        r = await reserve(order)
        await cairn.sleep(timedelta(hours=1))
        c = await charge(order)
        return f"{r}|{c}"


@workflow(id="replayflows.CheckoutChanged")
class CheckoutChanged(Workflow):
    async def run(self, order: str) -> str:
        r = await reserve(order)
        await cairn.sleep(timedelta(hours=1))
        await check_fraud(order)  # new: before the old charge
        c = await charge(order)
        return f"{r}|{c}"


@workflow(id="replayflows.CheckoutPatched")
class CheckoutPatched(Workflow):
    async def run(self, order: str) -> str:
        r = await reserve(order)
        await cairn.sleep(timedelta(hours=1))
        if cairn.patched("fraud-check"):
            await check_fraud(order)
        c = await charge(order)
        return f"{r}|{c}"
