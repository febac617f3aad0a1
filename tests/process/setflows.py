"""A workflow that passes a set of strings to an action and keeps one in memory: their order as
Python iterates them changes with each process's hash seed."""

from __future__ import annotations

from typing import Any

import cairn

WORDS = [f"word-{i}" for i in range(12)]


@cairn.action
async def count_tags(tags: set[str]) -> int:
    return len(tags)


@cairn.workflow
async def tagged(words: list[str]) -> list[Any]:
    tags = set(words)
    cairn.memory.add(key="tags", value=tags)
    first = await count_tags(tags)
    await cairn.wait_for_signal("go")  # the worker is replaced here: the next one replays the above
    second = await count_tags(tags | {"extra"})
    return [first, second, sorted(cairn.memory.get("tags"))]
