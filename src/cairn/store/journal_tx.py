"""The transactions that advance runs: applying an activation, completing an action attempt.

Each function runs inside one transaction (`Tx`) and appends the run's events as it goes, so the
event list is exactly as durable as the state change it describes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cairn.errors import CairnError, IllegalTransition, LeaseLost, RunIdConflict, RunIdTaken, RunNotFound
from cairn.records import NewRun, NewStep, RunRow, StepRow
from cairn.serialization import error_to_json
from cairn.store.base import CANCELLED, WORK, Tx, run_row, start_note
from cairn.store.protocol import ActionClaim, Commit, Completion
from cairn.transitions import decide
from cairn.types import RunStatus, StepKind, StepStatus

ACTIVE = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)
PARKED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PAUSED)
TERMINAL = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)


class IdTaken(CairnError):
    """A run was not created: its id names one already (nothing of its transaction was written)."""


def held_by_prune(run_id: str) -> RunIdTaken:
    """A start refused because its id names a run a prune began deleting: that run is gone to every
    reader, yet its id is not free until the prune is through (a start, a queued start, a child)."""
    return RunIdTaken(
        f"run id {run_id!r} is held by a run a prune is deleting: start it again once the prune is through "
        "(`cairn prune` finishes one a stopped prune began)"
    )


def id_holder(run_id: str, row: Sequence[Any] | None) -> RunRow | None:
    """The run a start's id was refused for, from its `id_holder` row (none: deleted since, the id
    free again); held_by_prune raised when a prune began deleting it."""
    if row is not None and row[-1]:
        raise held_by_prune(run_id)
    return None if row is None else run_row(row[:-1])


class CompletionLost(LeaseLost):
    """An action result carried by a commit was already superseded; the whole commit rolls back."""


def insert_params(run: NewRun) -> dict[str, Any]:
    """The `insert_run` parameters of a new run, but for when and to whom it is leased."""
    return {
        "id": run.id,
        "workflow": run.workflow,
        "input": run.input,
        "queue": run.queue,
        "parent_id": run.parent_id,
        "parent_seq": run.parent_seq,
        "code_version": run.code_version,
    }


def create_run(tx: Tx, run: NewRun, owner: str | None, lease: float, now: float | None) -> None:
    """Insert a run (a row write: one statement with the rest of its transaction on PostgreSQL),
    refused (IdTaken) when its id names one already. A run no worker holds wakes the claim loops
    that could take it (`start_note`)."""
    params = {**insert_params(run), "now": now, "lease_owner": owner, "lease": lease if owner else None}
    tx.write_row("insert_run", params, expect=IdTaken(f"run {run.id} exists already"))
    if run.trace is not None:  # tracing on (cairn[otel]): one more statement
        tx.write("set_run_trace", {"id": run.id, "trace": run.trace})
    if owner is None:
        tx.notify(start_note(run.workflow, run.queue))


def event(tx: Tx, run_id: str, what: str, now: float, step: int | None = None, /, **detail: Any) -> None:
    """Append to the run's event list, in the transaction that makes the change it describes."""
    tx.add_event({"run_id": run_id, "now": now, "kind": what, "step": step, "detail": detail or None})


def signal(tx: Tx, run_id: str, name: str, payload: str | None, now: float, request: str | None = None) -> None:
    """Buffer a signal for its run and wake it: from outside (`handle.signal`, its send's `request`
    id given) or from a workflow (`cairn.send_signal`). RunNotFound when there is no such run,
    IllegalTransition when it has finished; nothing is sent then. A `request` stored already (a
    send cut off at its COMMIT that had landed, sent again) is left as it is: nothing is written."""
    params = {"run_id": run_id, "name": name, "payload": payload, "now": now, "request": request}
    if tx.execute("insert_signal", params) != 1:
        if request is not None and tx.one("signal_request", {"request": request}) is not None:
            return  # judged before the run's status: it may have taken the signal and finished since
        row = tx.one("shown_run", {"id": run_id})  # one being pruned is gone, not finished
        if row is not None:
            decide("signal", run_id, run_row(row).status)  # it has finished
        raise RunNotFound(f"no run with id {run_id!r}; the signal {name!r} was not sent")
    tx.write("wake_run", {"id": run_id, "now": now})
    event(tx, run_id, "signal.received", now, name=name)
    tx.notify(WORK)


