"""SqlStore: the Store protocol, implemented once for every SQL backend over a `Database` adapter.

Each public method is one transaction; the multi-statement ones live in `journal_tx` (advancing runs)
and `control` (pause, resume, cancel, retry, fork).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

from cairn.clock import Clock
from cairn.errors import LeaseLost, RunNotFound
from cairn.names import storable
from cairn.queues import QueueSpec
from cairn.records import NewRun, RunRow, StepRow
from cairn.schedules import ScheduleSpec
from cairn.store import control, journal_tx, queue_tx, schedule_tx
from cairn.store.base import LEFT_BY, SCHEDULES, WORK, Database, Tx, run_row, start_note, step_row
from cairn.store.batch import TxBatcher
from cairn.store.protocol import (
    ActionClaim,
    ActionInfo,
    Commit,
    EventRow,
    Listener,
    Need,
    QueueRow,
    RunClaim,
    RunFilters,
    ScheduleRow,
    Store,
    WorkClaim,
    WorkerInfo,
    WorkflowInfo,
)
from cairn.store.sql import STEP_COLUMNS
from cairn.types import RunStatus

log = logging.getLogger("cairn.store")

CONFLICT_ATTEMPTS = 5
"""How many times a control operation is run when the database refuses it as a deadlock's loser."""
LOCK_BUSY_ATTEMPTS = 30
"""How many times a control operation (or a commit) is run taking its further row locks NOWAIT (see
`control._lock`, `journal_tx.lock_in_order`) while another transaction holds one of them, before it
waits for them as for its first."""
LOCK_BUSY_PAUSE = 0.001
"""Seconds before the first such run again, doubled each time up to 50 ms: a commit holds its
rows for a few milliseconds."""

PRUNE_ROWS = 5000
"""Rows of history (steps, events, properties, memory, signals) one transaction of a prune deletes
at most: 5-20 ms of SQLite's write lock, however large the runs it deletes (three runs of 200,000
steps and 600,000 events, deleted in one transaction, held it 3 s)."""
PRUNE_GROUP = 50
"""Runs whose history one statement of a prune deletes together: few statements for many small
runs, and when a piece ends in the middle of a group, only that group is marked as begun (an
update of each run), not every run the piece took (as many as 500)."""

T = TypeVar("T")
OWN_NEW_RUN_SETTLE = 1.0
"""Seconds a new run leased to a worker is left alone by that worker's own claims, unless its lease
ran out. A claim skips the runs its worker is busy with, as listed when the claim began; a run
started in the worker's process while the claim was under way is born leased to that worker, its
first activation already on its way, and a claim that took it moved its lease (token 1 -> 2): that
activation's commit was refused and the run activated again (1 run in about 3,000 in the naive
loop of `cairn bench`). A new run whose first activation failed here is retaken after this long."""


