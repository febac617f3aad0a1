"""The chaos test's workflow: five actions in a row, each appending "run step attempt" to a file."""

from __future__ import annotations

import os
import time

import cairn
from cairn import action, workflow


@action
def bump(i: int) -> int:
    ctx = cairn.context()
    time.sleep(float(os.environ.get("CAIRN_BUMP_SECONDS", "0")))  # the action's "work"
    line = f"{ctx.run_id} {ctx.step} {ctx.attempt}\n".encode()
    fd = os.open(os.environ["CAIRN_EFFECTS_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line)  # one small O_APPEND write: whole lines even with several writers
    finally:
        os.close(fd)
    return i + 1


@workflow
async def five_steps(n: int) -> int:
    total = 0
    for i in range(5):
        total += await bump(i)
    return total


@workflow
async def paced(n: int) -> int:
    """Five steps with durable pauses between them, so a run spans a database restart."""
    total = 0
    for i in range(5):
        total += await bump(i)
        await cairn.sleep(0.3)
    return total
