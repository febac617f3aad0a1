"""Run control: pause, resume, cancel, retry and fork, each one transaction under the run's row lock.

Every operation bumps the run's lease token, so an activation in flight on some worker fails its
fenced commit and is discarded: control always wins the race against a worker. Retry and fork are
both *rewinds*: steps created after activation K are dropped, results delivered after K are
delivered again, and cancellations made after K are undone; the next activation replays 1..K and
carries on from there.
"""

from __future__ import annotations

import json
import uuid

from cairn.errors import (
    IllegalTransition,
    JournalCorrupted,
    RunIdTaken,
    RunNotFound,
    WorkflowCancelled,
    WorkflowTimeout,
)
from cairn.records import NewRun, NewStep, RunRow
from cairn.serialization import dumps, error_to_json
from cairn.store.base import CANCELLED, WORK, Tx, run_row
from cairn.store.journal_tx import TERMINAL, event, insert_params, resolve_parent, start_child
from cairn.transitions import decide
from cairn.types import RunStatus, StepKind


def _lock(tx: Tx, run_id: str) -> RunRow:
    """Lock a run's row, its parent's first: the one lock order (ancestors before descendants) that
    cancels, retries and child completions all follow, so they cannot deadlock each other.

    A group commit does not follow it: it locks every run it writes in id order, a child before
    its parent when the child's id sorts first (`journal_tx.lock_in_order`). So a control operation
    (`tx.wait_once`) waits only for its first lock, holding none, and takes every further one
    NOWAIT: held by a commit, it is refused at once and the operation runs again
    (`SqlStore._control`) once that commit is through, instead of waiting holding a parent the
    commit needs, which PostgreSQL only ends as a deadlock after its `deadlock_timeout` (1 s), the
    commit's batch stalled as long. A commit that cancels a child runs this too, its runs locked
    first: what it did not lock then (the child's own children) it takes NOWAIT as well."""
    row = tx.one("get_run", {"id": run_id})
    if row is None:
        raise RunNotFound(f"no run with id {run_id!r}")
    parent_id = run_row(row).parent_id
    if parent_id is not None:
        tx.one("lock_run_nowait" if tx.wait_once and tx.locked else "lock_run", {"id": parent_id})
        tx.locked = True
    locked = tx.one("lock_run_row_nowait" if tx.wait_once and tx.locked else "lock_run_row", {"id": run_id})
    tx.locked = True
    if locked is None:  # a prune began deleting it: part of its history may be gone already
        raise RunNotFound(f"no run with id {run_id!r} (it is being pruned)")
    return run_row(locked)


def _set(
    tx: Tx,
    run_id: str,
    status: RunStatus,
    now: float,
    *,
    reason: str | None = None,
    error: str | None = None,
    ready: bool = False,
) -> None:
    tx.write(
        "set_control",
        {
            "id": run_id,
            "status": status,
            "pause_reason": reason,
            "error": error,
            "now": now,
            "completed_at": now if status in TERMINAL else None,
            "ready_at": now if ready else None,
        },
    )
    tx.notify(f"run:{run_id}")
    tx.notify(WORK)


def pause_corrupt(tx: Tx, run_id: str, step: int | None, stored: str, why: str, now: float) -> None:
    """Pause a run whose journal holds a row that does not decode, saying which and why, as the
    engine pauses one whose recorded value does not (JournalCorrupted): fix the row, then retry.
    Called on a claim, which holds the run's row already."""
    error = dumps(error_to_json(JournalCorrupted(run_id, step, stored, why)))
    _set(tx, run_id, RunStatus.PAUSED, now, reason="corrupt_journal", error=error)
    event(tx, run_id, "paused", now, step, reason="corrupt_journal", error=why)


def pause(tx: Tx, run_id: str) -> RunStatus:
    run = _lock(tx, run_id)
    if not decide("pause", run_id, run.status):
        return run.status
    now = tx.now()
    _set(tx, run.id, RunStatus.PAUSED, now, reason="user")
    event(tx, run_id, "paused", now, reason="user")
    return RunStatus.PAUSED


def resume(tx: Tx, run_id: str) -> RunStatus:
    run = _lock(tx, run_id)
    if not decide("resume", run_id, run.status):
        return run.status
    if run.pause_reason in ("error", "nondeterminism", "deadlock"):
        return retry(tx, run_id)  # resuming a run paused on an error means trying that step again
    now = tx.now()
    # A run paused before its first activation never started: it goes back to pending, to be taken
    # as a new run (in its turn, in a queue with limits), not shown running when nothing runs.
    status = RunStatus.PENDING if run.activations == 0 else RunStatus.RUNNING
    _set(tx, run.id, status, now, ready=True)
    event(tx, run_id, "resumed", now)
    return status


