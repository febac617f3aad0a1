"""The invariants every chaos scenario ends with, written once: every started run terminal with the
right result (none lost), nothing stuck past the scenario's deadline, each step recorded once in the
journal (and by the attempt whose execution the effects file shows), and duplicate executions
bounded by faults x concurrency."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cairn
from cairn import RunStatus, StepKind, StepStatus
from tests.chaos.harness import Effect, Figures, read_effects


async def settle(client: cairn.Client, run_ids: list[str], deadline: float) -> dict[str, RunStatus]:
    """Wait (until `deadline`, monotonic) for every run to be terminal; the statuses at the end."""
    pause = 0.05
    while True:
        statuses = {rid: await client.get(rid).status() for rid in run_ids}
        if all(s.is_terminal for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(pause)  # polling a condition, with backoff
        pause = min(pause * 2, 1.0)


async def check(
    client: cairn.Client, expected: Mapping[str, Any], effects_file: Path, figures: Figures, bound: int, deadline: float
) -> list[str]:
    """Check every invariant for the runs `expected` (run id -> result) against the executions in
    `effects_file`, and fill in `figures`
    (runs, duplicates, lost, stuck). Returns the problems found, empty when all hold."""
    problems: list[str] = []
    statuses = await settle(client, list(expected), deadline)
    effects = read_effects(effects_file)  # after the runs settled: every execution they needed is in
    figures.runs = len(expected)
    stuck = [rid for rid, s in statuses.items() if not s.is_terminal]
    figures.stuck = len(stuck)
    if stuck:
        problems.append(f"{len(stuck)} runs not terminal at the deadline: {await _describe(client, stuck[:5])}")

    ends: dict[tuple[str, int], list[Effect]] = collections.defaultdict(list)
    for e in effects:
        if e.kind == "E":
            ends[(e.run_id, e.step)].append(e)

    lost = 0
    for rid, want in expected.items():
        handle = client.get(rid)
        if statuses[rid] != RunStatus.COMPLETED:
            if statuses[rid].is_terminal:
                lost += 1
                problems.append(f"run {rid} ended {statuses[rid]}: {(await handle.describe()).error}")
            continue
        got = await handle.result(timeout=5)
        if got != want:
            lost += 1
            problems.append(f"run {rid} returned {got!r}, expected {want!r}")
        problems += await _journal(handle, ends)
    figures.lost = lost + len(stuck)

    mine = [ran for (rid, _), ran in ends.items() if rid in expected]
    figures.duplicates = sum(len(ran) - 1 for ran in mine if len(ran) > 1)
    if figures.duplicates:  # how the extra executions came about: a new attempt, or one attempt run twice
        figures.notes["dup_same_attempt"] = sum(len(r) - len({e.attempt for e in r}) for r in mine)
    if figures.duplicates > bound:
        problems.append(f"{figures.duplicates} duplicate executions, over the bound of {bound} (faults x concurrency)")
    return problems


async def _journal(handle: cairn.RunHandle, ends: Mapping[tuple[str, int], list[Effect]]) -> list[str]:
    """A completed run's journal: completed once, each step recorded once, by the attempt (and the
    process) whose execution the effects file shows, with no execution of a later attempt."""
    problems: list[str] = []
    rid = handle.id
    events = await handle.events()
    if (n := [e.kind for e in events].count("completed")) != 1:
        problems.append(f"run {rid} completed {n} times")
    completed = collections.Counter(e.step for e in events if e.kind == "step.completed")
    steps = [s for s in await handle.steps() if s.kind == StepKind.ACTION]
    seqs = [s.seq for s in steps]
    if len(seqs) != len(set(seqs)):
        problems.append(f"run {rid}: a step recorded twice in the journal: {seqs}")
    for step in steps:
        if step.status != StepStatus.COMPLETED or completed[step.seq] != 1:
            problems.append(f"run {rid} step {step.seq}: {step.status}, completed {completed[step.seq]} times")
            continue
        ran = ends.get((rid, step.seq), [])
        attempts = {e.attempt for e in ran}
        kept = {e.pid for e in ran if e.attempt == step.attempt}
        if not kept:
            problems.append(f"run {rid} step {step.seq}: the recorded attempt {step.attempt} never ran ({attempts})")
        elif step.result["pid"] not in kept:
            problems.append(
                f"run {rid} step {step.seq}: result written by pid {step.result['pid']}, "
                f"but attempt {step.attempt} ran in {kept} (a late write got in)"
            )
        if max(attempts, default=0) > step.attempt:
            problems.append(f"run {rid} step {step.seq}: executions of attempts {attempts} beyond {step.attempt}")
    return problems


async def _describe(client: cairn.Client, run_ids: list[str]) -> str:
    lines = []
    for rid in run_ids:
        row = await client.get(rid).describe()
        steps = await client.get(rid).steps()
        lines.append(
            f"\n{rid} {row.status} owner={row.lease_owner} error={(row.error or '')[:200]} "
            f"steps={[(s.seq, s.status.value, s.attempt) for s in steps]}"
        )
    return "".join(lines)