@dataclass(frozen=True, slots=True, order=True)
class RunLocks:
    """The runs' rows one piece of a group commit locks (see `lock_in_order`)."""

    run: str
    """The run the piece holds and fences (an activation commit's); "" for none."""
    others: tuple[str, ...] = ()
    """Other runs whose rows it writes: a parent its end resolves, a signal's target, a child it may
    adopt, the run of an action outcome recorded apart."""
    children_at: tuple[int, ...] = ()
    """Steps of `run` whose awaited child it may cancel (found by the lock, as their ids are not
    in the commit)."""
    patient: bool = False
    """Wait for locks beyond these (see `lock_in_order`), instead of taking them NOWAIT."""

    @property
    def reaches_out(self) -> bool:
        return bool(self.others or self.children_at)


def commit_locks(commit: Commit, patient: bool = False) -> RunLocks:
    """The runs `commit_activation` of `commit` writes besides its own, as it will meet them."""
    run, res = commit.run, commit.result
    others: set[str] = set()
    if res.status in TERMINAL and run.parent_id is not None:
        others.add(run.parent_id)  # resolve_parent
    for step in res.new_steps:
        if step.kind == StepKind.SEND_SIGNAL:
            target = json.loads(step.args or "{}").get("run_id")
            if target is not None:
                others.add(str(target))
        elif step.kind == StepKind.CHILD and step.options:
            others.add(str(step.options["run_id"]))  # start_child: a run that exists is adopted or read
    others.discard(run.id)
    abandons = res.status not in (RunStatus.FAILED, RunStatus.PAUSED)  # see _cancel_step
    children_at = tuple(sorted(res.cancelled)) if abandons else ()
    return RunLocks(run.id, tuple(sorted(others)), children_at, patient)


def attempt_locks(claim: ActionClaim) -> RunLocks:
    """`record_attempt` writes its run, which it does not hold (another worker may)."""
    return RunLocks("", (claim.run_id,))


def lock_in_order(tx: Tx, pieces: Sequence[RunLocks]) -> None:
    """Before the pieces of a transaction (one commit, or a group commit's batch) run: when one of
    them writes another run than its own, lock every run any of them writes, its own included, in
    id order, in one statement (`lock_runs`), as the transaction's first.

    A commit writes runs it does not hold: a child's end resolves its parent's step and wakes it,
    a cancelled wait cancels its child, a signal wakes its target, an action's outcome recorded
    apart its run. Locked as each piece met them, two workers' batches could take the same two
    rows in opposite orders: a parent's commit fencing the parent and then cancelling its child,
    while the other worker's batch had fenced that child and then locked the parent for a sibling's
    end (or two runs signalling each other, each fenced and then waking the other). PostgreSQL
    breaks such a deadlock only after its deadlock_timeout (1 s), the losing batch stalled whole.

    One order for all, then: a transaction that locks runs beyond its own fences takes them all
    here, sorted, waiting for each holding only smaller ones; one that does not (a commit touching
    only its run, the common case) takes its fences in id order too (`fence_run` sorts, and the
    batcher sorts its pieces by run), so it never holds a larger row while it waits for a smaller.
    No wait can then close a cycle. The statement is pipelined: a commit that writes other runs
    already sends statements of its own (a lock, a signal's insert, a cancelled step's read), and
    it adds no round trip; those after it find their rows held (`Tx.held_runs`: no second lock)
    and drop one or two. A commit that writes only its own run sends nothing more: its one
    statement, `cairn_apply`, as before. Cheaper than taking the other runs NOWAIT, as control
    operations do: a child ending while its parent commits is common, and a refused NOWAIT would
    send the whole batch again, each piece apart.

    What no commit can name before it runs (the children of a child it cancels) it takes NOWAIT
    (`control._lock`, `tx.wait_once`): refused, the commit is sent again a little later
    (`SqlStore.commit_activation`), and after a while it waits for them (`patient`)."""
    if not any(p.reaches_out for p in pieces):
        return
    ids = {p.run for p in pieces if p.run}.union(*(p.others for p in pieces))
    children = [f"{p.run} {seq}" for p in pieces for seq in p.children_at]
    tx.lock_runs(sorted(ids), sorted({p.run for p in pieces if p.children_at}), children)
    tx.wait_once = not any(p.patient for p in pieces)
    tx.locked = True


def _lock_run(tx: Tx, run_id: str) -> None:
    """A run's row, unless this transaction locked it first (`lock_in_order`)."""
    if run_id not in tx.held_runs:
        tx.one("lock_run", {"id": run_id})


