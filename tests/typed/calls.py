"""Checked by mypy in tests/unit/test_typing.py: action calls are typed as the functions are."""

from __future__ import annotations

import cairn


@cairn.action
async def charge(order_id: str, cents: int) -> str:
    return f"ch_{order_id}_{cents}"


@cairn.action(retry=cairn.RetryPolicy(attempts=2))
def send_receipt(email: str, charge_id: str) -> None:
    return None


@cairn.workflow
async def checkout(order_id: str, email: str) -> str:
    charge_id: str = await charge(order_id, 4200)
    await send_receipt(email, charge_id)
    wrong_type = await charge(order_id, "lots")  # expected: arg-type
    missing = await charge(order_id)  # expected: call-arg
    wrong_result: int = await charge(order_id, 1)  # expected: assignment
    return charge_id + str(wrong_type) + str(missing) + str(wrong_result)