class SqlStore:
    """Implements `cairn.store.protocol.Store` for every SQL backend."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.url = db.url
        self._batcher = TxBatcher(db, max_in_flight=db.commits_in_flight, lock_first=journal_tx.lock_in_order)
        self._starts = TxBatcher(db, max_in_flight=2, direct=True)
        """Run creations group among themselves, apart from the workers' commits, so a start never
        waits behind a busy worker's batches (in a loop of starts beside a worker, that wait was
        most of each start)."""
        """Group commit for the hot small writes: run inserts, activation commits, action results."""

    @property
    def clock(self) -> Clock:
        """The clock leases and due times are judged by (see `cairn.clock`)."""
        return self.db.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self.db.clock = clock

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    def subscribe_key(self, key: str, callback: Listener) -> Callable[[], None]:
        return self.db.subscribe_key(key, callback)

    @property
    def notifies_across_processes(self) -> bool:
        """Whether commits in other processes reach `subscribe_key` callbacks here (else only a
        poll sees them)."""
        return self.db.notifies_across_processes

    def refused(self, exc: Exception) -> bool:
        """Whether a failed write was refused (surely not applied), not cut off (outcome unknown)."""
        return self.db.refused(exc)

    async def now(self) -> float:
        return await self.db.transaction(lambda tx: tx.now(), write=False)

    # --- runs ----------------------------------------------------------------------------------

    async def insert_run(
        self, run: NewRun, owner: str | None = None, lease: float = 0.0, now: float | None = None
    ) -> RunRow | None:
        """Create the run unless its id names one already (then that run, and nothing is written);
        a run started with a key, a priority or a dedup_key goes in by its queue's insert.

        An insert cut off with its outcome unknown is settled like a commit (see
        `commit_activation`): the run there as it was to be written means it landed; no run means
        it never did, and it is sent again. A queue's insert too: its cut-off raised the driver's
        error, though the run had often landed, and a caller that started again made a second."""

        async def send() -> RunRow | None:
            if run.queued:
                return await self.db.transaction(lambda tx: queue_tx.insert(tx, run))
            while True:
                try:
                    await self._starts.run(lambda tx: journal_tx.create_run(tx, run, owner, lease, now))
                    return None
                except journal_tx.IdTaken:
                    pass  # its holder is read below, so that no error of the read is told as raised by this one
                existing = journal_tx.id_holder(run.id, await self.db.read_one("id_holder", {"id": run.id}))
                if existing is not None:
                    return existing
                # deleted since (a prune ended it): the id is free again, and the start is sent again

        async def outcome(unknown: Exception) -> tuple[bool, RunRow | None]:
            row = await self.get_run(run.id)
            if row is None:
                return False, None
            same = (row.workflow, row.input, row.parent_id) == (run.workflow, run.input, run.parent_id)
            # Born leased to a worker: still its, as the insert left it (else taken over since).
            held = owner is None or (row.lease_owner == owner and row.lease_token == 1)
            if same and held:
                log.info("run %s: an insert cut off (%s) had landed", run.id, unknown)
                return True, None
            return True, row

        return await self._settled(send, outcome, f"run {run.id}: an insert")

    async def get_run(self, run_id: str) -> RunRow | None:
        row = await self.db.read_one("shown_run", {"id": run_id})
        return run_row(row) if row else None

    async def runs_by_ids(self, run_ids: Sequence[str], finished_only: bool = False) -> list[RunRow]:
        ids = [i for i in run_ids if storable(i)]
        if len(ids) == 1:
            # One run (a result awaited alone): its lookup by key, whose prepared plan is that
            # however it was made; `runs_by_ids` is planned at each call (see PLANNED_EACH_TIME),
            # 40-45 us more for each `result()` awaited one after another.
            row = await self.get_run(ids[0])
            return [row] if row is not None and (row.status.is_terminal or not finished_only) else []
        params = {"ids": ids, "finished_only": 1 if finished_only else 0}
        rows = await self.db.read("runs_by_ids", params)
        return [run_row(r) for r in rows]

    async def run_trace(self, run_id: str) -> tuple[str, str | None] | None:
        """A run's workflow and the trace context it was started in (its parent's for a child)."""
        row = await self.db.read_one("run_trace", {"id": run_id})
        return None if row is None else (str(row[0]), row[1])

    async def list_runs(self, status: str | None = None, workflow: str | None = None, limit: int = 50) -> list[RunRow]:
        return await self.runs_page(RunFilters(status=status, workflow=workflow), True, None, limit)

    async def count_runs(self, status: str) -> int:
        row = await self.db.read_one("count_runs", {"status": status})
        return int(row[0]) if row else 0

    async def runs_page(
        self, filters: RunFilters, newest_first: bool, after: tuple[float, str] | None, limit: int
    ) -> list[RunRow]:
        """One keyset page of runs (see `RunFilters`), after the (created_at, id) of the last run
        of the previous page."""
        params = {
            "status": filters.status,
            "workflow": filters.workflow,
            "id_prefix": filters.id_prefix,
            "since": filters.since,
            "until": filters.until,
            "after_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        }
        # The variant whose given filters are plain equalities, for their index (see cairn.store.sql).
        given = "_and_".join([p for p in ("workflow", "status") if getattr(filters, p)] + ["after_at"] * bool(after))
        name = f"runs_page_{'newest' if newest_first else 'oldest'}{f'_of_{given}' if given else ''}"
        rows = await self.db.read(name, params)
        return [run_row(r) for r in rows]

    async def run_counts(
        self,
        by: str,
        workflow: str | None = None,
        id_prefix: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[tuple[str, str, int]]:
        """(group, status, count) of all runs, grouped by `by`: "status" (group ""; only runs of
        `workflow`, whose id starts with `id_prefix`, created from `since` to `until`, when given),
        "workflow" or "queue"."""
        name = _COUNTS.get(by)
        if name is None:
            raise ValueError(f"runs are counted by {', '.join(_COUNTS)}, not {by!r}")
        params = {"workflow": workflow, "id_prefix": id_prefix, "since": since, "until": until}
        if by == "status" and workflow is not None:
            name += "_of_workflow"  # by the workflow's index, not a count of every run
        rows = await self.db.read(name, params)
        return [(str(k), str(s), int(n)) for k, s, n in rows]

    async def last_steps(self, run_ids: Sequence[str]) -> dict[str, StepRow]:
        """The latest step of each run that has one."""
        if not run_ids:
            return {}
        rows = await self.db.read("last_steps_of_runs", {"run_ids": list(run_ids)})
        return {r[0]: step_row(r) for r in rows}

    async def list_children(self, run_id: str, limit: int) -> list[RunRow]:
        """The runs started by `run_id` (its child workflows), oldest first."""
        rows = await self.db.read("children_of_run", {"id": run_id, "limit": limit})
        return [run_row(r) for r in rows]

    async def list_steps(
        self, run_id: str, after: int = 0, limit: int | None = None, *, last: int | None = None
    ) -> list[StepRow]:
        if last is not None:
            rows = await self.db.read("last_steps_of_run", {"run_id": run_id, "limit": last})
            return [step_row(r) for r in reversed(rows)]
        if after or limit is not None:
            rows = await self.db.read("steps_after", {"run_id": run_id, "after": after, "limit": self._bound(limit)})
        else:
            rows = await self.db.read("list_steps", {"run_id": run_id})
        return [step_row(r) for r in rows]

    async def run_logs(self, run_id: str) -> list[tuple[int, str, str]]:
        rows = await self.db.read("run_logs", {"run_id": run_id})
        return [(int(seq), str(name), str(logs)) for seq, name, logs in rows]

    async def get_memory(self, run_id: str) -> dict[str, str]:
        rows = await self.db.read("get_memory", {"run_id": run_id})
        return {k: v for k, v in rows}

    def _bound(self, limit: int | None) -> int | None:
        """A LIMIT parameter; no limit as -1 on SQLite, its "no bound" (NULL is a datatype mismatch
        there); PostgreSQL's LIMIT takes NULL, so -1 is never sent to it."""
        if limit is None and self.db.dialect == "sqlite":
            return -1
        return limit

    async def property_history(self, run_id: str, *, last: int | None = None) -> list[tuple[int, str]]:
        if last is not None:
            rows = await self.db.read("last_properties_of_run", {"run_id": run_id, "limit": last})
            return [(int(a), str(p)) for a, p in reversed(rows)]
        rows = await self.db.read("property_history", {"run_id": run_id})
        return [(int(a), str(p)) for a, p in rows]

    async def run_sizes(self, run_id: str) -> tuple[int, int, int]:
        rows = await self.db.read("run_sizes", {"run_id": run_id})
        steps, events, snapshots = rows[0]
        return int(steps), int(events), int(snapshots)

    async def send_signal(self, run_id: str, name: str, payload: str) -> bool:
        """A send cut off at its COMMIT (outcome unknown) is settled like a commit (see
        `commit_activation`) by the id this send gives its signal before the first try: stored
        means it landed; not stored, it is sent again, and stores nothing if the first landed
        after all. Neither delivered twice nor lost, and no connection error in the caller's hands."""
        request = uuid.uuid4().hex

        def send_tx(tx: Tx) -> None:
            # The run's row first, waiting holding nothing: the signal's row would take a share of it
            # (its foreign key), which a worker's commit of the run, fencing it and then locking it
            # again, waits for, while the signal's wake-up waits for that commit: a deadlock, and
            # the signal refused (DeadlockDetected in the caller's hands, nothing sent).
            tx.one("lock_run", {"id": run_id})
            journal_tx.signal(tx, run_id, name, payload, tx.now(), request)

        async def send() -> bool:
            try:
                await self._control(send_tx)
            except RunNotFound:
                return False
            return True

        async def outcome(unknown: Exception) -> tuple[bool, bool]:
            if await self.db.read_one("signal_request", {"request": request}) is None:
                return False, False
            log.info("run %s: a signal %r cut off (%s) had landed", run_id, name, unknown)
            return True, True

        return await self._settled(send, outcome, f"run {run_id}: a signal")

    async def list_events(
        self,
        run_id: str,
        after: int = 0,
        limit: int | None = None,
        *,
        last: int | None = None,
        steps: tuple[int, int] | None = None,
    ) -> list[EventRow]:
        if last is not None:
            rows = await self.db.read("last_events_of_run", {"run_id": run_id, "limit": last})
            rows = rows[::-1]
        elif after or limit is not None or steps is not None:
            first_step, last_step = steps if steps is not None else (None, None)
            rows = await self.db.read(
                "events_after",
                {
                    "run_id": run_id,
                    "after": after,
                    "limit": self._bound(limit),
                    "first_step": first_step,
                    "last_step": last_step,
                },
            )
        else:
            rows = await self.db.read("list_events", {"run_id": run_id})
        return [EventRow(int(i), float(at), str(kind), step, detail) for i, at, kind, step, detail in rows]

    # --- control (each idempotent; IllegalTransition when the status forbids it) -----------------

    async def pause(self, run_id: str) -> RunStatus:
        return await self._control_settled(lambda tx: control.pause(tx, run_id), _send_again, f"run {run_id}: a pause")

    async def resume(self, run_id: str) -> RunStatus:
        async def outcome(unknown: Exception) -> tuple[bool, RunStatus]:
            row = await self.get_run(run_id)
            if row is None or row.status == RunStatus.PAUSED:
                return False, RunStatus.PAUSED
            return True, row.status

        return await self._control_settled(lambda tx: control.resume(tx, run_id), outcome, f"run {run_id}: a resume")

    async def cancel(self, run_id: str) -> RunStatus:
        what = f"run {run_id}: a cancel"
        return await self._control_settled(lambda tx: control.cancel(tx, run_id), _send_again, what)

    async def time_out(self, run_id: str, timeout: float) -> RunStatus:
        what = f"run {run_id}: a timeout"
        return await self._control_settled(lambda tx: control.time_out(tx, run_id, timeout), _send_again, what)

    async def retry(self, run_id: str) -> RunStatus:
        async def outcome(unknown: Exception) -> tuple[bool, RunStatus]:
            row = await self.get_run(run_id)
            if row is None or row.status in (RunStatus.FAILED, RunStatus.PAUSED):
                return False, RunStatus.FAILED
            return True, row.status

        return await self._control_settled(lambda tx: control.retry(tx, run_id), outcome, f"run {run_id}: a retry")

    async def fork(self, run_id: str, from_step: int, new_id: str | None = None) -> str:
        fork_id = control.fork_id(run_id, new_id)  # before the first try (see `control.fork_id`)

        async def outcome(unknown: Exception) -> tuple[bool, str]:
            return await self.get_run(fork_id) is not None, fork_id

        what = f"run {run_id}: a fork"
        return await self._control_settled(lambda tx: control.fork(tx, run_id, from_step, fork_id), outcome, what)

    async def _control_settled(
        self, fn: Callable[[Tx], T], outcome: Callable[[Exception], Awaitable[tuple[bool, T]]], what: str
    ) -> T:
        """A control operation (`_control`) cut off at its COMMIT, settled by `outcome` (see
        `_settled`): a pause, a cancel or a timeout leaves the run where running it again changes
        nothing, so it is simply sent again; a resume, a retry or a fork is told by the run."""
        return await self._settled(lambda: self._control(fn), outcome, what)

    async def _control(self, fn: Callable[[Tx], T]) -> T:
        """A control operation (or a client's signal), run again when a row it locks NOWAIT is held
        by a commit, or when the database refused it as the loser of a lock conflict: it locks a
        parent, then its children (`control._lock`), while a group commit locks its runs in id
        order (`journal_tx.lock_in_order`). Refused, nothing of it was applied; handed to its
        caller, the cancel or retry a user asked for would not have happened."""
        busy = conflicts = 0
        while True:
            wait_once = busy < LOCK_BUSY_ATTEMPTS

            def run(tx: Tx, wait_once: bool = wait_once) -> T:
                tx.wait_once = wait_once
                return fn(tx)

            try:
                return await self.db.transaction(run)
            except Exception as exc:
                if wait_once and self.db.lock_unavailable(exc):
                    log.debug("a control operation found a row it locks held by a commit; running it again")
                    busy += 1
                    await asyncio.sleep(min(LOCK_BUSY_PAUSE * 2 ** (busy - 1), 0.05))
                    continue
                if not (self.db.conflicted(exc) and conflicts < CONFLICT_ATTEMPTS - 1):
                    raise
                conflicts += 1
                log.info("a control operation lost a lock conflict (%s); running it again", exc)

    # --- workflow activations -------------------------------------------------------------------

    async def claim_work(
        self,
        worker: str,
        workflows: Sequence[str],
        actions: Sequence[str],
        queues: Sequence[str] | None,
        run_limit: int,
        action_limit: int,
        lease: float,
        cached: dict[str, int] | None = None,
        busy: Collection[str] = (),
        new_run_limit: int | None = None,
    ) -> WorkClaim:
        """One transaction per wake-up: lease runnable runs and due attempts, and say when the next
        thing falls due (so an idle worker sleeps exactly until then). Runs in `busy` are being
        activated by this worker already: claiming them again would only break that commit's fence.
        Of the runs, oldest first, at most `new_run_limit` (default: all) are new ones, never activated."""

        def tx_fn(tx: Tx) -> WorkClaim:
            # The claims judge leases and due times by the transaction's clock (cairn_tx_now), read
            # back in the same round trip rather than fetched first.
            sent_at = self.clock.now()
            filters = {"worker": worker, "lease": lease, "any_queue": 1 if queues is None else 0, "gated": 1}
            filters["queues"] = list(queues or [])
            mine = {
                **filters,
                "busy": sorted(busy),
                "settle": OWN_NEW_RUN_SETTLE,
                "workflows": list(workflows),
                "names": list(actions),
            }
            want_runs, want_actions = bool(workflows) and run_limit > 0, bool(actions) and action_limit > 0
            statements: list[tuple[str, dict[str, Any]]] = [("claim_plan", {}), ("tx_now", {})]
            if want_runs:
                new_limit = run_limit if new_run_limit is None else min(run_limit, new_run_limit)
                statements.append(("claim_runs", {**mine, "limit": run_limit, "new_limit": new_limit}))
            if want_actions:
                statements.append(("claim_actions", {**mine, "limit": action_limit}))
            # After the claims, which lease what they took: what is left to fall due.
            statements += [("next_wake_runs", mine), ("next_wake_actions", mine), ("limited_queues_to_claim", filters)]
            if busy:
                statements.append(("busy_due", mine))
            results = tx.all_of(statements)
            busy_due = frozenset(str(r[0]) for r in results.pop()) if busy else frozenset()
            _, clock, *claimed, wake_runs, wake_actions, limited = results
            now = float(clock[0][0])
            run_rows = claimed.pop(0) if want_runs else []
            action_rows = claimed.pop(0) if want_actions else []
            if want_runs and len(run_rows) >= run_limit:
                # Full: each of claim_runs' walks locked up to the limit, and the rows it left are
                # free at this commit, after other claims passed them over (see LEFT_BY).
                tx.notify(WORK, (LEFT_BY, worker))
            due = [max(0.0, float(t[0][0]) - now) for t in (wake_runs, wake_actions) if t and t[0][0] is not None]
            if limited:  # limited queues, each through its own row, with the room the claims above left
                new_taken = sum(1 for r in run_rows if run_row(r).status == RunStatus.PENDING)
                run_room = 0 if not want_runs else min(run_limit - len(run_rows), new_limit - new_taken)
                action_room = action_limit - len(action_rows) if want_actions else 0
                names = [str(r[0]) for r in limited]
                q = queue_tx.claim(tx, now, worker, workflows, actions, names, run_room, action_room, lease)
                run_rows, action_rows = [*run_rows, *q.runs], [*action_rows, *q.actions]
                if q.next_due_in is not None:
                    due.append(q.next_due_in)
                limited_waiting, retry_in = q.waiting, q.retry_in
            else:
                limited_waiting, retry_in = False, None
            if run_rows or action_rows:
                tx.write("claim_plan_end", {})  # no round trip of its own: sent with the next statements
            return WorkClaim(
                _load_runs(tx, now, run_rows, cached),
                _lease_actions(tx, now, worker, action_rows),
                min(due) if due else None,
                busy_due,
                limited_waiting,
                retry_in,
                (now, sent_at),
            )

        return await self.db.transaction(tx_fn)

    async def commit_activation(self, commit: Commit) -> frozenset[int]:
        """Apply one activation atomically, in a transaction it may share with others (group
        commit); LeaseLost if the run's token moved (nothing of it is written).

        A commit cut off with its outcome unknown (the server restarted while it was on its way)
        is settled once the database answers again, rather than left to its worker to give up:
        the run still at the commit's token means it never landed, and it is sent again (fenced
        by that token, so it lands at most once); the run as the commit leaves it means it landed.
        Only when neither can be told does the error reach the caller. Returns the child steps
        whose runs it created leased to `commit.owner` (none known for a commit settled so: such a
        child is left to a claim, its lease as for any run born to a worker that went away)."""

        async def send() -> frozenset[int]:
            # A row it locks NOWAIT held elsewhere (a child of a child it cancels: see
            # journal_tx.lock_in_order) refused it, nothing applied: sent again a little later.
            busy = 0
            while True:
                locks = journal_tx.commit_locks(commit, patient=busy >= LOCK_BUSY_ATTEMPTS)
                try:
                    return await self._batcher.run(lambda tx: journal_tx.commit_activation(tx, commit), locks)
                except Exception as exc:
                    if locks.patient or not self.db.lock_unavailable(exc):
                        raise
                busy += 1
                log.debug("run %s: a commit found a row it locks held elsewhere; sending it again", commit.run.id)
                await asyncio.sleep(min(LOCK_BUSY_PAUSE * 2 ** (busy - 1), 0.05))

        async def outcome(unknown: Exception) -> tuple[bool, frozenset[int]]:
            row = await self.get_run(commit.run.id)
            if row is not None and row.lease_token == commit.token:
                return False, frozenset()
            if row is not None and journal_tx.landed(commit, row):
                log.info("run %s: a commit cut off (%s) had landed", commit.run.id, unknown)
                return True, frozenset()
            if row is None:
                raise unknown
            raise LeaseLost(f"the lease on run {commit.run.id} moved while its commit was cut off") from unknown

        return await self._settled(send, outcome, f"run {commit.run.id}: a commit")

    async def release_run(self, claim: RunClaim) -> None:
        def tx_fn(tx: Tx) -> None:
            tx.execute("release_run", {"id": claim.run.id, "token": claim.token})
            tx.notify(WORK)

        await self.db.transaction(tx_fn)

    # --- action attempts ------------------------------------------------------------------------

    async def complete_action(
        self,
        claim: ActionClaim,
        result: str | None,
        error: str | None,
        retry_delay: float | None,
        memory_writes: Sequence[tuple[str, str]],
        logs: Sequence[str],
    ) -> bool:
        """Record an attempt's outcome fenced by its attempt number; False when it lost the step.

        With `retry_delay` the step goes back to scheduled, due that many seconds from now.

        Recording cut off with its outcome unknown is settled once the database answers again
        (see `commit_activation`): an outcome that never landed is recorded again, so that the
        attempt is not run a second time when its lease runs out."""

        async def send() -> bool:
            return await self._batcher.run(
                lambda tx: journal_tx.record_attempt(tx, claim, result, error, retry_delay, memory_writes, logs),
                journal_tx.attempt_locks(claim),
            )

        async def outcome(unknown: Exception) -> tuple[bool, bool]:
            params = {"run_id": claim.run_id, "seq": claim.seq}
            state = await self.db.read_one("step_state", params)
            recorded = journal_tx.attempt_recorded(claim, state)
            return (False, False) if recorded is None else (True, recorded)

        return await self._settled(send, outcome, f"step {claim.seq} of run {claim.run_id}: an outcome")

    async def _settled(
        self, send: Callable[[], Awaitable[T]], outcome: Callable[[Exception], Awaitable[tuple[bool, T]]], what: str
    ) -> T:
        """`send()` a write; when it is cut off with its outcome unknown (see `Database.ambiguous`),
        ask `outcome` once the database answers (its read waits while it is unavailable): (True,
        value) when the write's fate is known, its answer; (False, _) when it never landed, and it
        is sent again, at most `_SETTLE_TRIES` times in all. Refused as a lock conflict's loser
        (a deadlock), it was not applied either and is sent again: handed to the worker, a refused
        commit fails its run for good, as for a value the database cannot store."""
        tries_left, conflicts = _SETTLE_TRIES - 1, 0
        while True:
            try:
                return await send()
            except Exception as exc:
                if self.db.conflicted(exc) and conflicts < CONFLICT_ATTEMPTS - 1:
                    conflicts += 1
                    log.info("%s lost a lock conflict (%s); sending it again", what, exc)
                    continue
                if not self.db.ambiguous(exc) or not tries_left:
                    raise
                tries_left -= 1
                known, value = await outcome(exc)
                if known:
                    return value
                log.info("%s cut off (%s) never landed; sending it again", what, exc)

    # --- workers and definitions ----------------------------------------------------------------

    async def heartbeat(
        self, info: WorkerInfo, lease: float, runs: Collection[str] = (), attempts: Collection[tuple[str, int]] = ()
    ) -> set[tuple[str, int]]:
        """Record liveness and extend the leases of the `runs` this worker holds and the `attempts`
        (run id, step) it is running; a lease it no longer tracks runs out and is taken over. Of
        the attempts, those it no longer holds: their step cancelled since (by a cancel or a timeout
        of its run), or taken over by another worker once their lease lapsed."""
        held = sorted(runs)
        running = sorted(f"{run_id} {seq}" for run_id, seq in attempts)
        attempt_runs = sorted({r for r, _ in attempts})

        serves = json.dumps(
            {
                "workflows": list(info.workflows),
                "actions": list(info.actions),
                "schedules": list(info.schedules),
                "lease": lease,
            }
        )

        def tx_fn(tx: Tx) -> set[tuple[str, int]]:
            now = tx.now()
            tx.execute(
                "upsert_worker",
                {
                    "id": info.id,
                    "host": info.host,
                    "pid": info.pid,
                    "queues": info.queues,
                    "started_at": info.started_at,
                    "now": now,
                    "in_flight": info.in_flight,
                    "serves": serves,
                },
            )
            # Runs, then steps; each lease runs from the database's clock as it is written.
            tx.execute("extend_run_leases", {"worker": info.id, "lease": lease, "runs": held})
            tx.execute(
                "extend_step_leases",
                {"worker": info.id, "lease": lease, "attempts": running, "attempt_runs": attempt_runs},
            )
            # Rows of workers that died without a goodbye are removed once clearly dead.
            tx.execute("prune_workers", {"before": now - max(300.0, 30 * lease)})
            if not running:
                return set()
            lost = tx.all("lost_attempts", {"worker": info.id, "attempts": running, "attempt_runs": attempt_runs})
            return {(str(run_id), int(seq)) for run_id, seq in lost}

        return await self.db.transaction(tx_fn)

    async def remove_worker(self, worker_id: str) -> None:
        def tx_fn(tx: Tx) -> None:
            now = tx.now()
            tx.execute("hand_over_runs", {"worker": worker_id})
            tx.execute("hand_over_steps", {"worker": worker_id, "now": now})
            tx.execute("delete_worker", {"id": worker_id})
            tx.notify(WORK)

        await self.db.transaction(tx_fn)

    async def hand_over(self, worker_id: str, attempts: Collection[tuple[str, int]]) -> None:
        stopped = sorted(f"{run_id} {seq}" for run_id, seq in attempts)

        def tx_fn(tx: Tx) -> None:
            tx.execute("hand_over_runs", {"worker": worker_id})
            if stopped:
                tx.execute("hand_over_attempts", {"worker": worker_id, "now": tx.now(), "attempts": stopped})
            tx.notify(WORK)

        await self.db.transaction(tx_fn)

    async def list_workers(self, stale_after: float = 60.0) -> list[WorkerInfo]:
        """Workers that heartbeat within `stale_after` seconds: the live ones."""
        return (await self._workers(stale_after))[1]

    async def _workers(self, stale_after: float) -> tuple[float, list[WorkerInfo]]:
        """The database's clock, and the workers that heartbeat within `stale_after` seconds of it."""

        def tx_fn(tx: Tx) -> tuple[float, list[tuple[Any, ...]]]:
            now = tx.now()
            return now, tx.all("list_workers", {"since": now - stale_after})

        now, rows = await self.db.transaction(tx_fn, write=False)
        workers = []
        for r in rows:
            serves = json.loads(r[7]) if r[7] else {}
            workflows, actions, schedules = (tuple(serves.get(k, ())) for k in ("workflows", "actions", "schedules"))
            lease = None if serves.get("lease") is None else float(serves["lease"])
            times = float(r[4]), float(r[5])
            workers.append(
                WorkerInfo(r[0], r[1], int(r[2]), r[3], *times, int(r[6]), workflows, actions, schedules, lease)
            )
        return now, workers

    async def unserved(
        self, run_ids: Sequence[str] | None = None, limit: int = 1000, alive: str | None = None
    ) -> dict[str, str]:
        """Why each of these runs (or, with None, each run with work due now) cannot progress: no
        live worker serves its workflow, or an action one of its steps waits to start. Runs that
        can progress are absent. Work is not lost meanwhile: it starts when such a worker appears."""
        if run_ids is not None:
            ids = [i for i in run_ids if storable(i)]
            rows = await self.db.read("needs_of_runs", {"run_ids": ids})
        else:
            rows = await self.db.read("due_needs", {"limit": limit})
        needs = sorted((Need(r[0], r[1], r[2], r[3], r[4]) for r in rows), key=lambda n: n.kind != "workflow")
        if not needs:
            return {}
        # Live: a heartbeat within its lease. One killed stops beating, and past its lease its work
        # is taken over; counted live for a minute more, it hid that nothing serves the run.
        now, workers = await self._workers(1e9)  # every row, that of `alive` too however old its heartbeat
        workers = [w for w in workers if w.id == alive or w.heartbeat_at + (w.lease or 60.0) >= now]
        out: dict[str, str] = {}
        for need in needs:
            if need.run_id not in out and not any(w.serves(need.kind, need.name, need.queue) for w in workers):
                out[need.run_id] = _unserved_reason(need, workers)
        return out

    async def upsert_schedules(self, specs: Sequence[ScheduleSpec], source: str) -> None:
        def tx_fn(tx: Tx) -> None:
            now = tx.now()
            for spec in specs:
                row = {**spec.__dict__, "source": source, "next_fire_at": spec.next_after(now), "now": now}
                tx.execute("upsert_schedule", row)
            if specs:
                tx.notify(SCHEDULES)

        await self.db.transaction(tx_fn)

    async def upsert_queues(self, specs: Sequence[QueueSpec], declared_by: str) -> list[str]:
        return await self.db.transaction(lambda tx: queue_tx.upsert(tx, specs, declared_by))

    async def get_queue(self, name: str) -> QueueRow | None:
        if not storable(name):
            return None
        row = await self.db.read_one("get_queue", {"name": name})
        return None if row is None else _queue_row(row)

    async def list_queues(self, counts: bool = True) -> list[QueueRow]:
        def tx_fn(tx: Tx) -> list[QueueRow]:
            if not counts:
                return [_queue_row(row) for row in tx.all("list_queues", {})]
            statements: list[tuple[str, dict[str, Any]]] = [
                ("list_queues", {}),
                ("queue_run_counts", {}),
                ("queue_attempt_counts", {}),
            ]
            rows, runs, attempts = tx.all_of(statements)
            r = {q: (int(w or 0), int(f or 0)) for q, w, f in runs}
            a = {q: (int(w or 0), int(f or 0)) for q, w, f in attempts}
            return [_queue_row(row, r.get(row[0], (0, 0)), a.get(row[0], (0, 0))) for row in rows]

        return await self.db.transaction(tx_fn, write=False)

    async def list_schedules(self) -> list[ScheduleRow]:
        rows = await self.db.read("list_schedules", {})
        return [
            ScheduleRow(schedule_tx.spec_of(r), r[10], bool(r[11]), r[12], r[13], r[14], r[15], r[16]) for r in rows
        ]

    async def fire_schedules(
        self, workflows: Sequence[str], declared: Sequence[str], up_since: float | None = None
    ) -> float | None:
        filters = {"workflows": list(workflows), "declared": list(declared)}

        def tx_fn(tx: Tx) -> float | None:
            now = schedule_tx.fire(tx, workflows, declared, up_since)
            row = tx.one("next_schedule_fire", filters)
            return None if row is None or row[0] is None else max(0.0, float(row[0]) - now)

        return await self.db.transaction(tx_fn)

    async def pause_schedule(self, schedule_id: str, paused: bool) -> bool:
        def tx_fn(tx: Tx) -> bool:
            now = tx.now()
            found = tx.all("list_schedules_by_id", {"id": schedule_id})
            if not found:
                return False
            following = schedule_tx.spec_of(found[0]).next_after(now)
            params = {"id": schedule_id, "paused": 1 if paused else 0, "next_fire_at": following, "now": now}
            tx.execute("pause_schedule", params)
            tx.notify(SCHEDULES)
            return True

        return await self.db.transaction(tx_fn)

    async def delete_schedule(self, schedule_id: str) -> bool:
        return bool(await self.db.transaction(lambda tx: tx.execute("delete_schedule", {"id": schedule_id})))

    async def trigger_schedule(self, schedule_id: str) -> str | None:
        def tx_fn(tx: Tx) -> str | None:
            found = tx.one("schedule_input", {"id": schedule_id})
            if found is None:
                return None
            now = tx.now()
            run = NewRun(f"{schedule_id}@manual:{uuid.uuid4().hex[:12]}", found[0], found[2], found[1])
            tx.one("insert_run", {**journal_tx.insert_params(run), "now": now, "lease_owner": None, "lease": None})
            journal_tx.event(tx, run.id, "scheduled", now, None, schedule=schedule_id, manual=True)
            tx.notify(start_note(run.workflow, run.queue))
            return run.id

        return await self.db.transaction(tx_fn)

    async def prune(self, before: float, status: str | None = None, limit: int = 500) -> int:
        """As many transactions as it takes, each deleting at most PRUNE_ROWS rows and giving the
        write lock back (see `_prune_piece`): one run of 200,000 steps held SQLite's write lock for
        seconds in the one DELETE that took it whole, and every other commit waited that long."""
        removed = 0
        while removed < limit:
            count, more = await self.db.transaction(functools.partial(_prune_piece, before, status, limit - removed))
            removed += count
            if not more:
                break
        return removed

    async def add_event(self, run_id: str, kind: str, **detail: Any) -> None:
        """Append to a run's event list a finding that changes nothing else (e.g. work unserved)."""

        def tx_fn(tx: Tx) -> None:
            journal_tx.event(tx, run_id, kind, tx.now(), None, **detail)

        await self.db.transaction(tx_fn)

    async def register_workflows(self, infos: Sequence[WorkflowInfo]) -> None:
        def tx_fn(tx: Tx) -> None:
            now = tx.now()
            tx.many(
                "upsert_workflow",
                [
                    {
                        "name": i.name,
                        "description": i.description,
                        "input_schema": i.input_schema,
                        "queue": i.queue,
                        "derives_id": int(i.derives_id),
                        "now": now,
                    }
                    for i in infos
                ],
            )

        await self.db.transaction(tx_fn)

    async def list_workflows(self) -> list[WorkflowInfo]:
        rows = await self.db.read("list_workflows", {})
        return [WorkflowInfo(r[0], r[1], r[2], r[3], bool(r[4])) for r in rows]

    async def register_actions(self, infos: Sequence[ActionInfo]) -> None:
        def tx_fn(tx: Tx) -> None:
            now = tx.now()
            rows = [
                {"id": i.id, "name": i.name, "description": i.description, "queue": i.queue, "now": now} for i in infos
            ]
            tx.many("upsert_action", rows)

        await self.db.transaction(tx_fn)

    async def list_actions(self) -> list[ActionInfo]:
        rows = await self.db.read("list_actions", {})
        return [ActionInfo(*r) for r in rows]


