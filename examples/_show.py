"""Small printing helpers shared by the examples (not part of any pattern)."""

from __future__ import annotations

import json
from typing import Any

import cairn


def short(value: Any, limit: int = 70) -> str:
    """A one-line JSON rendering of a value, cut to `limit` characters."""
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def print_steps(handle: cairn.RunHandle, indent: str = "  ") -> None:
    """One line per journal step: number, kind, name, arguments, outcome."""
    for step in await handle.steps():
        if step.error is not None:
            error = step.error if isinstance(step.error, dict) else {"message": step.error}
            outcome = f"raised {error.get('type', 'error')}: {error.get('message', '')}"
        else:
            outcome = f"-> {short(step.result)}"
        args = "" if step.args is None else short(step.args, 60)
        took = "" if step.duration is None else f" ({step.duration * 1000:.0f} ms)"
        print(f"{indent}{step.seq:>2}. {step.kind.value:<11} {step.name} {args} {outcome}  [{step.status.value}]{took}")
        for line in step.logs:
            print(f"{indent}      log: {line}")
