"""Workflows that send signals to other runs: to one going, one finished, one that never was."""

from __future__ import annotations

from typing import Any

import cairn
from cairn import workflow


@workflow
async def receiver() -> Any:
    return await cairn.wait_for_signal("note")


@workflow
async def sender(target: str) -> str:
    try:
        await cairn.send_signal(target, "note", {"from": "sender"})
    except cairn.RunNotFound as exc:
        return f"not found: {exc}"
    except cairn.IllegalTransition as exc:
        return f"refused: {exc}"
    return "sent"


@workflow
def plain_sender(target: str) -> str:
    try:
        cairn.send_signal(target, "note", {"from": "plain"})
    except cairn.RunNotFound:
        return "not found"
    return "sent"


@workflow
async def careless_sender(target: str) -> str:
    await cairn.send_signal(target, "note", 1)
    return "sent"


@workflow
async def fire_and_forget(target: str) -> str:
    cairn.send_signal(target, "note", {"from": "forgetful"})  # not awaited: sent all the same
    return "done"