def commit_activation(tx: Tx, commit: Commit) -> frozenset[int]:
    """Apply `commit`; the child steps among its `births` whose runs it created leased to its
    owner (a child whose id names a run already is not born: that run goes on as it is)."""
    run, res = commit.run, commit.result
    if res.status in TERMINAL and run.parent_id is not None:
        _lock_run(tx, run.parent_id)  # parent before child: see control._lock
    now = commit.now if commit.now is not None else tx.now()
    lost = LeaseLost(f"the lease on run {run.id} was lost (another worker or a control operation took it)")
    tx.write_row("fence_run", {"id": run.id, "token": commit.token, "now": now}, expect=lost)
    activation = run.activations + (1 if res.counts_as_activation else 0)
    _carry_and_deliver(tx, commit, activation, now)
    # Created when the workflow scheduled them (the activation's time), not when the commit got
    # through: a signal wait's start is what `consume_signals` weighs its signal's arrival against.
    ran_at = _ran_at(commit, now)
    children: set[int] = set()
    for step in res.new_steps:
        born = commit.owner if step.seq in commit.births else None
        if _insert_step(tx, run, step, activation, now, born, commit.lease, ran_at):
            children.add(step.seq)
    # Memory: the carried results' writes, then the workflow's own (it ran after them), in one kind
    # of row after the steps (the order `write_row` takes rows in), the last write of a key winning.
    for c in commit.completions:
        _write_memory(tx, run.id, c.claim.seq, c.memory_writes, now)
    for step in res.new_steps:
        if step.kind == StepKind.MEMORY:
            _write_memory(tx, run.id, step.seq, [(step.name, step.args or "null")], now)
    # A failed run may be retried: the children it awaited go on and hand their results to the retry.
    abandons = res.status not in (RunStatus.FAILED, RunStatus.PAUSED)
    delivered = set(res.delivered)
    for seq in res.cancelled:
        _cancel_step(tx, run, seq, activation, now, abandons, seq in delivered)
    if res.signal_waits and res.status in ACTIVE:
        # After this commit's new waits and cancellations, before it says when the run is next
        # ready: a signal that arrived since the claim resolves its wait, which leaves the run due.
        match_signals(tx, [run.id], now)
    if res.properties is not None:
        last_seq = max([s.seq for s in res.new_steps] + list(res.delivered) + [0])
        tx.write_row(
            "insert_properties",
            {"run_id": run.id, "activation": activation, "after_step": last_seq, "properties": res.properties},
        )
    _finish(tx, commit, activation, now, ran_at)
    if res.code_version is not None and run.code_version is None:
        tx.write("set_code_version", {"id": run.id, "version": res.code_version})
    return frozenset(children)


def _cancel_step(tx: Tx, run: RunRow, seq: int, activation: int, now: float, abandons: bool, delivered: bool) -> None:
    """A step the workflow stopped waiting for (a timeout, a cancelled task, or the run ended).
    When it `abandons` the step (it goes on without it, or has ended for good), a child it waited
    for (`cairn.child`, not one started with `start_child`) is cancelled with it, as Temporal
    cancels a child whose awaiting scope is cancelled: else it would run on for no one.
    A signal wait stopped before it was handed the signal the claim matched it with (`delivered`:
    in this same activation, a timer before it) gives the signal back, for the run's next wait."""
    params = {"run_id": run.id, "seq": seq, "now": now, "activation": activation}
    row = tx.one("cancel_step", params)
    if row is None:
        if delivered and tx.one("return_signal_of_step", params) is not None:
            tx.write("unconsume_signal", params)
            event(tx, run.id, "step.cancelled", now, seq, signal="given back")
        return
    event(tx, run.id, "step.cancelled", now, seq)
    kind, options = row
    if kind == StepKind.ACTION:
        # An attempt of it running on a worker stops now, as on a control cancel: it ran on until
        # its worker's next heartbeat, its queue's place counted free meanwhile.
        tx.notify(CANCELLED)
    if not abandons or kind != StepKind.CHILD or (options is not None and json.loads(options).get("join")):
        return
    child = tx.one("awaited_child", {"parent_id": run.id, "seq": seq})
    if child is not None:
        from cairn.store import control  # control builds on this module: imported when needed

        control.cancel(tx, str(child[0]), f"its parent {run.id} stopped waiting for it (step {seq})")