async def _send_again(unknown: Exception) -> tuple[bool, Any]:
    """The outcome of an idempotent write cut off (see `SqlStore._settled`): sending it again tells."""
    return False, None


_SETTLE_TRIES = 5
"""How many times a write cut off with its outcome unknown is settled and sent again before its
error is given to the caller (each try first waits for the database to answer)."""

_COUNTS = {"status": "run_counts_by_status", "workflow": "run_counts_by_workflow", "queue": "run_counts_by_queue"}
"""Allowed groupings of `run_counts`, each its own fixed query."""


def _queue_row(row: Sequence[Any], runs: tuple[int, int] = (0, 0), attempts: tuple[int, int] = (0, 0)) -> QueueRow:
    """A `list_queues` row, with the queue's (waiting, in flight) runs and attempts."""
    window = None if row[7] is None else float(row[7])
    spec = queue_tx.spec_of(row)
    return QueueRow(spec, row[9], float(row[10]), window, int(row[8]), *runs, *attempts)


def _load_runs(tx: Tx, now: float, rows: Sequence[tuple[Any, ...]], cached: dict[str, int] | None) -> list[RunClaim]:
    """What an activation of each claimed run needs: due timers fired, signals matched to their
    waits, the journal and the results to deliver."""
    runs = [run_row(r) for r in rows]
    if not runs:
        return []
    held = {run.id for run in runs if cached is not None and cached.get(run.id) == run.lease_token}
    # A run never activated has no journal (every step is written by an activation, and a fork
    # keeps none of its source's when it keeps no activation): nothing to read for it. A claim of
    # new runs only (the runs other processes start) was one round trip longer on PostgreSQL.
    ids = [run.id for run in runs if run.activations > 0]
    reload = [run_id for run_id in ids if run_id not in held]
    fired: list[tuple[Any, ...]] = []
    steps: list[tuple[Any, ...]] = []
    undelivered: list[tuple[Any, ...]] = []
    matches: list[tuple[Any, ...]] = []
    if ids:
        fired, steps, undelivered, matches = tx.all_of(
            [
                ("fire_due_timers_of_runs", {"run_ids": ids, "now": now}),
                ("steps_of_runs", {"run_ids": reload}),
                ("undelivered_steps_of_runs", {"run_ids": ids}),
                ("signal_matches", {"run_ids": ids, "now": now}),
            ]
        )
    for run_id, seq in fired:
        journal_tx.event(tx, run_id, "step.completed", now, seq, kind="timer")
    corrupt: set[str] = set()
    journals: dict[str, list[StepRow]] = {}
    for s in steps:
        row = _decoded_step(tx, s, now, corrupt)
        if row is not None:
            journals.setdefault(s[0], []).append(row)
    batches: dict[str, list[StepRow]] = {}
    for s in undelivered:
        row = _decoded_step(tx, s, now, corrupt)
        if row is not None:
            batches.setdefault(s[0], []).append(row)
    for wait in journal_tx.consume_signals(tx, matches, now):  # delivered with the rest
        batches.setdefault(wait.run_id, []).append(wait)
    return [
        RunClaim(
            run,
            run.lease_token,
            journals.get(run.id, []),
            sorted(batches.get(run.id, []), key=lambda s: s.seq),
            run.id in held,
            now,
        )
        for run in runs
        if run.id not in corrupt
    ]


