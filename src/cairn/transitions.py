"""The run-state machine as data: which control operation is legal from which status.

Shared by the client (to explain) and the store (to decide, under the run's row lock), so every
door (Python, CLI, HTTP) enforces the same rules. An operation from a status in `noop` succeeds and
changes nothing: pausing a paused run, resuming a running one or cancelling a cancelled one leaves it
as asked, so each is safe to repeat or race (the CLI says when nothing was changed). A signal to a
finished run is refused (as Temporal and DBOS refuse it): no wait will ever receive it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cairn.errors import IllegalTransition
from cairn.types import RunStatus

ACTIVE = frozenset({RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING})


@dataclass(frozen=True)
class Rule:
    allowed: frozenset[RunStatus]
    noop: frozenset[RunStatus]
    hint: str


RULES: dict[str, Rule] = {
    "pause": Rule(ACTIVE, frozenset({RunStatus.PAUSED}), "only a run that has not finished can be paused"),
    "resume": Rule(frozenset({RunStatus.PAUSED}), ACTIVE, "only a paused run can be resumed"),
    "cancel": Rule(ACTIVE | {RunStatus.PAUSED}, frozenset({RunStatus.CANCELLED}), "a finished run cannot be cancelled"),
    "retry": Rule(
        frozenset({RunStatus.FAILED, RunStatus.PAUSED}),
        ACTIVE,
        "retry continues a failed run or a run paused on an error; use fork to re-run a completed one",
    ),
    "signal": Rule(
        ACTIVE | {RunStatus.PAUSED},
        frozenset(),
        "a finished run takes no signals; nothing was sent (start a new run, or fork this one)",
    ),
}


def decide(op: str, run_id: str, status: RunStatus) -> bool:
    """True when `op` must act, False when it is a no-op; IllegalTransition otherwise."""
    rule = RULES[op]
    if status in rule.allowed:
        return True
    if status in rule.noop:
        return False
    raise IllegalTransition(f"cannot {op} run {run_id!r}: it is {status.value}; {rule.hint}")