def _carry_and_deliver(tx: Tx, commit: Commit, activation: int, now: float) -> None:
    """Record the results carried with the commit, and deliver what the activation delivered: a
    result recorded and delivered here is written once, completed and delivered."""
    run, res = commit.run, commit.result
    delivered = set(res.delivered)
    carried: set[int] = set()
    for c in commit.completions:
        delivery = (activation, res.delivered_at) if c.claim.seq in delivered else None
        carry_result(tx, c, now, delivery)
        if delivery is not None:
            carried.add(c.claim.seq)
    if run.activations == 0 and run.started_at is None:  # its first activation, paused before it or not
        event(tx, run.id, "started", now)
    for s in res.delivered:
        if s not in carried:
            row = {"run_id": run.id, "seq": s, "activation": activation, "delivered_at": res.delivered_at}
            tx.write_row("deliver_step", row)


def _ran_at(commit: Commit, now: float) -> float:
    """The time the activation ran at (its workflow's clock), not when its commit got through."""
    ran = commit.result.delivered_at
    return ran if 0 < ran < now else now


def _finish(tx: Tx, commit: Commit, activation: int, now: float, ran_at: float) -> None:
    run, res = commit.run, commit.result
    terminal = res.status in TERMINAL
    sticky = commit.owner is not None and res.status == RunStatus.RUNNING
    # A result that arrived meanwhile (recorded apart) leaves the run due: claim loops must hear of it.
    tx.write_row(
        "finish_activation",
        {
            "id": run.id,
            "token": commit.token,
            "status": res.status,
            "result": res.result,
            "error": res.error,
            "activations": activation,
            "properties": res.properties,
            "now": now,
            # The first activation's clock, which its replays run at (`WorkflowInstance._when`):
            # the commit's time was later, and `loop.time()` there was another on every replay.
            "started_at": ran_at,
            "completed_at": now if terminal else None,
            "parked": 1 if res.status in PARKED else 0,
            "wake_at": res.wake_at,
            "pause_reason": res.pause_reason if res.status == RunStatus.PAUSED else None,
            "lease_owner": commit.owner if sticky else None,
            # A duration, not a time: the database's clock as the row is written starts it. A
            # commit retried after an outage carries the `now` it was built with; a lease from
            # that would have run out already as it landed, and another worker would take the run.
            "lease": commit.lease if sticky else None,
        },
        notify=WORK,
    )
    if res.status in PARKED:
        detail = {"reason": res.pause_reason} if res.status == RunStatus.PAUSED else {}
        if res.error is not None:
            detail["error"] = json.loads(res.error).get("message", "")
        event(tx, run.id, res.status.value, now, **detail)
        # A result waiter in this process gets the finished row with the news: no read back.
        tx.notify(f"run:{run.id}", _finished_row(commit, activation, now, ran_at) if terminal else None)
    if commit.closes_steps:
        tx.execute("cancel_open_steps", {"run_id": run.id, "now": now, "activation": activation})
    if terminal and run.parent_id is not None:  # locked in any case: see resolve_parent
        resolve_parent(tx, run, res.status, res.result, res.error, now)
    if res.wake_at is not None or commit.frees_place:
        tx.notify(WORK)  # a timer to watch, or a place to fill: else nothing here is for a claim loop


def landed(commit: Commit, row: RunRow) -> bool:
    """Whether `row`, read after `commit` failed with its outcome unknown, is the run as that
    commit left it: the token it advanced, and the status, activation count, lease holder and
    time it wrote. A control operation or another worker's claim advances the token as well but
    writes something else; anything that touched the run since (a wake-up) makes this say no,
    which is the safe answer (the run is let go, as when nothing is known)."""
    res = commit.result
    if commit.now is None or row.lease_token != commit.token + 1:
        return False
    sticky = commit.owner is not None and res.status == RunStatus.RUNNING
    return (
        row.status == res.status
        and row.activations == commit.run.activations + (1 if res.counts_as_activation else 0)
        and row.lease_owner == (commit.owner if sticky else None)
        and row.updated_at == commit.now
    )


def attempt_recorded(claim: ActionClaim, state: Sequence[Any] | None) -> bool | None:
    """Whether an attempt's outcome is in its step (`step_state`'s row, read after recording it
    failed with the outcome unknown): True when it is, False when another attempt took the step
    (the outcome is superseded), None when the step still runs under this attempt (not landed)."""
    if state is None or int(state[1]) != claim.attempt:
        return False
    return None if state[0] == StepStatus.RUNNING else True