def cancel(tx: Tx, run_id: str, why: str | None = None) -> RunStatus:
    """Cancel the run (`why`, when given, says who stopped it and is part of its error)."""
    run = _lock(tx, run_id)
    if not decide("cancel", run_id, run.status):
        return run.status
    message = f"run {run_id} was cancelled" + (f": {why}" if why else "")
    return _cancel(tx, run, WorkflowCancelled(message), tx.now())


def time_out(tx: Tx, run_id: str, timeout: float) -> RunStatus:
    """Cancel the run with WorkflowTimeout once `timeout` seconds have passed since its window
    opened (`RunRow.deadline`: its start, or its last retry), by the database's
    clock (before that, while it has not started, or once it has ended, nothing changes)."""
    run = _lock(tx, run_id)
    now = tx.now()
    deadline = run.deadline(timeout)
    if run.status in TERMINAL or deadline is None or now < deadline or not decide("cancel", run_id, run.status):
        return run.status
    return _cancel(tx, run, WorkflowTimeout(f"run {run_id} did not finish within its timeout of {timeout:g}s"), now)


def _going_on(tx: Tx, run: RunRow) -> RunStatus:
    """The status a retried run goes on in: running, unless it failed (giving its slot up) in a queue
    with limits, where it waits for a slot as pending: the queue's claim takes it in turn (any
    worker claims a running run, beside the limits)."""
    if run.status == RunStatus.FAILED and tx.one("queue_is_limited", {"name": run.queue}) is not None:
        return RunStatus.PENDING
    return RunStatus.RUNNING


def _cancel(tx: Tx, run: RunRow, reason: WorkflowCancelled, now: float) -> RunStatus:
    """Stop the run and its open children; what it was waiting for is cancelled, and a parent
    waiting for it gets `reason`."""
    error = dumps(error_to_json(reason))
    _set(tx, run.id, RunStatus.CANCELLED, now, error=error)
    # Cancelled after the last activation, by no activation of it: a fork from these steps (any
    # rewind to K) opens them again. Stamped K, they stayed cancelled in a fork from the last step,
    # which waited for ever on what it was cancelled in.
    tx.write("cancel_open_steps", {"run_id": run.id, "now": now, "activation": run.activations + 1})
    tx.notify(CANCELLED)  # an attempt of it running on a worker stops now
    detail = {"reason": "timeout", "error": str(reason)} if isinstance(reason, WorkflowTimeout) else {}
    event(tx, run.id, "cancelled", now, **detail)
    for (child_id,) in tx.all("open_children", {"id": run.id}):
        cancel(tx, str(child_id))
    if run.parent_id is not None:  # locked by `_lock`: see resolve_parent
        resolve_parent(tx, run, RunStatus.FAILED, None, error, now)  # the parent sees `reason`
    return RunStatus.CANCELLED


def retry(tx: Tx, run_id: str) -> RunStatus:
    run = _lock(tx, run_id)
    if not decide("retry", run_id, run.status):
        return run.status
    holder = tx.one("dedup_holder", {"id": run_id})
    if holder is not None:  # the database's unique index refused it, a raw error (HTTP 500)
        other, key, queue = holder
        raise IllegalTransition(
            f"cannot retry run {run_id!r}: run {other!r} holds its dedup_key {key!r} in queue {queue!r} and has "
            "not finished; retry this run once that one has finished, or cancel that one first"
        )
    if run.status == RunStatus.PAUSED and run.pause_reason == "user":
        return resume(tx, run_id)
    now = tx.now()
    # A failed run's last activation delivered the failure: rewind to just before it. A run paused
    # on an error never delivered it (it paused first), so nothing is rewound. A run paused on a
    # divergence recorded nothing of the activation that diverged: its results, failures included,
    # are still undelivered and go to the fixed code as they are (no step runs again).
    keep = run.activations - 1 if run.status == RunStatus.FAILED else run.activations
    diverged = run.status == RunStatus.PAUSED and run.pause_reason != "error"
    failed = [] if diverged else tx.all("failed_steps", {"run_id": run_id, "k": keep})
    _rewind(tx, run_id, keep, now)
    for seq, _kind, _options in failed:
        tx.write("reset_step", {"run_id": run_id, "seq": seq, "now": now})
    # Each child wait open again whose child has ended: a child that failed is retried with its
    # parent; one that ended otherwise (retried on its own since, or its end found the wait
    # cancelled by the parent's failure) hands its outcome over now, as no end of it is to come.
    for (child_id,) in tx.all("ended_children_of_open_steps", {"run_id": run_id}):
        ended = _lock(tx, str(child_id))
        if ended.status == RunStatus.FAILED:
            retry(tx, ended.id)
        else:
            resolve_parent(tx, ended, ended.status, ended.result, ended.error, now)
    status = _going_on(tx, run)
    _set(tx, run.id, status, now, ready=True)
    tx.write("open_timeout_window", {"id": run.id, "now": now})  # its timeout counts again from now
    event(tx, run_id, "retried", now, steps=[int(r[0]) for r in failed])
    return status


