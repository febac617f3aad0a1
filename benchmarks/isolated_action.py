"""The trivial isolated action `benchmarks.isolate_overhead` times (in a module of its own: an
isolated action's child imports its module by name, which a script run as __main__ is not)."""

from __future__ import annotations

from cairn import action


@action(isolate=True)
def trivial(x: int) -> int:
    return x + 1