def _decoded_step(tx: Tx, row: Sequence[Any], now: float, corrupt: set[str]) -> StepRow | None:
    """A journal row as a StepRow; None when it does not decode (a kind or status no Cairn wrote),
    its run then paused as its journal being corrupt. Raised here, it failed the whole claim, for
    every run of it, at every claim after: one such row stopped every run the worker could take."""
    run_id = str(row[0])
    if run_id in corrupt:
        return None
    try:
        return step_row(row)
    except (ValueError, TypeError) as exc:
        fields = dict(zip(STEP_COLUMNS, row, strict=False))
        stored = f"kind {fields.get('kind')!r}, status {fields.get('status')!r}"
        control.pause_corrupt(tx, run_id, _int_or_none(fields.get("seq")), stored, str(exc), now)
        log.warning("run %s paused: its journal holds a row that does not decode (%s: %s)", run_id, stored, exc)
        corrupt.add(run_id)
        return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _unserved_reason(need: Need, workers: Sequence[WorkerInfo]) -> str:
    what = f"workflow {need.name!r}" if need.kind == "workflow" else f"action {need.name!r} (step {need.step})"
    live = "; ".join(
        f"{w.id} serves {len(w.workflows)} workflows, {len(w.actions)} actions on queues {w.queues}" for w in workers
    )
    return (
        f"no live worker runs {what} on queue {need.queue!r} (live workers: {live or 'none'}); it will go on "
        f"when a worker that imports it starts (`cairn worker MODULE`), or cancel the run"
    )


