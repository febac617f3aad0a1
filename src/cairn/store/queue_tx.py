"""Queues with flow control, in the database: the claim of a limited queue's work, the upsert of
declared limits, and starts with a key, a priority or a dedup_key.

A claim of a limited queue locks that queue's row (`FOR UPDATE SKIP LOCKED`: a queue another
worker is claiming right now is skipped this round), so claims of one queue take turns while the
claims of other queues never wait on it; SQLite's single writer serialises them anyway. What is in
flight is counted from the rows themselves (runs started and not finished, attempts under a live
lease), never from counters a dead worker would not decrement: when its leases run out, its slots
come back. A run this claim leases is marked (`queue_claimed_at`), so that those not begun yet are
counted without reading the runs waiting to start: neither the count nor the choice of what to start
reads the backlog of a busy key, however long. The rate limit spaces starts at least
`rate_period / rate_n` apart (`rate_next_at` on the queue row: when the next may be claimed), so the
starts of a busy queue come at an even pace, never more than `rate_n` in any window of
`rate_period`, rather than in bursts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cairn.queues import QueueSpec
from cairn.records import NewRun, RunRow
from cairn.store.base import QUEUES, WORK, Tx, run_row, start_note
from cairn.store.journal_tx import id_holder, insert_params

BLOCKED_RETRY = 0.1
"""Seconds until a claim looks again at a queue whose due work its limits held back (or another
worker was claiming): a slot freed in another process wakes nobody here."""
SCAN = 4
"""A claim of a per_key queue first reads this many pending runs in claim order per run it may take,
to pass over a few of keys at their limit. When all those read leave it room, it reads the first
runs of each key below its limit instead (`_firsts_of_keys`), however many runs wait ahead."""


@dataclass
class QueueClaim:
    """What the claims of limited queues took in one claim transaction."""

    runs: list[tuple[Any, ...]] = field(default_factory=list)
    actions: list[tuple[Any, ...]] = field(default_factory=list)
    next_due_in: float | None = None
    retry_in: float | None = None
    """Seconds until a look again at a queue held back by its limits or another worker's claim: a
    poll (a slot freed in another process wakes nobody here), not a time at which work falls due."""
    waiting: bool = False
    """Whether work of these queues may be held back by their limits (or by another worker's claim
    of them). Work left for want of room in this worker is the claim's own to say (see
    `Worker._claim`: a claim that filled the room it had)."""

    def due(self, seconds: float) -> None:
        self.next_due_in = seconds if self.next_due_in is None else min(self.next_due_in, seconds)

    def retry(self, seconds: float) -> None:
        self.retry_in = seconds if self.retry_in is None else min(self.retry_in, seconds)


def claim(
    tx: Tx,
    now: float,
    worker: str,
    workflows: Sequence[str],
    actions: Sequence[str],
    limited: Sequence[str],
    run_room: int,
    action_room: int,
    lease: float,
) -> QueueClaim:
    """Lease what the limits of each of the `limited` queues (those this worker serves) allow: new
    runs (up to `run_room`) and action attempts (up to `action_room`)."""
    out = QueueClaim()
    if run_room <= 0 and action_room <= 0:
        return out
    for name in limited:
        locked = tx.one("lock_queue", {"queue": name})
        if locked is None:  # another worker is claiming this queue now: look again soon
            out.retry(BLOCKED_RETRY)
            out.waiting = True
            continue
        limits = _Limits(name, locked, now)
        if workflows and run_room > 0:
            took = _claim_runs(tx, limits, worker, workflows, run_room, lease, out)
            run_room -= len(took)
            out.runs.extend(took)
        if actions and action_room > 0:
            took = _claim_actions(tx, limits, worker, actions, action_room, lease, out)
            action_room -= len(took)
            out.actions.extend(took)
        limits.save(tx)
    return out


class _Limits:
    """One locked queue row: its limits and its rate, as this claim spends them."""

    def __init__(self, name: str, row: Sequence[Any], now: float) -> None:
        self.name = name
        self.concurrency, self.per_worker, self.per_key, self.rate_n = row[0], row[1], row[2], row[3]
        period = None if row[4] is None else float(row[4])
        self.spacing: float | None = None if self.rate_n is None or period is None else period / int(self.rate_n)
        self.next_at = None if row[5] is None else float(row[5])
        self.now = now
        self.started = 0

    def room(self, total: int, mine: int) -> int:
        """How many more may start now, given `total` in flight across the cluster and `mine` here."""
        room = 1 << 30
        if self.concurrency is not None:
            room = min(room, self.concurrency - total)
        if self.per_worker is not None:
            room = min(room, self.per_worker - mine)
        if self.spacing is not None:  # one start per spacing: one now, if its time has come
            room = min(room, 1 if self.started == 0 and (self.next_at is None or self.next_at <= self.now) else 0)
        return max(0, room)

    def rate_blocked_for(self) -> float | None:
        """Seconds until the rate lets the next start through, when it is what holds starts back."""
        if self.spacing is None:
            return None
        if self.started:
            return self.spacing
        if self.next_at is not None and self.next_at > self.now:
            return self.next_at - self.now
        return None

    def save(self, tx: Tx) -> None:
        # The next start goes a spacing after this one, as it happened: starts are never closer than
        # `rate_period / rate_n`, so no window of `rate_period` holds more than `rate_n` of them.
        # (Timing the next from when this one was due, to make up for a claim that came late, let a
        # late start and the next come closer: a period then held `rate_n + 1`.)
        if self.spacing is not None and self.started:
            params = {"queue": self.name, "rate_next_at": self.now + self.spacing, "started": self.started}
            tx.execute("queue_rate", params)


def _claim_runs(
    tx: Tx, q: _Limits, worker: str, workflows: Sequence[str], room: int, lease: float, out: QueueClaim
) -> list[tuple[Any, ...]]:
    per_key: Counter[str | None] = Counter()
    total = mine = 0
    for key, count, held in tx.all("queue_runs_in_flight", {"queue": q.name, "worker": worker}):
        per_key[key] += int(count)
        total += int(count)
        mine += int(held or 0)
    room = min(room, q.room(total, mine))
    if room <= 0:
        _blocked(q, out)
        return []
    scan = room * SCAN if q.per_key is not None else room + 1  # one more: to know whether any is left behind
    params = {"queue": q.name, "workflows": list(workflows), "scan": scan}
    tx.write("queue_candidates_plan", {})
    candidates = tx.all("queue_candidates", params)
    chosen = _pick(q, candidates, room, per_key)
    if q.per_key is not None and len(chosen) < room and len(candidates) == scan:
        chosen = _pick(q, _firsts_of_keys(tx, q, params, room, per_key), room, per_key)
    tx.write("queue_candidates_plan_end", {})
    if len(chosen) < len(candidates):
        _blocked(q, out)  # due runs left behind by a limit
    if not chosen:
        return []
    q.started += len(chosen)
    return tx.all("lease_queue_runs", {"ids": chosen, "worker": worker, "lease": lease})


def _firsts_of_keys(
    tx: Tx, q: _Limits, params: dict[str, Any], room: int, in_flight: Counter[str | None]
) -> list[tuple[Any, ...]]:
    """The candidates of a claim whose first `room * SCAN` runs in claim order left it room: runs of
    keys at their limit ahead must not hold back the other keys' runs behind them, however many
    (past 512 of them, one customer's backlog held back every other customer's until it drained).

    Of each key below its limit, its first `heads` due runs (it may start no more than `per_key`,
    nor more than `room`), and the first keyless runs, in claim order: one short walk of an index
    per key, whatever the length of any key's backlog. The first `room + beyond` of them hold the
    `room` that `_pick` takes: of a key with `n` in flight, at most `min(n, heads)` of its runs
    read are beyond what it may start, and `beyond` is their sum."""
    assert q.per_key is not None
    heads = min(q.per_key, room)
    full = sorted(k for k, n in in_flight.items() if k is not None and n >= q.per_key)
    beyond = sum(min(n, heads) for k, n in in_flight.items() if k is not None and n < q.per_key)
    return tx.all("queue_candidates_by_key", {**params, "full": full, "heads": heads, "scan": room + beyond})


def _pick(q: _Limits, candidates: Sequence[tuple[Any, ...]], room: int, in_flight: Counter[str | None]) -> list[str]:
    """Of the candidates, in claim order, the first `room` whose key is below its per_key limit."""
    per_key = Counter(in_flight)
    chosen: list[str] = []
    for run_id, key in candidates:
        if len(chosen) == room:
            break
        if q.per_key is not None and key is not None and per_key[key] >= q.per_key:
            continue
        per_key[key] += 1
        chosen.append(str(run_id))
    return chosen


def _claim_actions(
    tx: Tx, q: _Limits, worker: str, actions: Sequence[str], room: int, lease: float, out: QueueClaim
) -> list[tuple[Any, ...]]:
    row = tx.one("queue_attempts_in_flight", {"queue": q.name, "worker": worker})
    total, mine = (int(row[0]), int(row[1] or 0)) if row else (0, 0)
    allowed = min(room, q.room(total, mine))
    params = {"worker": worker, "lease": lease, "any_queue": 0, "queues": [q.name], "names": list(actions), "gated": 0}
    if allowed <= 0:
        _blocked(q, out)
        return []
    took = tx.all("claim_actions", {**params, "limit": allowed})
    if len(took) == allowed and allowed < room:
        _blocked(q, out)  # perhaps more due, held back by a limit
    q.started += len(took)
    return took


def _blocked(q: _Limits, out: QueueClaim) -> None:
    """The queue's limits allow no start now: look again when its rate allows the next, or soon (a
    slot freed by another process wakes nobody here)."""
    wait = q.rate_blocked_for()
    if wait is None:
        out.retry(BLOCKED_RETRY)
    else:  # the rate's next start: a time, which a test environment skips to as to a timer
        out.due(max(wait, 0.005))
    out.waiting = True


def upsert(tx: Tx, specs: Sequence[QueueSpec], declared_by: str) -> list[str]:
    """Store declared limits; the names whose stored limits (declared elsewhere) were other ones."""
    changed = []
    news: dict[str, bool] = {}
    for spec in specs:
        row = tx.one("get_queue", {"name": spec.name})
        if row is not None and spec_of(row) != spec and row[9] != declared_by:
            changed.append(spec.name)
        if row is None or spec_of(row) != spec:
            news[spec.name] = spec.limited
        params = {
            "name": spec.name,
            "concurrency": spec.concurrency,
            "per_worker": spec.per_worker,
            "per_key": spec.per_key,
            "rate_n": spec.rate_n,
            "rate_period": spec.rate_period,
            "priority": 1 if spec.priority else 0,
            "limited": 1 if spec.limited else 0,
            "declared_by": declared_by,
        }
        tx.execute("upsert_queue", params)
    if specs:
        tx.notify(WORK)
    if news:  # workers that took the queue for one without limits must stop starting its work at birth
        tx.notify(QUEUES, news)  # which now have limits: a worker in this process knows before the next start
    return changed


def spec_of(row: Sequence[Any]) -> QueueSpec:
    """A `get_queue` / `list_queues` row's first seven columns."""
    name, concurrency, per_worker, per_key, rate_n, rate_period, priority = row[:7]
    period = None if rate_period is None else float(rate_period)
    return QueueSpec(name, concurrency, per_worker, per_key, rate_n, period, bool(priority))