def _finished_row(commit: Commit, activation: int, now: float, ran_at: float) -> RunRow:
    """The run as `finish_activation` leaves it when it ends."""
    run, res = commit.run, commit.result
    return replace(
        run,
        status=res.status,
        result=res.result,
        error=res.error,
        activations=activation,
        pause_reason=None,
        properties=res.properties if res.properties is not None else run.properties,
        updated_at=now,
        started_at=run.started_at if run.started_at is not None else ran_at,
        completed_at=now,
        lease_owner=None,
        lease_token=commit.token + 1,
    )


def resolve_parent(tx: Tx, child: RunRow, status: RunStatus, result: str | None, error: str | None, now: float) -> None:
    """A child run ended: resolve the parent's waiting step and wake the parent.

    The parent's row is locked either way (parent before child), also when the end resolves
    nothing of it: the parent does not wait for this child yet (started, awaited later: no
    `parent_seq`) or no longer. A claim meanwhile skipped it (SKIP LOCKED on PostgreSQL), and
    counts only future due times, so a parent due by then (a sibling's end woke it) is woken for
    again: nothing else would say so, and it sat due, leased to its worker, until that worker's
    safety poll (1-3 parents in 25-40 that start 3 children on each of two queues and await each)."""
    assert child.parent_id is not None
    _lock_run(tx, child.parent_id)
    if child.parent_seq is not None and _waits_for(tx, child):
        step_status = StepStatus.COMPLETED if status == RunStatus.COMPLETED else StepStatus.FAILED
        if _resolve_step(tx, child.parent_id, child.parent_seq, step_status, result, error, now):
            event(tx, child.parent_id, f"step.{step_status.value}", now, child.parent_seq, child=child.id)
            tx.write("wake_run", {"id": child.parent_id, "now": now})
            tx.notify(WORK)
            return
    if tx.one("run_due", {"id": child.parent_id, "now": now}) is not None:
        tx.notify(WORK)


def _waits_for(tx: Tx, child: RunRow) -> bool:
    """Whether the parent's step at the child's `parent_seq` is the wait for this child. A retry
    that rewinds the activation that started a child deletes its step, and the code the run goes on
    with may put an action, or another child, at that number: the child, left running, ended into
    that step (an action's result replaced by the child's, with nothing reported)."""
    row = tx.one("child_step_options", {"run_id": child.parent_id, "seq": child.parent_seq})
    if row is None or row[0] is None:
        return False
    return bool(json.loads(row[0]).get("run_id") == child.id)


def _insert_step(
    tx: Tx, run: RunRow, step: NewStep, activation: int, now: float, born: str | None, lease: float, scheduled_at: float
) -> bool:
    """Insert a step the workflow scheduled at `scheduled_at`; `born` names the worker that runs it
    at once (an action), or the run it starts (a child), leased for `lease` seconds from the
    database's clock (see `_finish`). Whether a child's run was created leased to `born`."""
    child_of = born if step.kind == StepKind.CHILD else None  # its run is born leased, not the step
    born = None if step.kind == StepKind.CHILD else born
    options = step.options
    due_at = step.due_at if step.kind == StepKind.TIMER else (None if born else now)
    tx.write_row(
        "insert_step",
        {
            "run_id": run.id,
            "seq": step.seq,
            "kind": step.kind,
            "name": step.name,
            "args": step.args,
            "status": StepStatus.RUNNING if born else step.status,
            "result": step.result,
            "delivered_in": 0 if step.delivered else None,
            "due_at": due_at if step.kind in (StepKind.ACTION, StepKind.TIMER) else None,
            "queue": step.queue,
            "options": json.dumps(options, sort_keys=True, separators=(",", ":")) if options is not None else None,
            "now": scheduled_at,
            "completed_at": now if step.status != StepStatus.SCHEDULED else None,
            "activation": activation,
            "attempt": 1 if born else 0,
            "lease_owner": born,
            "lease": lease if born else None,
            "started_at": now if born else None,
        },
    )
    if step.kind == StepKind.ACTION and not born:
        tx.notify(WORK)  # claimable by any worker
    kind = "step.completed" if step.status == StepStatus.COMPLETED else "step.scheduled"
    event(tx, run.id, kind, now, step.seq, kind=step.kind.value, name=step.name)
    if born:
        event(tx, run.id, "step.started", now, step.seq, attempt=1, worker=born)
    if step.kind == StepKind.CHILD:
        return start_child(tx, run, step, now, child_of, lease)
    if step.kind == StepKind.SEND_SIGNAL:
        _send_signal(tx, run, step, now)
    return False