def _lease_actions(
    tx: Tx, now: float, worker: str, rows: Sequence[tuple[Any, ...]]
) -> list[tuple[ActionClaim, dict[str, str]]]:
    """The claimed attempts, each with a snapshot of its run's memory."""
    claims = []
    for r in rows:
        try:
            options = json.loads(r[5]) if r[5] else None
        except ValueError as exc:  # changed outside Cairn: the run pauses, the claim goes on for the rest
            control.pause_corrupt(tx, str(r[0]), int(r[1]), f"options {r[5]!r}", f"not JSON ({exc})", now)
            log.warning("run %s paused: its step %s holds options that are not JSON (%s)", r[0], r[1], exc)
            continue
        started = float(r[8]) if r[8] is not None else None
        claims.append(ActionClaim(r[0], int(r[1]), r[2], r[3] or "{}", int(r[4]), options, r[6], int(r[7]), started))
    for c in claims:
        journal_tx.event(tx, c.run_id, "step.started", now, c.seq, attempt=c.attempt, worker=worker)
    memory: dict[str, dict[str, str]] = {}
    if claims:
        for run_id, key, value in tx.all("memory_of_runs", {"run_ids": sorted({c.run_id for c in claims})}):
            memory.setdefault(run_id, {})[key] = value
    return [(c, memory.get(c.run_id, {})) for c in claims]