def insert(tx: Tx, run: NewRun) -> RunRow | None:
    """Create a run started with a key, a priority or a dedup_key; None when created, else the run
    that holds its id or (unfinished) its dedup_key, and nothing is written (RunIdTaken when its id
    is held by a run being pruned, as a start's is)."""
    if run.dedup_key is not None:
        held = tx.one("run_by_dedup_key", {"queue": run.queue, "dedup_key": run.dedup_key})
        if held is not None:
            return run_row(held)
    params = {
        **insert_params(run),
        # The claim order is "priority DESC" (the column's, kept for every existing caller); a
        # client's priority is "lower first", so the column holds its negation.
        "priority": -(run.priority or 0),
        "queue_key": run.key,
        "dedup_key": run.dedup_key,
    }
    if tx.one("insert_queued_run", params) is not None:
        if run.trace is not None:
            tx.write("set_run_trace", {"id": run.id, "trace": run.trace})
        tx.notify(start_note(run.workflow, run.queue))
        return None
    existing = id_holder(run.id, tx.one("id_holder", {"id": run.id}))
    if existing is None and run.dedup_key is not None:  # a start with the same dedup_key won a race
        held = tx.one("run_by_dedup_key", {"queue": run.queue, "dedup_key": run.dedup_key})
        existing = None if held is None else run_row(held)
    assert existing is not None, f"run {run.id} was refused, yet neither its id nor its dedup_key is taken"
    return existing
