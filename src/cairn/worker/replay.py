"""Checking recorded journals against the current code, before a deploy (`cairn replay`).

A run is rebuilt as a worker would rebuild it (`WorkflowInstance.restore`), executing no action
and writing nothing, and the rebuild is compared with what was recorded: a step the code now
schedules differently (the engine's own `NonDeterminismError`), a recorded step the code no longer
reaches, a step it schedules that the journal never held, or a finished run the code would not
finish. Journals come from the database (read through the store) or from `cairn show RUN --json`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cairn.engine.instance import WorkflowInstance
from cairn.engine.runtime import describe
from cairn.errors import CairnError, JournalCorrupted, NonDeterminismError
from cairn.records import RunRow, StepRow
from cairn.registry import Registry, WorkflowDef
from cairn.types import RunStatus, StepKind, StepStatus

JOURNAL_FORMAT = 1
"""The version of the `journal` object in `cairn show RUN --json`."""


@dataclass(frozen=True)
class Divergence:
    """One run whose journal the current code does not replay."""

    run_id: str
    workflow: str
    step: int | None
    recorded: str
    new: str
    error: CairnError

    def describe(self) -> str:
        where = f"step {self.step}" if self.step is not None else "its journal"
        return f"run {self.run_id} ({self.workflow}) diverges at {where}: recorded {self.recorded}; new {self.new}"


@dataclass
class ReplayReport:
    """What a replay found: runs replayed, runs that diverge, runs skipped (and why)."""

    replayed: list[str] = field(default_factory=list)
    divergences: list[Divergence] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.divergences


def check_run(defn: WorkflowDef, run: RunRow, steps: Sequence[StepRow]) -> Divergence | None:
    """Replay `run`'s recorded activations on `defn`'s current code; the first difference, if any."""
    inst = WorkflowInstance.restore(defn, run, steps, seed=0)
    try:
        fatal = inst.fatal()
        if isinstance(fatal, NonDeterminismError):
            return Divergence(run.id, run.workflow, fatal.step, fatal.recorded, fatal.attempted, fatal)
        if isinstance(fatal, JournalCorrupted):
            stored = str(fatal.stored)
            return Divergence(run.id, run.workflow, fatal.step, stored, "a value that does not decode", fatal)
        if fatal is not None:
            err = CairnError(f"replaying run {run.id} failed: {type(fatal).__name__}: {fatal}")
            return Divergence(run.id, run.workflow, None, "its journal", f"an error ({fatal})", err)
        return _unrecorded(run, steps, inst) or _unreached(run, steps, inst) or _unfinished(run, inst)
    finally:
        inst.close()


def _unrecorded(run: RunRow, steps: Sequence[StepRow], inst: WorkflowInstance) -> Divergence | None:
    """A step scheduled while replaying recorded activations that none of them recorded."""
    if not inst.unrecorded:
        return None
    new = inst.unrecorded[0]
    recorded = "nothing (the run's recorded activations did not schedule it)"
    attempted = describe(new.kind, new.name, new.args)
    return Divergence(
        run.id, run.workflow, new.seq, recorded, attempted, NonDeterminismError(run.id, new.seq, recorded, attempted)
    )


def _unreached(run: RunRow, steps: Sequence[StepRow], inst: WorkflowInstance) -> Divergence | None:
    """A recorded step the current code no longer schedules."""
    for row in sorted(steps, key=lambda s: s.seq):
        if row.seq >= inst.runtime.next_seq:
            recorded = describe(row.kind, row.name, row.args)
            attempted = inst.reached_nothing()
            err = NonDeterminismError(run.id, row.seq, recorded, attempted)
            err.__cause__ = inst.raised()
            return Divergence(run.id, run.workflow, row.seq, recorded, attempted, err)
    return None


def _unfinished(run: RunRow, inst: WorkflowInstance) -> Divergence | None:
    """A completed run whose replay does not complete. (A failed run may have failed outside its
    code, e.g. a value the database refused, in an activation that was not recorded.)"""
    if run.status != RunStatus.COMPLETED or inst.finished:
        return None
    recorded = f"the run {run.status.value} after activation {run.activations}"
    attempted = "a workflow that goes on waiting"
    err = NonDeterminismError(run.id, inst.runtime.next_seq, recorded, attempted)
    return Divergence(run.id, run.workflow, None, recorded, attempted, err)


def check_runs(
    registry: Registry, journals: Sequence[tuple[RunRow, Sequence[StepRow]]], report: ReplayReport | None = None
) -> ReplayReport:
    """Replay each (run, steps) whose workflow is registered; the others are skipped, with why. Into
    `report` when given (journals read page by page), else a new one."""
    report = ReplayReport() if report is None else report
    for run, steps in journals:
        defn = registry.workflow(run.workflow)
        if defn is None:
            report.skipped[run.id] = f"workflow {run.workflow} is not defined in the code replayed"
            continue
        if run.activations == 0:
            report.skipped[run.id] = "not activated yet: nothing recorded to replay"
            continue
        report.replayed.append(run.id)
        found = check_run(defn, run, steps)
        if found is not None:
            report.divergences.append(found)
    return report


# --- the journal as `cairn show RUN --json` exports it ----------------------------------------


_RUN_FIELDS = [f.name for f in dataclasses.fields(RunRow)]
_STEP_FIELDS = [f.name for f in dataclasses.fields(StepRow) if f.name != "run_id"]


def export_journal(run: RunRow, steps: Sequence[StepRow]) -> dict[str, Any]:
    """The run and its steps as stored (JSON values kept as their exact text, which replay compares)."""
    return {
        "format": JOURNAL_FORMAT,
        "run": {name: _plain(getattr(run, name)) for name in _RUN_FIELDS},
        "steps": [{name: _plain(getattr(s, name)) for name in _STEP_FIELDS} for s in steps],
    }


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, RunStatus | StepKind | StepStatus) else value


def import_journal(data: Mapping[str, Any] | str) -> tuple[RunRow, list[StepRow]]:
    """A journal from `export_journal`, or the whole `cairn show RUN --json` output (its `journal`)."""
    if isinstance(data, str):
        data = json.loads(data)
    assert isinstance(data, Mapping)
    journal = data.get("journal", data)
    if not isinstance(journal, Mapping) or journal.get("format") != JOURNAL_FORMAT:
        raise ValueError(
            'not a Cairn journal: expected the output of `cairn show RUN --json` (with its "journal") '
            f"in format {JOURNAL_FORMAT}"
        )
    raw_run = dict(journal["run"])
    raw_run["status"] = RunStatus(raw_run["status"])
    run_fields: dict[str, Any] = {k: raw_run[k] for k in _RUN_FIELDS if k in raw_run}
    run = RunRow(**run_fields)
    steps = []
    for raw in journal["steps"]:
        fields: dict[str, Any] = {k: raw.get(k) for k in _STEP_FIELDS}
        fields["kind"] = StepKind(fields["kind"])
        fields["status"] = StepStatus(fields["status"])
        steps.append(StepRow(run_id=run.id, **fields))
    return run, steps
