"""The Store, written once over a small `Database` adapter per backend.

Each public method is one transaction run on the adapter's thread(s); the adapters differ only in
connecting, transactions, parameter conversion and notifications. Lock order everywhere is "run row
first, then its steps", so an activation commit and an action completion never deadlock.
"""

from __future__ import annotations

import abc
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from cairn.errors import LeaseLost
from cairn.store.protocol import (
    ActionClaim,
    ActivationResult,
    RunClaim,
    RunRow,
    StepRow,
    WorkerInfo,
    WorkflowInfo,
)
from cairn.types import RunStatus, StepKind, StepStatus

T = TypeVar("T")
Params = Mapping[str, Any]
WORK = "work"


class Tx(abc.ABC):
    """One open transaction; queries are referenced by name."""

    def __init__(self) -> None:
        self.notes: set[str] = set()

    @abc.abstractmethod
    def execute(self, name: str, params: Params) -> int:
        """Run a statement; returns the affected row count."""

    @abc.abstractmethod
    def all(self, name: str, params: Params) -> list[tuple[Any, ...]]: ...

    def one(self, name: str, params: Params) -> tuple[Any, ...] | None:
        rows = self.all(name, params)
        return rows[0] if rows else None

    def many(self, name: str, params: Sequence[Params]) -> None:
        for p in params:
            self.execute(name, p)

    def notify(self, payload: str) -> None:
        """Wake listeners after commit (in this process directly, elsewhere through the backend)."""
        self.notes.add(payload)

    def now(self) -> float:
        row = self.one("now", {})
        assert row is not None
        return float(row[0])


