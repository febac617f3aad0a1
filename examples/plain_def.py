"""A plain `def` workflow: ordinary Python control flow around blocking action calls.

A `def` workflow runs on a worker thread; each action call blocks until its result is recorded and
returns it. Loops, `try/except`, conditionals and comprehensions are just Python, and an action's
exception reaches the workflow as the same type (here `ValueError`).
"""

from __future__ import annotations

import cairn
from cairn import action, workflow
from examples._show import print_steps

PRICES: dict[str, float] = {"apple": 0.5, "bread": 2.25, "cheese": 7.0}


@action
def parse_line(line: str) -> dict[str, int | str]:
    """Parse "3 x apple" into {"qty": 3, "item": "apple"}; ValueError when it cannot."""
    qty, sep, item = line.partition(" x ")
    if not sep or not qty.strip().isdigit():
        raise ValueError(f"cannot parse order line {line!r}")
    return {"qty": int(qty), "item": item.strip()}


@action
def price(item: str, qty: int) -> float:
    """Look up the unit price (a stand-in for a pricing service)."""
    if item not in PRICES:
        raise ValueError(f"unknown item {item!r}")
    return PRICES[item] * qty


@workflow
def tally_order(lines: list[str]) -> dict[str, object]:
    """Price each order line; lines that fail are reported, not fatal."""
    total = 0.0
    accepted: list[str] = []
    rejected: list[str] = []
    for line in lines:
        try:
            parsed = parse_line(line)
            cost = price(str(parsed["item"]), int(parsed["qty"]))
        except ValueError as exc:
            rejected.append(str(exc))
            continue
        total += cost
        accepted.append(line)
    discount = 0.1 if total > 10 else 0.0
    return {"accepted": accepted, "rejected": rejected, "total": round(total * (1 - discount), 2), "discount": discount}


async def demo(client: cairn.Client) -> None:
    lines = ["3 x apple", "two x bread", "1 x cheese", "2 x caviar", "2 x bread"]
    handle = await client.start(tally_order, lines)
    result = await handle.result(timeout=30)
    print(f"run {handle.id} over {lines}")
    print(f"result: {result}")
    print("steps:")
    await print_steps(handle)
    assert len(result["rejected"]) == 2, result