def _send_signal(tx: Tx, run: RunRow, step: NewStep, now: float) -> None:
    """`cairn.send_signal` in the workflow: buffered for its target in the same commit, and the
    step resolved with the outcome, which the workflow's await takes in its next activation (a
    target that does not exist or has finished is RunNotFound or IllegalTransition there)."""
    data = json.loads(step.args or "{}")
    try:
        signal(tx, str(data["run_id"]), step.name, json.dumps(data.get("payload")), now)
    except (RunNotFound, IllegalTransition) as exc:
        _fail_step(tx, run.id, step.seq, exc, now)
        return
    event(tx, run.id, "step.completed", now, step.seq)
    sent = {"run_id": run.id, "seq": step.seq, "now": now, "status": StepStatus.COMPLETED, "result": "null"}
    tx.write("resolve_parent_step", {**sent, "error": None})  # pipelined: no round trip for the common case


def match_signals(tx: Tx, run_ids: Sequence[str], now: float) -> None:
    """Pair the runs' open signal waits with their buffered signals (see `consume_signals`)."""
    consume_signals(tx, tx.all("signal_matches", {"run_ids": list(run_ids), "now": now}), now)


def consume_signals(tx: Tx, matches: Sequence[Sequence[Any]], now: float) -> list[StepRow]:
    """Resolve each open wait with the signal `signal_matches` paired it with; the resolved waits,
    to be delivered like any result. The one place where signals meet their waits, under the run's
    lease: when a claim takes the run, and when a commit of the run leaves waits open (so a signal
    that arrived in between is never overwritten by the commit's idea of when the run is next
    ready, nor taken by a wait that timed out in that commit). The pairs a timer that came due
    before their signal holds back are left for later (`after_the_timers`)."""
    resolved = []
    for match in after_the_timers(matches, now):
        run_id, seq, name, signal_id, payload = match[:5]
        received_at = received(match, now)
        params = {"run_id": run_id, "seq": seq, "signal_id": signal_id, "payload": payload, "received_at": received_at}
        tx.write("consume_signal_into_step", params)
        tx.write("mark_signal_consumed", params)
        event(tx, run_id, "step.completed", now, seq, signal=name)
        resolved.append(signal_step(run_id, int(seq), str(name), payload, received_at))
    return resolved


def received(match: Sequence[Any], now: float) -> float:
    """When a `signal_matches` pair's wait got its signal: when the signal was there for it (sent,
    or the wait begun), not when a claim got round to it. The time that orders it against a timer
    delivered with it (`in_delivery_order`)."""
    waited_from, sent_at = match[5], match[6]
    return min(now, max(float(waited_from), float(sent_at)))


def after_the_timers(matches: Sequence[Sequence[Any]], now: float) -> list[Sequence[Any]]:
    """The `signal_matches` pairs that may be resolved now, given the earliest due time of the
    timers of each run that came due and have not reached its workflow yet (fired by this claim,
    or due and not fired when a commit matches): none whose signal came after it, nor any later
    pair of that run and name (the n-th wait takes the n-th signal). Such a signal waits for the
    activation the timer starts, and the commit after it matches it (`match_signals`) to the waits
    still open then. Matched before, to a wait that timer then stopped, it was given back after a
    later wait of its name had taken the next signal: the run got them in the wrong order. (A
    commit meets such a timer when its activation ran past the timer's due time, or its worker was
    behind: only a claim fires a timer, see `fire_due_timers_of_runs`.)"""
    kept: list[Sequence[Any]] = []
    deferred: set[tuple[str, str]] = set()
    for match in matches:
        run_id, name, due = str(match[0]), str(match[2]), match[7]
        if (run_id, name) in deferred or (due is not None and received(match, now) > float(due)):
            deferred.add((run_id, name))
            continue
        kept.append(match)
    return kept


def signal_step(run_id: str, seq: int, name: str, payload: str | None, now: float) -> StepRow:
    """A wait as `consume_signal_into_step` leaves it: completed at `now` with the signal's payload."""
    return StepRow(
        run_id,
        seq,
        StepKind.SIGNAL,
        name,
        None,
        StepStatus.COMPLETED,
        payload,
        None,
        0,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        now,
        None,
        now,
    )