class Database(abc.ABC):
    dialect: str
    url: str

    def __init__(self) -> None:
        self._listeners: list[Callable[[str], None]] = []
        self._lock = threading.Lock()

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def transaction(self, fn: Callable[[Tx], T], write: bool = True) -> T: ...

    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call `callback(payload)` (from any thread) on every notification; returns unsubscribe."""
        with self._lock:
            self._listeners.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._listeners:
                    self._listeners.remove(callback)

        return unsubscribe

    def _dispatch(self, payloads: set[str] | list[str]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for payload in payloads:
            for cb in listeners:
                cb(payload)


def run_row(r: Sequence[Any]) -> RunRow:
    return RunRow(
        id=r[0],
        workflow=r[1],
        status=RunStatus(r[2]),
        input=r[3],
        result=r[4],
        error=r[5],
        queue=r[6],
        parent_id=r[7],
        parent_seq=r[8],
        created_at=r[9],
        updated_at=r[10],
        started_at=r[11],
        completed_at=r[12],
        activations=r[13],
        properties=r[14],
        code_version=r[15],
        lease_owner=r[16],
        lease_token=r[17],
    )


def step_row(r: Sequence[Any]) -> StepRow:
    return StepRow(
        run_id=r[0],
        seq=r[1],
        kind=StepKind(r[2]),
        name=r[3],
        args=r[4],
        status=StepStatus(r[5]),
        result=r[6],
        error=r[7],
        attempt=r[8],
        delivered_in=r[9],
        delivered_at=r[10],
        fire_at=r[11],
        queue=r[12],
        options=r[13],
        memory_writes=r[14],
        logs=r[15],
        created_at=r[16],
        started_at=r[17],
        completed_at=r[18],
    )


_PARKED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.PAUSED)


class SqlStore:
    """Implements `cairn.store.protocol.Store` for every SQL backend."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.url = db.url

    async def open(self) -> None:
        await self.db.open()

    async def close(self) -> None:
        await self.db.close()

    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        return self.db.subscribe(callback)

    async def now(self) -> float:
        return await self.db.transaction(lambda tx: tx.now(), write=False)

    # --- runs ----------------------------------------------------------------------------------

    async def insert_run(
        self,
        run_id: str,
        workflow: str,
        input: str,
        queue: str,
        parent_id: str | None = None,
        parent_seq: int | None = None,
        code_version: str | None = None,
    ) -> tuple[RunRow, bool]:
        def tx_fn(tx: Tx) -> tuple[RunRow, bool]:
            now = tx.now()
            created = (
                tx.execute(
                    "insert_run",
                    {
                        "id": run_id,
                        "workflow": workflow,
                        "input": input,
                        "queue": queue,
                        "parent_id": parent_id,
                        "parent_seq": parent_seq,
                        "now": now,
                        "code_version": code_version,
                    },
                )
                == 1
            )
            if created:
                tx.notify(WORK)
            row = tx.one("get_run", {"id": run_id})
            assert row is not None
            return run_row(row), created

        return await self.db.transaction(tx_fn)

    async def get_run(self, run_id: str) -> RunRow | None:
        row = await self.db.transaction(lambda tx: tx.one("get_run", {"id": run_id}), write=False)
        return run_row(row) if row else None

    async def list_runs(self, status: str | None = None, workflow: str | None = None, limit: int = 50) -> list[RunRow]:
        params = {"status": status, "workflow": workflow, "limit": limit}
        rows = await self.db.transaction(lambda tx: tx.all("list_runs", params), write=False)
        return [run_row(r) for r in rows]

    async def list_steps(self, run_id: str) -> list[StepRow]:
        rows = await self.db.transaction(lambda tx: tx.all("list_steps", {"run_id": run_id}), write=False)
        return [step_row(r) for r in rows]

    async def get_memory(self, run_id: str) -> dict[str, str]:
        rows = await self.db.transaction(lambda tx: tx.all("get_memory", {"run_id": run_id}), write=False)
        return {k: v for k, v in rows}

    async def read_memory(self, run_id: str, key: str) -> str | None:
        row = await self.db.transaction(lambda tx: tx.one("read_memory", {"run_id": run_id, "key": key}), write=False)
        return None if row is None else str(row[0])

    async def property_history(self, run_id: str) -> list[tuple[int, str]]:
        rows = await self.db.transaction(lambda tx: tx.all("property_history", {"run_id": run_id}), write=False)
        return [(int(a), str(p)) for a, p in rows]

    async def send_signal(self, run_id: str, name: str, payload: str) -> bool:
        def tx_fn(tx: Tx) -> bool:
            now = tx.now()
            return _signal(tx, run_id, name, payload, now)

        return await self.db.transaction(tx_fn)

    # --- workflow activations -------------------------------------------------------------------

    async def claim_runs(
        self,
        worker: str,
        workflows: Sequence[str],
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
        cached: dict[str, int] | None = None,
    ) -> list[RunClaim]:
        def tx_fn(tx: Tx) -> list[RunClaim]:
            now = tx.now()
            rows = tx.all(
                "claim_runs",
                {
                    "worker": worker,
                    "now": now,
                    "lease": lease,
                    "limit": limit,
                    "workflows": list(workflows),
                    "any_queue": 1 if queues is None else 0,
                    "queues": list(queues or []),
                },
            )
            claims = []
            for r in rows:
                run = run_row(r)
                tx.execute("fire_due_timers", {"run_id": run.id, "now": now})
                skip = cached is not None and cached.get(run.id) == run.activations
                journal = [] if skip else [step_row(s) for s in tx.all("list_steps", {"run_id": run.id})]
                batch = [step_row(s) for s in tx.all("undelivered_steps", {"run_id": run.id})]
                signals = [(int(i), str(n), p) for i, n, p in tx.all("open_signals", {"run_id": run.id})]
                claims.append(RunClaim(run, run.lease_token, journal, batch, signals, skip, now))
            return claims

        return await self.db.transaction(tx_fn)

    async def commit_activation(self, claim: RunClaim, result: ActivationResult) -> None:
        await self.db.transaction(lambda tx: _commit_activation(tx, claim, result))

    async def release_run(self, claim: RunClaim) -> None:
        def tx_fn(tx: Tx) -> None:
            tx.execute("release_run", {"id": claim.run.id, "token": claim.token})
            tx.notify(WORK)

        await self.db.transaction(tx_fn)

    # --- action attempts ------------------------------------------------------------------------

    async def claim_actions(
        self,
        worker: str,
        names: Sequence[str],
        queues: Sequence[str] | None,
        limit: int,
        lease: float,
    ) -> list[tuple[ActionClaim, dict[str, str]]]:
        """Lease due attempts; each comes with a snapshot of its run's memory."""

        def tx_fn(tx: Tx) -> list[tuple[ActionClaim, dict[str, str]]]:
            now = tx.now()
            rows = tx.all(
                "claim_actions",
                {
                    "worker": worker,
                    "now": now,
                    "lease": lease,
                    "limit": limit,
                    "names": list(names),
                    "any_queue": 1 if queues is None else 0,
                    "queues": list(queues or []),
                },
            )
            claims = [
                ActionClaim(r[0], int(r[1]), r[2], r[3] or "{}", int(r[4]), json.loads(r[5]) if r[5] else None, r[6])
                for r in rows
            ]
            memory: dict[str, dict[str, str]] = {}
            if claims:
                for run_id, key, value in tx.all("memory_of_runs", {"run_ids": sorted({c.run_id for c in claims})}):
                    memory.setdefault(run_id, {})[key] = value
            return [(c, memory.get(c.run_id, {})) for c in claims]

        return await self.db.transaction(tx_fn)

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

        With `retry_delay` the step goes back to scheduled, due that many seconds from now."""

        def tx_fn(tx: Tx) -> bool:
            tx.one("lock_run", {"id": claim.run_id})  # run row first: the lock order of every commit
            now = tx.now()
            retrying = retry_delay is not None
            all_logs = list(logs)
            if logs:  # every attempt's lines stay with the step
                row = tx.one("step_logs", {"run_id": claim.run_id, "seq": claim.seq})
                all_logs = (json.loads(row[0]) if row and row[0] else []) + all_logs
            status = (
                StepStatus.SCHEDULED if retrying else (StepStatus.FAILED if error is not None else StepStatus.COMPLETED)
            )
            won = (
                tx.execute(
                    "complete_step",
                    {
                        "run_id": claim.run_id,
                        "seq": claim.seq,
                        "attempt": claim.attempt,
                        "status": status,
                        "result": result,
                        "error": error,
                        "memory_writes": json.dumps(list(memory_writes)) if memory_writes and not retrying else None,
                        "logs": json.dumps(all_logs) if all_logs else None,
                        "completed_at": None if retrying else now,
                        "due_at": now + retry_delay if retry_delay is not None else None,
                    },
                )
                == 1
            )
            if not won:
                return False
            if retrying:
                tx.notify(WORK)
                return True
            for key, value in memory_writes:
                tx.execute(
                    "upsert_memory", {"run_id": claim.run_id, "key": key, "value": value, "step": claim.seq, "now": now}
                )
            tx.execute("wake_run", {"id": claim.run_id, "now": now})
            tx.notify(WORK)
            return True

        return await self.db.transaction(tx_fn)

    async def next_wake(self, names: Sequence[str]) -> float | None:
        def tx_fn(tx: Tx) -> float | None:
            times = [tx.one("next_wake_runs", {}), tx.one("next_wake_actions", {"names": list(names)})]
            values = [float(t[0]) for t in times if t is not None and t[0] is not None]
            return min(values) if values else None

        return await self.db.transaction(tx_fn, write=False)

    # --- workers and definitions ----------------------------------------------------------------

    async def heartbeat(self, info: WorkerInfo, lease: float) -> None:
        def tx_fn(tx: Tx) -> None:
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
                },
            )
            tx.execute("extend_step_leases", {"worker": info.id, "until": now + lease})
            tx.execute("extend_run_leases", {"worker": info.id, "until": now + lease})

        await self.db.transaction(tx_fn)

    async def remove_worker(self, worker_id: str) -> None:
        def tx_fn(tx: Tx) -> None:
            now = tx.now()
            tx.execute("hand_over_steps", {"worker": worker_id, "now": now})
            tx.execute("hand_over_runs", {"worker": worker_id})
            tx.execute("delete_worker", {"id": worker_id})
            tx.notify(WORK)

        await self.db.transaction(tx_fn)

    async def list_workers(self) -> list[WorkerInfo]:
        rows = await self.db.transaction(lambda tx: tx.all("list_workers", {}), write=False)
        return [WorkerInfo(r[0], r[1], int(r[2]), r[3], float(r[4]), float(r[5]), int(r[6])) for r in rows]

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
                        "now": now,
                    }
                    for i in infos
                ],
            )

        await self.db.transaction(tx_fn)

    async def list_workflows(self) -> list[WorkflowInfo]:
        rows = await self.db.transaction(lambda tx: tx.all("list_workflows", {}), write=False)
        return [WorkflowInfo(*r) for r in rows]


def _signal(tx: Tx, run_id: str, name: str, payload: str | None, now: float) -> bool:
    if tx.execute("insert_signal", {"run_id": run_id, "name": name, "payload": payload, "now": now}) != 1:
        return False
    tx.execute("wake_run", {"id": run_id, "now": now})
    tx.notify(WORK)
    return True


def _commit_activation(tx: Tx, claim: RunClaim, res: ActivationResult) -> None:
    run = claim.run
    now = tx.now()
    if tx.execute("fence_run", {"id": run.id, "token": claim.token, "now": now}) != 1:
        raise LeaseLost(f"the lease on run {run.id} was lost; another worker owns it now")
    activation = run.activations + (1 if res.counts_as_activation else 0)
    for signal_id, seq in res.consumed_signals:
        tx.execute("consume_signal_into_step", {"run_id": run.id, "seq": seq, "signal_id": signal_id, "now": now})
        tx.execute("mark_signal_consumed", {"seq": seq, "signal_id": signal_id})
    tx.many(
        "deliver_step",
        [
            {"run_id": run.id, "seq": seq, "activation": activation, "delivered_at": res.delivered_at}
            for seq in res.delivered
        ],
    )
    for step in res.new_steps:
        _insert_step(tx, run, step, activation, now)
    for seq in res.cancelled:
        tx.execute("cancel_step", {"run_id": run.id, "seq": seq, "now": now})
    last_seq = max([s.seq for s in res.new_steps] + list(res.delivered) + [0])
    if res.properties is not None:
        tx.execute(
            "insert_properties",
            {
                "run_id": run.id,
                "activation": activation,
                "after_step": last_seq,
                "properties": res.properties,
            },
        )
    terminal = res.status in (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
    tx.execute(
        "finish_activation",
        {
            "id": run.id,
            "token": claim.token,
            "status": res.status,
            "result": res.result,
            "error": res.error,
            "activations": activation,
            "properties": res.properties,
            "now": now,
            "completed_at": now if terminal else None,
            "parked": 1 if res.status in _PARKED else 0,
            "wake_at": res.wake_at,
        },
    )
    if terminal and run.parent_id is not None and run.parent_seq is not None:
        tx.one("lock_run", {"id": run.parent_id})
        tx.execute(
            "resolve_parent_step",
            {
                "run_id": run.parent_id,
                "seq": run.parent_seq,
                "now": now,
                "status": StepStatus.COMPLETED
                if res.status == RunStatus.COMPLETED
                else (StepStatus.FAILED if res.status == RunStatus.FAILED else StepStatus.CANCELLED),
                "result": res.result,
                "error": res.error,
            },
        )
        tx.execute("wake_run", {"id": run.parent_id, "now": now})
    if res.status in _PARKED or res.status == RunStatus.WAITING:
        tx.notify(f"run:{run.id}")
    tx.notify(WORK)


def _insert_step(tx: Tx, run: RunRow, step: Any, activation: int, now: float) -> None:
    options = step.options
    due_at = step.fire_at if step.kind == StepKind.TIMER else now
    tx.execute(
        "insert_step",
        {
            "run_id": run.id,
            "seq": step.seq,
            "kind": step.kind,
            "name": step.name,
            "args": step.args,
            "status": step.status,
            "result": step.result,
            "delivered_in": 0 if step.delivered else None,
            "due_at": due_at if step.kind in (StepKind.ACTION, StepKind.TIMER) else None,
            "queue": step.queue,
            "options": json.dumps(options, sort_keys=True, separators=(",", ":")) if options is not None else None,
            "now": now,
            "completed_at": now if step.status != StepStatus.SCHEDULED else None,
        },
    )
    if step.signal_id is not None:
        tx.execute("mark_signal_consumed", {"seq": step.seq, "signal_id": step.signal_id})
    if step.kind == StepKind.MEMORY:
        tx.execute(
            "upsert_memory", {"run_id": run.id, "key": step.name, "value": step.args, "step": step.seq, "now": now}
        )
    elif step.kind == StepKind.SEND_SIGNAL:
        data = json.loads(step.args)
        _signal(tx, str(data["run_id"]), step.name, json.dumps(data.get("payload"), sort_keys=True), now)
    elif step.kind == StepKind.CHILD:
        _start_child(tx, run, step, now)


def _start_child(tx: Tx, run: RunRow, step: Any, now: float) -> None:
    child_id = str(step.options["run_id"])
    detached = bool(step.options.get("detached"))
    created = (
        tx.execute(
            "insert_run",
            {
                "id": child_id,
                "workflow": step.name,
                "input": step.args,
                "queue": step.queue or run.queue,
                "parent_id": run.id,
                "parent_seq": None if detached else step.seq,
                "now": now,
                "code_version": None,
            },
        )
        == 1
    )
    if created or detached:
        return
    # The id names an existing run: wait for it if it is still going, else take its outcome now.
    if tx.execute("adopt_child", {"id": child_id, "parent_id": run.id, "parent_seq": step.seq}) == 1:
        return
    row = tx.one("get_run", {"id": child_id})
    assert row is not None
    child = run_row(row)
    if child.status.is_terminal:
        tx.execute(
            "resolve_parent_step",
            {
                "run_id": run.id,
                "seq": step.seq,
                "now": now,
                "status": StepStatus.COMPLETED if child.status == RunStatus.COMPLETED else StepStatus.FAILED,
                "result": child.result,
                "error": child.error,
            },
        )