def fork_id(run_id: str, new_id: str | None) -> str:
    """The id of a fork of `run_id`: `new_id` when given, else one made up from the run's. Chosen
    before the fork is sent, so that a fork cut off at its COMMIT is known by that run being there."""
    return new_id or f"{run_id}:fork:{uuid.uuid4().hex[:8]}"


def fork(tx: Tx, run_id: str, from_step: int, fork_id: str) -> str:
    """A new run `fork_id` that reuses the journal of `run_id` up to step `from_step`, then runs on its own."""
    run = _lock(tx, run_id)
    last = tx.one("max_seq", {"run_id": run_id})
    last_seq = int(last[0]) if last and last[0] is not None else 0
    if from_step < 0 or from_step > last_seq:
        raise ValueError(
            f"from_step must be between 0 and {last_seq} (the last step of run {run_id!r}), got {from_step}"
        )
    row = tx.one("min_created_after", {"run_id": run_id, "n": from_step})
    keep = run.activations if row is None or row[0] is None else max(0, int(row[0]) - 1)
    if from_step == 0:
        keep = 0
    now = tx.now()
    forked = NewRun(fork_id, run.workflow, run.input, run.queue, code_version=run.code_version)
    created = tx.one("insert_run", {**insert_params(forked), "now": now, "lease_owner": None, "lease": None})
    if created is None:
        raise RunIdTaken(f"a run with id {fork_id!r} already exists; choose another id for the fork")
    tx.write("copy_steps", {"new_id": fork_id, "run_id": run_id, "n": from_step, "k": keep})
    tx.write("copy_properties", {"new_id": fork_id, "run_id": run_id, "k": keep})
    _rewind(tx, fork_id, keep, now)
    _start_open_children(tx, run, fork_id, now)
    tx.write("reschedule_running", {"run_id": fork_id, "now": now})
    event(tx, fork_id, "forked", now, source=run_id, from_step=from_step)
    event(tx, run_id, "forked.to", now, fork=fork_id, from_step=from_step)
    tx.notify(WORK)
    return fork_id


def _start_open_children(tx: Tx, source: RunRow, fork_id: str, now: float) -> None:
    """A fork's child waits with no result yet: each waited for a run that hands its outcome to its
    own parent, the source. The fork starts a child of its own for each (its id derived from the
    fork's, as the fork's code derives it), as the step's first commit would have."""
    fork_row = tx.one("get_run", {"id": fork_id})
    assert fork_row is not None
    fork = run_row(fork_row)
    for seq, name, args, queue, options in tx.all("open_child_steps", {"run_id": fork_id}):
        opts = json.loads(options) if options else {}
        if opts.get("run_id") == f"{source.id}:{seq}":
            opts["run_id"] = f"{fork_id}:{seq}"
            tx.write("set_step_options", {"run_id": fork_id, "seq": seq, "options": json.dumps(opts, sort_keys=True)})
        start_child(tx, fork, NewStep(int(seq), StepKind.CHILD, str(name), args, queue=queue, options=opts), now)


def _rewind(tx: Tx, run_id: str, keep: int, now: float) -> None:
    params = {"run_id": run_id, "k": keep, "now": now}
    tx.write("rewind_delete_steps", params)
    tx.write("rewind_undeliver", params)
    tx.write("rewind_uncancel", params)
    tx.write("rewind_properties", params)
    tx.write("unconsume_orphan_signals", params)
    tx.write("set_activations", {"id": run_id, "k": keep})
    _rebuild_memory(tx, run_id, now)


def _rebuild_memory(tx: Tx, run_id: str, now: float) -> None:
    """The memory table is derived from the journal; after a rewind it is derived again."""
    tx.write("delete_memory", {"run_id": run_id})
    for seq, kind, name, args, writes in tx.all("memory_sources", {"run_id": run_id}):
        pairs = [(name, args)] if kind == StepKind.MEMORY else json.loads(writes)
        for key, value in pairs:
            tx.write("upsert_memory", {"run_id": run_id, "key": key, "value": value, "step": seq, "now": now})
