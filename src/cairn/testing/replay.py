"""`cairn.testing.replay(...)`: check journals exported by `cairn show RUN --json` against the code.

The Python side of `cairn replay` (the CLI reads journals from the database): a test can keep the
journals of runs that matter and fail when a change to a workflow would no longer replay them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cairn.api.workflow import resolve_workflow
from cairn.errors import CairnError
from cairn.records import RunRow, StepRow
from cairn.registry import registry
from cairn.worker.replay import Divergence, ReplayReport, check_run, check_runs, import_journal

Journal = Mapping[str, Any] | str | Path
"""A journal: the parsed output of `cairn show RUN --json`, that output as text, or a file holding it."""


def replay(*journals: Journal, workflow: Any = None, raise_on_divergence: bool = True) -> ReplayReport:
    """Replay each journal on the current code, executing no action and writing nothing.

    Each run is replayed on the workflow registered under its recorded id, or on `workflow` (a
    class, function or id) when given, e.g. the new version of a workflow defined beside the old.
    The first divergence is raised (a `NonDeterminismError` naming the step, the recorded call and
    the new call) unless `raise_on_divergence` is False; the report says what was replayed.
    """
    runs = [_load(j) for j in journals]
    if workflow is None:
        report = check_runs(registry, runs)
    else:
        defn = resolve_workflow(workflow)
        report = ReplayReport()
        for run, steps in runs:
            report.replayed.append(run.id)
            found = check_run(defn, run, steps)
            if found is not None:
                report.divergences.append(found)
    if raise_on_divergence:
        _raise_first(report.divergences)
        if report.skipped:
            raise CairnError(f"journals not replayed: {report.skipped}")
    return report


def _load(journal: Journal) -> tuple[RunRow, list[StepRow]]:
    if isinstance(journal, Path) or (isinstance(journal, str) and not journal.lstrip().startswith("{")):
        journal = Path(journal).read_text()
    if isinstance(journal, str):
        journal = json.loads(journal)
    assert isinstance(journal, Mapping)
    return import_journal(journal)


def _raise_first(divergences: list[Divergence]) -> None:
    if divergences:
        raise divergences[0].error


__all__ = ["Journal", "ReplayReport", "replay"]