def start_child(tx: Tx, run: RunRow, step: NewStep, now: float, owner: str | None = None, lease: float = 0.0) -> bool:
    """A child step's first commit: start its run (or take the existing one) as `step.options` say;
    whether it created the run leased to `owner` (the committing worker, which starts it from
    memory with no claim, as it does a run started in its process: see `Worker.start_run`)."""
    child = NewRun.child(run, step)
    child_id = child.id
    detached = child.parent_seq is None  # a child it does not wait for
    joined = bool(step.options.get("join"))  # a child started detached, waited for now: never inserted
    new = {**insert_params(child), "now": now, "lease_owner": owner, "lease": lease if owner else None}
    if not joined and tx.one("insert_run", new) is not None:
        if owner is None:
            tx.notify(start_note(child.workflow, child.queue))
        return owner is not None
    try:
        held = id_holder(child_id, tx.one("id_holder", {"id": child_id}))
    except RunIdTaken as pruning:  # its run is gone to the parent too: no outcome to take from it
        held = None
        if not joined:
            if detached:
                event(tx, run.id, "step.failed", now, step.seq, error=str(pruning))
            else:
                _fail_step(tx, run.id, step.seq, pruning, now)
            return False
    if held is None:
        assert joined, f"run {child_id} was refused as existing, yet it is not there"
        gone = RunNotFound(f"child run {child_id!r} no longer exists (a finished run pruned by retention?)")
        _fail_step(tx, run.id, step.seq, gone, now)
        return False
    existing = held
    if existing.workflow != step.name:  # the id names a run of another workflow: the child fails
        conflict = RunIdConflict(child_id, existing.workflow, step.name)
        if detached:  # nothing waits for it: the parent's journal says why no child started
            event(tx, run.id, "step.failed", now, step.seq, error=str(conflict))
        else:
            _fail_step(tx, run.id, step.seq, conflict, now)
        return False
    if detached:
        return False
    if child_id == run.id or child_id in _ancestors(tx, run):
        # Adopted, it would wait for its own end (a run's parent became its own descendant): both
        # stayed running for ever, with nothing to say why.
        whose = "this run itself" if child_id == run.id else f"an ancestor of run {run.id!r}"
        cycle = RunIdTaken(
            f"child run {child_id!r} is {whose}: a run cannot wait for its own end; give the child an id of its own"
        )
        _fail_step(tx, run.id, step.seq, cycle, now)
        return False
    # The id names an existing run: wait for it if it is still going, else take its outcome now.
    if tx.execute("adopt_child", {"id": child_id, "parent_id": run.id, "parent_seq": step.seq, "now": now}) == 1:
        tx.notify(WORK)  # a run taken from the worker that held it (see adopt_child)
        return False
    row = tx.one("get_run", {"id": child_id})  # it may have ended since it was read above
    assert row is not None
    existing = run_row(row)
    if existing.status.is_terminal:
        status = StepStatus.COMPLETED if existing.status == RunStatus.COMPLETED else StepStatus.FAILED
        _resolve_step(tx, run.id, step.seq, status, existing.result, existing.error, now)
        return False
    # Going on for another parent: its end resolves that parent's wait only, so this one is told
    # now rather than left waiting for an end that would never reach it.
    taken = RunIdTaken(
        f"child run {child_id!r} is already the child of run {existing.parent_id!r}: a run hands its result "
        "to one parent; give this child an id of its own, or have the other parent send what is needed"
    )
    _fail_step(tx, run.id, step.seq, taken, now)
    return False


def _ancestors(tx: Tx, run: RunRow) -> set[str]:
    """The ids of `run`'s parent, its parent's parent, and so on (rarely more than a few reads)."""
    seen: set[str] = set()
    parent = run.parent_id
    while parent is not None and parent not in seen:
        seen.add(parent)
        row = tx.one("get_run", {"id": parent})
        parent = run_row(row).parent_id if row is not None else None
    return seen


def _fail_step(tx: Tx, run_id: str, seq: int, exc: CairnError, now: float) -> None:
    """A step that failed in its own commit (a child that cannot be started or waited for, a
    signal that cannot be sent): recorded failed with `exc`, which the workflow's await raises."""
    event(tx, run_id, "step.failed", now, seq, error=str(exc))
    _resolve_step(tx, run_id, seq, StepStatus.FAILED, None, json.dumps(error_to_json(exc)), now)


