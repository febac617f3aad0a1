"""Dicts whose keys are not in sorted order, through every way a value enters or leaves a run."""

from __future__ import annotations

import cairn
from cairn import Workflow, action, workflow


@action
def echo(data: dict[str, int]) -> dict[str, int]:
    cairn.memory.add(key="echoed", value={"zeta": 1, "alpha": 2})
    return {"z-" + k: v for k, v in data.items()}


@action
def pair(zulu: int, alpha: int) -> int:
    """Two parameters whose names are not in sorted order: the arguments object of the step."""
    return zulu - alpha


@workflow
class KeepsOrder(Workflow):
    async def run(self, data: dict[str, int]) -> dict[str, object]:
        self.seen = {"zeta": 0, "alpha": 0}
        echoed = await echo(data)
        signalled = await cairn.wait_for_signal("more")
        return {"input": list(data), "echoed": list(echoed), "signalled": list(signalled), "last": 1}


@workflow
async def pairs_then_waits(zulu: int, alpha: int) -> int:
    difference = await pair(zulu, alpha)
    await cairn.wait_for_signal("go")
    return difference
