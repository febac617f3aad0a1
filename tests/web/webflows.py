"""Workflows the web tests drive: logs, properties (one secret-looking), a signal wait, a gather,
a failure, a child, and large values (a run page shows them cut, each linking to all of it)."""

from __future__ import annotations

import asyncio

import cairn
from cairn import Workflow, action, workflow
from tests.flows import wait_at_gate


@action(name="Say hello", description="Greets someone by name.")
async def say_hello(name: str) -> str:
    cairn.context().logger.info("greeting %s", name)
    return f"hello {name}"


@action
async def explode(message: str) -> int:
    raise RuntimeError(message)


@workflow(description="Greets someone, then waits for the `approve` signal.")
class Greeting(Workflow):
    async def run(self, name: str, times: int = 1) -> str:
        self.stage = "greeting"
        self.api_token = "tok-123"
        greeting = ""
        for _ in range(times):
            greeting = await say_hello(name)
        self.stage = "waiting"
        decision = await cairn.wait_for_signal("approve")
        self.stage = "done"
        return f"{greeting} / {decision}"


@workflow
async def quick(name: str) -> str:
    return await say_hello(name)


@workflow
async def takes_anything(value: object) -> None:
    """Takes any JSON, however deep (the HTTP API's nesting limit)."""


@workflow
async def parallel(n: int) -> list[str]:
    return list(await asyncio.gather(*(say_hello(f"p{i}") for i in range(n))))


@workflow
async def broken(message: str) -> int:
    return await explode(message)


@workflow
async def parent(name: str) -> str:
    return await quick(name)


@action
async def boom(message: str) -> None:
    raise RuntimeError(message)


@workflow(on_failure="pause")
async def pauses_on_error(message: str) -> None:
    """Pauses on its action's error (the audits' run paused on an error)."""
    await boom(message)


@workflow
async def sleeps(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke"


@workflow
async def naps_then_greets(seconds: float, name: str) -> str:
    """A timer, then an action (a fork from step 1 keeps the nap and greets again)."""
    await asyncio.sleep(seconds)
    return await say_hello(name)


@action
async def mark_rows(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Returns the rows it was given, each marked done: a result as large as its input."""
    cairn.memory.add(key="last_rows", value=rows[-50:])
    return [{**row, "done": True} for row in rows]


@workflow
class Bulk(Workflow):
    """Takes a large input, has an action return a large result, and returns it (the run page's
    large values: shown truncated, each with a link to its full value)."""

    async def run(self, rows: list[dict[str, object]]) -> list[dict[str, object]]:
        marked = await mark_rows(rows)
        self.count = len(marked)
        self.first = marked[0] if marked else None
        return marked


@action
async def measure(label: str, text: str) -> int:
    return len(text)


@workflow
async def many_large(steps: int, size: int) -> int:
    """`steps` actions, each given `size` characters: a run page's step values in all stay light."""
    total = 0
    for i in range(steps):
        total += await measure(f"s{i}", "x" * size)
    return total


@workflow
class KeepsSecrets(Workflow):
    """Secrets in every place a run keeps data: its input, a property, memory, a step's result, its
    result (tables and pages show them masked; `--json` and the JSON API as stored)."""

    async def run(self, login: dict[str, str]) -> dict[str, str]:
        self.db_password = "pw-prop"
        cairn.memory.add(key="api_key", value="mem-key")
        cairn.memory.add(key="settings", value={"token": "mem-nested"})
        await issue_token(login["user"])
        return {"user": login["user"], "session_token": "res-tok"}


@action
async def issue_token(user: str) -> dict[str, str]:
    return {"user": user, "access_token": "step-tok"}


@workflow(on_failure="pause")
async def pauses_after_gate(gate: str) -> None:
    """Pauses on an error once a test opens `gate` (a wait can begin before)."""
    await wait_at_gate(gate)
    await boom(gate)


@action
async def count_one(n: int) -> int:
    return n + 1


@workflow
async def counts_up(steps: int) -> int:
    """A long run: `steps` actions in a loop (its steps are read a page at a time)."""
    n = 0
    for _ in range(steps):
        n = await count_one(n)
    return n


@workflow
class Counter(Workflow):
    """Sets `i` at every activation: more snapshots than the run page shows."""

    async def run(self, n: int) -> int:
        for i in range(n):
            self.i = i
            await say_hello(str(i))
        return n


@workflow
async def exact(limit: int = 9007199254740993, note: str = "line1\nline2", ids: list[int] = [2**63 - 1]) -> str:  # noqa: B006
    """Defaults JavaScript's numbers cannot hold, and a line break an <input> drops."""
    return f"{limit} {note!r} {ids}"


@workflow
async def nums(n: int, x: float) -> list[float]:
    """Numbers a number input takes but JSON does not (`007`, `.5`), typed into the start form."""
    return [n, x]