def _resolve_step(
    tx: Tx, run_id: str, seq: int, status: StepStatus, result: str | None, error: str | None, now: float
) -> int:
    """A child step's outcome (from its run, or a failure to start it)."""
    params = {"run_id": run_id, "seq": seq, "now": now, "status": status, "result": result, "error": error}
    return tx.execute("resolve_parent_step", params)


def record_attempt(
    tx: Tx,
    claim: ActionClaim,
    result: str | None,
    error: str | None,
    retry_delay: float | None,
    memory_writes: Sequence[tuple[str, str]],
    logs: Sequence[str],
) -> bool:
    """An attempt's outcome in a transaction of its own (the worker does not hold the run, or its
    commit failed): fenced by the attempt number, False when the attempt lost the step. A final
    outcome wakes the run; a retry puts the step back, due after `retry_delay` seconds."""
    _lock_run(tx, claim.run_id)  # run row first: the lock order of every commit
    now = tx.now()
    if retry_delay is not None:
        return _retry_later(tx, claim, error, retry_delay, logs, now)
    if tx.execute("complete_step", _outcome_params(tx, claim, result, error, memory_writes, logs, now)) != 1:
        return False
    _write_memory(tx, claim.run_id, claim.seq, memory_writes, now)
    _outcome_event(tx, claim, error, now)
    tx.write("wake_run", {"id": claim.run_id, "now": now})
    tx.notify(WORK)
    return True


def carry_result(tx: Tx, c: Completion, now: float, delivery: tuple[int, float] | None) -> None:
    """A final outcome recorded by the commit of the run's next activation, which holds the run and
    wakes nothing; with `delivery` (activation, time) that commit also delivers it, and the step is
    written once, completed and delivered. A step the attempt lost fails the whole commit
    (CompletionLost), which the worker then records the ordinary way."""
    params = _outcome_params(tx, c.claim, c.result, c.error, c.memory_writes, c.logs, now)
    if delivery is not None:
        params["delivered_in"], params["delivered_at"] = delivery
    superseded = CompletionLost(f"action step {c.claim.seq} of run {c.claim.run_id} was superseded")
    tx.write_row("complete_step", params, expect=superseded)
    _outcome_event(tx, c.claim, c.error, now)  # its memory writes: see commit_activation


def _retry_later(tx: Tx, claim: ActionClaim, error: str | None, delay: float, logs: Sequence[str], now: float) -> bool:
    params = _outcome_params(tx, claim, None, error, (), logs, now)
    params.update(status=StepStatus.SCHEDULED, completed_at=None, due_at=now + delay)
    if tx.execute("complete_step", params) != 1:
        return False
    message = json.loads(error or "{}").get("message", "")
    event(tx, claim.run_id, "step.retried", now, claim.seq, attempt=claim.attempt, error=message, delay=delay)
    tx.notify(WORK)
    return True


def _outcome_params(
    tx: Tx,
    claim: ActionClaim,
    result: str | None,
    error: str | None,
    memory_writes: Sequence[tuple[str, str]],
    logs: Sequence[str],
    now: float,
) -> dict[str, Any]:
    """`complete_step`'s parameters for a final outcome (every attempt's log lines kept)."""
    all_logs = list(logs)
    if logs:
        row = tx.one("step_logs", {"run_id": claim.run_id, "seq": claim.seq})
        all_logs = (json.loads(row[0]) if row and row[0] else []) + all_logs
    return {
        "run_id": claim.run_id,
        "seq": claim.seq,
        "attempt": claim.attempt,
        "started_at": claim.started_at,
        "status": StepStatus.FAILED if error is not None else StepStatus.COMPLETED,
        "result": result,
        "error": error,
        "memory_writes": json.dumps(list(memory_writes)) if memory_writes else None,
        "logs": json.dumps(all_logs) if all_logs else None,
        "completed_at": now,
        "due_at": None,
        "delivered_in": None,
        "delivered_at": None,
    }


def _write_memory(tx: Tx, run_id: str, step: int, writes: Sequence[tuple[str, str]], now: float) -> None:
    for key, value in writes:
        tx.write_row("upsert_memory", {"run_id": run_id, "key": key, "value": value, "step": step, "now": now})


def _outcome_event(tx: Tx, claim: ActionClaim, error: str | None, now: float) -> None:
    detail: dict[str, Any] = {"attempt": claim.attempt}
    if error is not None:
        detail["error"] = json.loads(error).get("message", "")
    status = "failed" if error is not None else "completed"
    event(tx, claim.run_id, f"step.{status}", now, claim.seq, **detail)