def _implements(store: SqlStore) -> Store:
    return store  # mypy checks here that SqlStore is a Store


_HISTORY = ("prune_steps", "prune_events", "prune_properties", "prune_memory", "prune_signals")
"""What a run recorded, deleted before its row."""


def _prune_piece(before: float, status: str | None, limit: int, tx: Tx) -> tuple[int, bool]:
    """One transaction of a prune: up to `limit` runs, those an earlier prune began first, and at
    most PRUNE_ROWS rows of their history, deleted PRUNE_GROUP runs at a time. Runs whose history
    is all gone are deleted (their row last); the group whose history ran past PRUNE_ROWS is marked
    as begun (`pruned_runs`): deleted from then on as far as anyone can tell, and finished by the
    next piece of any prune, should this process die first. Runs no piece has touched yet stay as
    they are. How many runs were deleted, and whether anything was left to do (False: nothing)."""
    ids = [str(r[0]) for r in tx.all("runs_being_pruned", {"limit": limit})]
    if len(ids) < limit:
        params = {"before": before, "status": status, "limit": limit - len(ids)}
        ids += [str(r[0]) for r in tx.all("prunable_runs", params)]
    if not ids:
        return 0, False
    budget = PRUNE_ROWS
    done: list[str] = []
    for at in range(0, len(ids), PRUNE_GROUP):
        group = ids[at : at + PRUNE_GROUP]
        for name in _HISTORY:
            budget -= tx.execute(name, {"ids": group, "limit": budget})
            if budget <= 0:  # maybe more of it: the next piece goes on
                tx.write("pruned_runs", {"ids": group, "now": tx.now()})
                return (tx.execute("delete_pruned_runs", {"ids": done}) if done else 0), True
        done += group
    # All it took are gone: fewer than `limit` means no more were there to take (else the prune
    # has its count), and another transaction would only find nothing.
    return tx.execute("delete_pruned_runs", {"ids": done}), False
