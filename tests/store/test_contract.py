"""The Store Protocol's contract, method by method, on both backends (SQLite and a real PostgreSQL):
what every caller of the seam (client, worker, web) relies on. A method added to the Protocol
without a test here fails `test_every_store_method_is_covered`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

import cairn
from cairn import RunStatus
from cairn.errors import IllegalTransition, LeaseLost
from cairn.records import ActivationResult, NewRun, NewStep
from cairn.schedules import ScheduleSpec
from cairn.serialization import error_text
from cairn.store.base import Started, call_soon_here
from cairn.store.protocol import Commit, Completion, RunFilters, Store, WorkerInfo, WorkflowInfo
from cairn.store.sql_store import SqlStore
from cairn.types import StepKind, StepStatus
from tests.conftest import eventually

pytestmark = pytest.mark.timeout(60)
F = TypeVar("F", bound=Callable[..., Any])
COVERED: set[str] = set()
WF = "contract.flow"
ACTION = "contract.act"


def covers(*methods: str) -> Callable[[F], F]:
    COVERED.update(methods)
    return lambda fn: fn


@pytest.fixture
async def store(client: cairn.Client) -> Store:
    assert isinstance(client.store, Store)
    return client.store


def new(run_id: str, workflow: str = WF) -> NewRun:
    return NewRun(run_id, workflow, '{"x":1}', "default")


def info(worker: str, *, workflows: tuple[str, ...] = (WF,), actions: tuple[str, ...] = (ACTION,)) -> WorkerInfo:
    return WorkerInfo(worker, "host", 1, "*", time.time(), time.time(), 0, workflows, actions)


async def claim_one(store: Store, worker: str = "w1") -> Any:
    work = await store.claim_work(worker, [WF], [ACTION], None, 10, 10, 30.0)
    assert len(work.runs) == 1
    return work.runs[0]


def test_every_store_method_is_covered() -> None:
    members = {n for n in dir(Store) if not n.startswith("_")}
    assert members - COVERED == set(), "Store methods without a contract test"


@covers("open", "close", "url", "now")
async def test_open_is_shared_and_close_reopens(db_url: str) -> None:
    other = cairn.Client(db_url).store
    await asyncio.gather(*(other.open() for _ in range(5)))
    assert other.url == db_url
    assert abs(await other.now() - time.time()) < 5
    await other.close()
    assert abs(await other.now() - time.time()) < 5  # used after close: opened again
    await other.close()


@covers("insert_run", "get_run", "list_runs", "count_runs", "runs_by_ids")
async def test_runs_are_inserted_once_and_listed(store: Store) -> None:
    assert await store.insert_run(new("r1")) is None
    row = await store.get_run("r1")
    assert row is not None and (row.workflow, row.status, row.lease_token) == (WF, RunStatus.PENDING, 0)
    again = await store.insert_run(NewRun("r1", WF, '{"x":2}', "default"))
    assert again is not None and again.input == '{"x":1}'  # the run that holds the id, unchanged
    assert await store.insert_run(new("r3"), owner="w9", lease=30.0, now=time.time()) is None
    born = await store.get_run("r3")
    assert born is not None and (born.lease_owner, born.lease_token) == ("w9", 1)
    await store.insert_run(new("r2", "contract.other"))
    assert await store.get_run("nope") is None
    assert [r.id for r in await store.list_runs()] == ["r2", "r3", "r1"]  # newest first
    assert [r.id for r in await store.list_runs(workflow=WF)] == ["r3", "r1"]
    assert [r.id for r in await store.list_runs(status="pending", limit=1)] == ["r2"]
    assert await store.count_runs("pending") == 3 and await store.count_runs("completed") == 0
    assert sorted(r.id for r in await store.runs_by_ids(["r1", "r2", "nope"])) == ["r1", "r2"]
    assert await store.runs_by_ids(["r1", "r2"], finished_only=True) == []
    await store.cancel("r2")
    assert [r.id for r in await store.runs_by_ids(["r1", "r2"], finished_only=True)] == ["r2"]


@covers("claim_work", "commit_activation", "list_steps", "list_events", "property_history", "release_run")
async def test_a_claimed_run_commits_under_its_lease_once(store: Store) -> None:
    await store.insert_run(new("r1"))
    claim = await claim_one(store)
    assert (claim.run.id, claim.token, claim.batch) == ("r1", 1, [])
    step = NewStep(1, StepKind.ACTION, ACTION, '{"x":1}')
    result = ActivationResult(new_steps=[step], properties='{"stage":"one"}')
    await store.commit_activation(Commit(claim.run, claim.token, result))
    with pytest.raises(LeaseLost):  # the same token again: the first commit advanced it
        await store.commit_activation(Commit(claim.run, claim.token, ActivationResult()))
    steps = await store.list_steps("r1")
    assert [(s.seq, s.kind, s.status) for s in steps] == [(1, StepKind.ACTION, StepStatus.SCHEDULED)]
    assert await store.property_history("r1") == [(1, '{"stage":"one"}')]
    kinds = [e.kind for e in await store.list_events("r1")]
    assert kinds == ["started", "step.scheduled"]
    work = await store.claim_work("w1", [WF], [ACTION], None, 10, 10, 30.0)
    assert work.runs == [] and [a.seq for a, _ in work.actions] == [1]
    await store.insert_run(new("r2"))
    released = await claim_one(store, "w2")
    await store.release_run(released)
    assert (await claim_one(store, "w3")).run.id == "r2"  # given back: claimable again at once


@covers("run_sizes", "list_steps", "list_events", "property_history")
async def test_a_runs_journal_reads_a_page_at_a_time(store: Store) -> None:
    await store.insert_run(new("r1"))
    for n in range(3):  # three activations: two steps and a snapshot each
        claim = await claim_one(store)
        steps = [NewStep(2 * n + k, StepKind.ACTION, ACTION, f'{{"x":{2 * n + k}}}') for k in (1, 2)]
        result = ActivationResult(new_steps=steps, properties=f'{{"n":{n}}}', status=RunStatus.WAITING, wake_at=0.0)
        await store.commit_activation(Commit(claim.run, claim.token, result))  # due again at once
    every = await store.list_steps("r1")
    assert [s.seq for s in every] == [1, 2, 3, 4, 5, 6]
    assert [s.seq for s in await store.list_steps("r1", 2, 3)] == [3, 4, 5]
    assert [s.seq for s in await store.list_steps("r1", 4)] == [5, 6]
    assert [s.seq for s in await store.list_steps("r1", last=2)] == [5, 6]
    assert await store.list_steps("r1", 6, 10) == []
    events = await store.list_events("r1")
    assert [e.id for e in await store.list_events("r1", events[1].id, 2)] == [e.id for e in events[2:4]]
    assert await store.list_events("r1", last=3) == events[-3:]
    assert await store.list_events("r1", steps=(3, 4)) == [e for e in events if e.step in (3, 4)] != []
    snapshots = await store.property_history("r1")
    assert [p for _, p in snapshots] == ['{"n":0}', '{"n":1}', '{"n":2}']
    assert await store.property_history("r1", last=2) == snapshots[-2:]
    assert await store.run_sizes("r1") == (6, len(events), 3)
    assert await store.run_sizes("nope") == (0, 0, 0)


@covers("complete_action", "get_memory", "run_logs")
async def test_an_attempt_is_recorded_once_fenced_by_its_number(store: Store) -> None:
    await store.insert_run(new("r1"))
    claim = await claim_one(store)
    step = NewStep(1, StepKind.ACTION, ACTION, '{"x":1}')
    await store.commit_activation(Commit(claim.run, claim.token, ActivationResult(new_steps=[step])))
    (attempt, memory), *_ = (await store.claim_work("w1", [WF], [ACTION], None, 0, 10, 30.0)).actions
    assert memory == {}
    assert await store.complete_action(attempt, None, '{"message":"flaky"}', 0.0, [], ["try 1"])  # a retry
    (second, _), *_ = (await store.claim_work("w1", [WF], [ACTION], None, 0, 10, 30.0)).actions
    assert second.attempt == 2
    assert not await store.complete_action(attempt, "1", None, None, [], [])  # the first attempt lost the step
    assert await store.complete_action(second, "42", None, None, [("k", '"v"')], ["try 2"])
    (done,) = await store.list_steps("r1")
    assert (done.status, done.result, done.attempt, json.loads(done.logs or "[]")) == (
        StepStatus.COMPLETED,
        "42",
        2,
        ["try 1", "try 2"],
    )
    assert await store.get_memory("r1") == {"k": '"v"'}
    assert [(seq, name, json.loads(text)) for seq, name, text in await store.run_logs("r1")] == [
        (1, ACTION, ["try 1", "try 2"])
    ]
    assert await store.run_logs("nope") == []
    assert (await claim_one(store)).batch[0].seq == 1  # the result woke the run


@covers("send_signal", "add_event")
async def test_signals_are_buffered_for_existing_runs_only(store: Store) -> None:
    assert not await store.send_signal("nope", "go", "1")
    await store.insert_run(new("r1"))
    assert await store.send_signal("r1", "go", '{"n":1}')
    await store.add_event("r1", "blocked", reason="testing")
    events = [(e.kind, json.loads(e.detail or "{}")) for e in await store.list_events("r1")]
    assert events == [("signal.received", {"name": "go"}), ("blocked", {"reason": "testing"})]


@covers("pause", "resume", "cancel", "retry", "fork")
async def test_control_operations_follow_the_transition_rules(store: Store) -> None:
    await store.insert_run(new("r1"))
    assert await store.pause("r1") == RunStatus.PAUSED
    assert await store.pause("r1") == RunStatus.PAUSED  # idempotent
    assert await store.resume("r1") == RunStatus.PENDING  # it never started: pending again
    assert await store.resume("r1") == RunStatus.PENDING  # idempotent
    with pytest.raises(ValueError, match="from_step must be between 0 and 0"):
        await store.fork("r1", 99)
    forked = await store.fork("r1", 0, "r1-fork")
    assert forked == "r1-fork" and (await store.get_run("r1-fork")) is not None
    assert await store.cancel("r1") == RunStatus.CANCELLED
    with pytest.raises(IllegalTransition):
        await store.retry("r1")  # a cancelled run cannot be retried


@covers()
async def test_a_claim_names_the_busy_runs_that_are_due(store: Store) -> None:
    """A run busy in its worker is not claimed; the claim says which busy runs are due (their news
    came while they were busy), so that the worker claims them once they are not."""
    assert await store.insert_run(new("r1"), owner="w1", lease=30.0) is None  # due at once, held by w1
    assert await store.insert_run(new("r2")) is None  # due, not busy: claimed
    work = await store.claim_work("w1", [WF], [ACTION], None, 10, 10, 30.0, busy=["r1"])
    assert [c.run.id for c in work.runs] == ["r2"] and work.busy_due == frozenset({"r1"})
    idle = await store.claim_work("w1", [WF], [ACTION], None, 10, 10, 30.0)
    assert idle.busy_due == frozenset()


@covers("time_out")
async def test_a_run_is_timed_out_only_past_its_timeout_and_while_it_goes_on(store: Store) -> None:
    """Counted from its start (its first activation), by the database's clock: a run pending (in its
    queue, say) has not started, and is not timed out however long ago it was created."""
    await store.insert_run(new("r1"))
    events = await store.list_events("r1")
    assert await store.time_out("r1", 0.0) == RunStatus.PENDING  # not started
    claim = await claim_one(store)
    await store.commit_activation(Commit(claim.run, claim.token, ActivationResult(status=RunStatus.WAITING)))
    started = await store.get_run("r1")
    assert started is not None and started.started_at is not None and started.timeout_from is None
    assert started.deadline(10.0) == started.started_at + 10.0
    events = await store.list_events("r1")
    assert await store.time_out("r1", 3600.0) == RunStatus.WAITING  # not yet, by the database's clock
    assert await store.list_events("r1") == events
    assert await store.time_out("r1", 0.0) == RunStatus.CANCELLED
    run = await store.get_run("r1")
    assert run is not None and run.error is not None and "WorkflowTimeout" in run.error
    (event,) = [e for e in await store.list_events("r1") if e.kind == "cancelled"]
    assert json.loads(event.detail or "{}")["reason"] == "timeout"
    assert await store.time_out("r1", 0.0) == RunStatus.CANCELLED  # over: nothing more happens
    await store.insert_run(new("r2"))
    assert await store.cancel("r2") == RunStatus.CANCELLED
    assert await store.time_out("r2", 0.0) == RunStatus.CANCELLED
    row = await store.get_run("r2")
    assert row is not None and row.error is not None and "WorkflowTimeout" not in row.error


@covers("time_out", "retry")
async def test_a_retry_opens_a_new_timeout_window(store: Store) -> None:
    """A retried run's timeout counts again from the retry; its `started_at`, the clock its replays
    run at, stays."""
    await store.insert_run(new("r1"))
    claim = await claim_one(store)
    failed = ActivationResult(status=RunStatus.FAILED, error=error_text(RuntimeError("boom")))
    await store.commit_activation(Commit(claim.run, claim.token, failed))
    first = await store.get_run("r1")
    assert first is not None and first.started_at is not None and first.completed_at is not None
    assert await store.retry("r1") == RunStatus.RUNNING
    retried = await store.get_run("r1")
    assert retried is not None and retried.started_at == first.started_at
    assert retried.timeout_from is not None and retried.timeout_from >= first.completed_at
    assert retried.deadline(3600.0) == retried.timeout_from + 3600.0
    assert await store.time_out("r1", 3600.0) == RunStatus.RUNNING  # a whole hour again
    claim = await claim_one(store)
    await store.commit_activation(Commit(claim.run, claim.token, ActivationResult(status=RunStatus.WAITING)))
    again = await store.get_run("r1")
    assert again is not None and again.started_at == first.started_at and again.timeout_from == retried.timeout_from
    assert await store.time_out("r1", 3600.0) == RunStatus.WAITING
    assert await store.time_out("r1", 0.0) == RunStatus.CANCELLED


@covers()
async def test_a_heartbeat_names_the_attempts_cancelled_with_their_run(store: Store) -> None:
    """A worker learns at its heartbeat which of the attempts it runs belong to a run cancelled
    (or timed out) since, and stops them."""
    assert await store.insert_run(new("r1"), owner="w1", lease=30.0) is None
    born = await store.get_run("r1")
    assert born is not None
    steps = [NewStep(1, StepKind.ACTION, ACTION, '{"x":1}'), NewStep(2, StepKind.ACTION, ACTION, '{"x":2}')]
    result = ActivationResult(status=RunStatus.RUNNING, new_steps=steps)
    await store.commit_activation(
        Commit(born, born.lease_token, result, births=frozenset({1, 2}), owner="w1", lease=30.0)
    )
    running = [("r1", 1), ("r1", 2)]
    assert await store.heartbeat(info("w1"), 30.0, runs=["r1"], attempts=running) == set()
    assert await store.heartbeat(info("w1"), 30.0) == set()  # nothing running: nothing to stop
    await store.cancel("r1")
    assert await store.heartbeat(info("w1"), 30.0, runs=["r1"], attempts=running) == {("r1", 1), ("r1", 2)}
    assert await store.heartbeat(info("w1"), 30.0, attempts=[("r1", 1)]) == {("r1", 1)}


@covers("heartbeat", "list_workers", "remove_worker", "unserved", "register_workflows", "list_workflows")
async def test_workers_register_what_they_serve(store: Store) -> None:
    await store.register_workflows([WorkflowInfo(WF, "a flow", '{"type":"object"}', "default")])
    assert [w.name for w in await store.list_workflows()] == [WF]
    await store.insert_run(new("r1"))
    await store.insert_run(new("r2", "contract.other"))
    assert set(await store.unserved()) == {"r1", "r2"}  # nobody is live
    await store.heartbeat(info("w1"), 30.0)
    (live,) = await store.list_workers()
    assert (live.id, live.workflows, live.actions) == ("w1", (WF,), (ACTION,))
    unserved = await store.unserved(["r1", "r2"])
    assert set(unserved) == {"r2"} and "contract.other" in unserved["r2"] and "w1" in unserved["r2"]
    await store.remove_worker("w1")
    assert await store.list_workers() == []


@covers("subscribe_key", "notifies_across_processes", "refused")
async def test_commits_notify_subscribers_in_this_process(store: Store) -> None:
    seen: list[object] = []
    unsubscribe = store.subscribe_key("work", seen.append)
    await store.insert_run(new("r1"))
    unsubscribe()
    await store.insert_run(new("r2"))
    assert seen == [Started(WF, "default")]  # what it started: a worker of other work sleeps on
    assert isinstance(store.notifies_across_processes, bool)
    assert store.refused(LeaseLost("fence")) and not store.refused(ConnectionError("gone"))


@covers("subscribe_key")
async def test_a_listener_that_fails_fails_neither_the_commit_nor_the_other_listeners(store: Store) -> None:
    """A result waiter of a loop another thread's `asyncio.run` has just closed (it unsubscribes as
    that loop ends, after a commit read its listeners): telling it raised, which failed the commit
    that had landed (its caller retried a start that was there) and skipped the listeners after it."""
    gone = asyncio.new_event_loop()
    gone.close()
    seen: list[object] = []
    store.subscribe_key("work", lambda _detail: call_soon_here(gone, lambda: None))
    store.subscribe_key("work", lambda _detail: 1 / 0)
    store.subscribe_key("work", seen.append)
    await store.insert_run(new("r1"))
    assert seen == [Started(WF, "default")]
    assert await store.get_run("r1") is not None


@covers()
async def test_a_commit_that_must_leave_the_one_statement_path_is_applied_once(store: Store) -> None:
    """The rerunnable contract: on PostgreSQL an activation commit is built on the event loop as
    one statement; one that needs another statement (a cancellation) stops before sending anything
    and runs again from the start on a connection thread. Nothing of the first try may land twice."""
    await store.insert_run(new("r1"))
    claim = await claim_one(store)
    steps = [NewStep(1, StepKind.ACTION, ACTION, '{"x":1}'), NewStep(2, StepKind.ACTION, ACTION, '{"x":2}')]
    await store.commit_activation(Commit(claim.run, claim.token, ActivationResult(new_steps=steps)))
    after = (await store.get_run("r1")) or claim.run
    await store.commit_activation(Commit(after, after.lease_token, ActivationResult(cancelled=[2])))
    kinds = [e.kind for e in await store.list_events("r1")]
    assert kinds == ["started", "step.scheduled", "step.scheduled", "step.cancelled"]
    assert [s.status for s in await store.list_steps("r1")] == [StepStatus.SCHEDULED, StepStatus.CANCELLED]


@covers()
async def test_rows_given_out_of_kind_order_are_all_applied(store: Store) -> None:
    """The row-order contract: a commit's one-row writes are held and applied by kind; rows that come
    back to an earlier kind (two results, each with memory writes) are applied all the same."""
    await store.insert_run(new("r1"))
    claim = await claim_one(store)
    steps = [NewStep(1, StepKind.ACTION, ACTION, '{"x":1}'), NewStep(2, StepKind.ACTION, ACTION, '{"x":2}')]
    owner = "w1"
    await store.commit_activation(Commit(claim.run, claim.token, ActivationResult(new_steps=steps), owner=owner))
    work = await store.claim_work(owner, [WF], [ACTION], None, 0, 10, 30.0)
    attempts = sorted((a for a, _ in work.actions), key=lambda a: a.seq)
    completions = [
        Completion(attempts[0], "10", None, [("a", "1"), ("shared", '"first"')]),
        Completion(attempts[1], "20", None, [("b", "2"), ("shared", '"second"')]),
    ]
    row = (await store.get_run("r1")) or claim.run
    result = ActivationResult(delivered=[1, 2], delivered_at=time.time())
    await store.commit_activation(Commit(row, row.lease_token, result, completions, owner=owner))
    assert await store.get_memory("r1") == {"a": "1", "b": "2", "shared": '"second"'}
    assert [(s.result, s.status) for s in await store.list_steps("r1")] == [
        ("10", StepStatus.COMPLETED),
        ("20", StepStatus.COMPLETED),
    ]


@covers("runs_page", "run_counts", "last_steps", "list_children")
async def test_runs_page_by_keyset_with_counts_children_and_latest_steps(store: Store) -> None:
    for i in range(5):
        await store.insert_run(new(f"p{i}"))
    first = await store.runs_page(RunFilters(), True, None, 2)
    assert [r.id for r in first] == ["p4", "p3"]
    after = (first[-1].created_at, first[-1].id)
    assert [r.id for r in await store.runs_page(RunFilters(), True, after, 10)] == ["p2", "p1", "p0"]
    assert [r.id for r in await store.runs_page(RunFilters(id_prefix="p1"), False, None, 10)] == ["p1"]
    assert await store.run_counts("status") == [("", "pending", 5)]
    assert await store.run_counts("workflow") == [(WF, "pending", 5)]
    with pytest.raises(ValueError):
        await store.run_counts("input")
    claim = (await store.claim_work("w1", [WF], [ACTION], None, 1, 0, 30.0)).runs[0]
    steps = [
        NewStep(1, StepKind.ACTION, ACTION, "{}"),
        NewStep(2, StepKind.CHILD, WF, '{"x":2}', options={"run_id": "kid"}),
    ]
    await store.commit_activation(Commit(claim.run, claim.token, ActivationResult(new_steps=steps)))
    assert {k: s.seq for k, s in (await store.last_steps([claim.run.id, "p0"])).items()} == {claim.run.id: 2}
    assert [c.id for c in await store.list_children(claim.run.id, 10)] == ["kid"]


@covers("prune")
async def test_prune_deletes_old_finished_runs_in_batches_keeping_parents_of_live_runs(store: Store) -> None:
    for run_id in ("old1", "old2", "parent", "live"):
        await store.insert_run(new(run_id))
    await store.send_signal("old1", "go", "1")  # something recorded with the run goes with it
    for run_id in ("old1", "old2"):
        await store.cancel(run_id)
    await store.cancel("parent")
    raw_child = NewRun("kid", WF, "{}", "default", parent_id="parent", parent_seq=1)
    await store.insert_run(raw_child)
    cutoff = await store.now() + 1
    assert await store.prune(cutoff, "completed", 10) == 0  # none completed
    assert await store.prune(cutoff, None, 1) == 1  # one at most
    assert await store.prune(cutoff, None, 10) == 1  # the other; the parent of a live run stays
    assert {r.id for r in await store.list_runs(limit=10)} == {"parent", "live", "kid"}
    assert await store.list_events("old1") == [] and await store.list_events("old2") == []
    await store.cancel("kid")
    assert await store.prune(await store.now() + 1, None, 10) == 2  # now the parent goes too (and the kid)


@covers("clock")
async def test_the_database_clock_follows_the_stores_clock(store: Store) -> None:
    from cairn.clock import SYSTEM, SkippingClock

    assert store.clock is SYSTEM
    clock = SkippingClock()
    store.clock = clock
    try:
        clock.advance(86_400)
        assert await store.now() - time.time() > 86_399  # cairn_now() on both backends
        assert await store.insert_run(new("r-clock")) is None
        run = await store.get_run("r-clock")
        assert run is not None and run.created_at - time.time() > 86_399
    finally:
        store.clock = SYSTEM
    assert abs(await store.now() - time.time()) < 5


@covers("run_trace")
async def test_a_runs_trace_context_is_stored_and_a_child_inherits_its_parents(store: Store) -> None:
    traced = NewRun("r-traced", WF, '{"x":1}', "default", trace='{"traceparent": "00-ab-cd-01"}')
    await store.insert_run(traced)
    await store.insert_run(NewRun("r-child", WF, '{"x":1}', "default", parent_id="r-traced", parent_seq=1))
    await store.insert_run(new("r-plain"))
    assert await store.run_trace("r-traced") == (WF, '{"traceparent": "00-ab-cd-01"}')
    assert await store.run_trace("r-child") == (WF, '{"traceparent": "00-ab-cd-01"}')
    assert await store.run_trace("r-plain") == (WF, None)
    assert await store.run_trace("nope") is None


@covers("register_actions", "list_actions")
async def test_actions_are_registered_with_their_human_name_and_description(store: Store) -> None:
    from cairn.store.protocol import ActionInfo

    await store.register_actions([ActionInfo("b.charge", "Charge Card", "Charge via Stripe", "default")])
    await store.register_actions(
        [
            ActionInfo("b.charge", "Charge the card", "Charge via Stripe", "billing"),
            ActionInfo("a.x", "x", "", "default"),
        ]
    )
    assert await store.list_actions() == [
        ActionInfo("a.x", "x", "", "default"),
        ActionInfo("b.charge", "Charge the card", "Charge via Stripe", "billing"),
    ]


def leases(db_url: str, run_id: str) -> tuple[float | None, list[float | None]]:
    """The run's lease_until and its steps' due_at, read from the database itself (the records
    carry neither: only the database judges leases)."""
    if db_url.startswith("sqlite"):
        import sqlite3

        from cairn.store.sqlite import sqlite_path

        with contextlib.closing(sqlite3.connect(sqlite_path(db_url))) as conn:
            run = conn.execute("SELECT lease_until FROM cairn_runs WHERE id = ?", (run_id,)).fetchone()
            steps = conn.execute("SELECT due_at FROM cairn_steps WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
    else:
        import psycopg

        with psycopg.connect(db_url) as pg:
            run = pg.execute("SELECT lease_until FROM cairn_runs WHERE id = %s", (run_id,)).fetchone()
            steps = pg.execute("SELECT due_at FROM cairn_steps WHERE run_id = %s ORDER BY seq", (run_id,)).fetchall()
    assert run is not None
    return run[0], [s[0] for s in steps]


@covers()
async def test_leases_run_from_the_databases_clock_not_the_committers(store: Store, db_url: str) -> None:
    """SPEC 6: lease expiry is judged by the database's clock. A commit retried after an outage
    carries the `now` it was built with; a lease counted from that would have run out as it landed,
    and another worker would run the same action. Each lease a write grants ends `lease` seconds
    after the database's now as it is written, whatever the committer believed the time was."""
    stale = time.time() - 3600.0
    lease = 30.0
    before = await store.now()
    assert await store.insert_run(new("r1"), owner="w1", lease=lease, now=stale) is None
    born = await store.get_run("r1")
    until, _ = leases(db_url, "r1")
    assert born is not None and until is not None and until >= before + lease
    step = NewStep(1, StepKind.ACTION, ACTION, '{"x":1}')
    before = await store.now()
    result = ActivationResult(status=RunStatus.RUNNING, new_steps=[step])
    await store.commit_activation(
        Commit(born, born.lease_token, result, births=frozenset({1}), owner="w1", lease=lease, now=stale)
    )
    after = await store.now()
    run = await store.get_run("r1")
    assert run is not None and run.lease_owner == "w1"
    (running,) = await store.list_steps("r1")
    assert running.status == StepStatus.RUNNING
    until, (due,) = leases(db_url, "r1")
    assert until is not None and before + lease <= until <= after + lease
    assert due is not None and before + lease <= due <= after + lease
    # Nobody else can take the run or its running attempt while those leases last.
    other = await store.claim_work("w2", [WF], [ACTION], None, 10, 10, lease)
    assert other.runs == [] and other.actions == []
    before = await store.now()
    await store.heartbeat(info("w1"), lease, runs=["r1"], attempts=[("r1", 1)])
    until, (due,) = leases(db_url, "r1")
    assert until is not None and until >= before + lease and due is not None and due >= before + lease


@covers()
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_commit_cut_off_on_its_way_lands_once(store: Store, db_url: str) -> None:
    """A commit whose connection dies while the server holds it (a restart, an administrator's
    pg_terminate_backend) has an unknown outcome. The store settles it when the database answers:
    the run still at the commit's token means it never landed, so it is sent again and lands
    once, instead of the worker letting the run go until its lease runs out."""
    claim = await _cut_off_and_sent_again(store, db_url)
    run = await store.get_run("r1")
    assert run is not None and run.lease_token == claim.token + 1  # advanced once: landed once
    assert [(s.seq, s.status) for s in await store.list_steps("r1")] == [(1, StepStatus.SCHEDULED)]
    assert [e.kind for e in await store.list_events("r1")] == ["started", "step.scheduled"]


@covers()
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_commit_cut_off_is_settled_when_its_read_is_cut_off_too(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a restart the connections die one after another: the read that settles a cut-off commit
    may lose its own connection at its COMMIT. A read applies nothing, so it is read again, and the
    commit lands once instead of being given up (a CI run's restart test met this)."""
    import psycopg

    from cairn.store.base import Database
    from cairn.store.postgres import PostgresDatabase, _PgTx

    cut_off = asyncio.Event()
    reads_to_cut = [1]  # the first read after the commit's cut: the one that settles it
    run_in_tx = PostgresDatabase._run

    def cut_at_commit(db: PostgresDatabase, fn: Callable[[Any], Any], write: bool = True) -> Any:
        def read_then_lose_the_connection(tx: _PgTx) -> Any:
            value = fn(tx)
            assert tx._conn is not None
            with psycopg.connect(db_url, autocommit=True) as admin:  # gone before COMMIT is sent
                admin.execute("SELECT pg_terminate_backend(%s, 10000)", (tx._conn.info.backend_pid,))
            return value

        if write or not reads_to_cut or not cut_off.is_set():
            return run_in_tx(db, fn, write)
        reads_to_cut.pop()
        return run_in_tx(db, read_then_lose_the_connection, write)

    monkeypatch.setattr(PostgresDatabase, "_run", cut_at_commit)
    # Reads on connection threads, in transactions whose COMMIT can be cut (one on the event loop
    # is a lone statement: lost, it is sent again on a thread; see test_reads_on_the_loop).
    monkeypatch.setattr(PostgresDatabase, "read", Database.read)
    claim = await _cut_off_and_sent_again(store, db_url, cutting=cut_off.set)
    assert reads_to_cut == [], "the settling read was not cut off"
    run = await store.get_run("r1")
    assert run is not None and run.lease_token == claim.token + 1  # advanced once: landed once


async def _cut_off_and_sent_again(store: Store, db_url: str, cutting: Callable[[], None] = lambda: None) -> Any:
    """A run's commit waiting on its row's lock has its connection terminated (`cutting` called
    just before); it must be sent again, and lands once the lock is let go. The claim it was for."""
    import psycopg

    await store.insert_run(new("r1"))
    claim = await claim_one(store)
    steps = [NewStep(1, StepKind.ACTION, ACTION, '{"x":1}')]
    commit = Commit(claim.run, claim.token, ActivationResult(new_steps=steps), owner="w1", lease=30.0, now=time.time())
    with psycopg.connect(db_url, autocommit=True) as blocker, psycopg.connect(db_url, autocommit=True) as admin:
        blocker.execute("BEGIN")
        blocker.execute("SELECT 1 FROM cairn_runs WHERE id = 'r1' FOR UPDATE")  # the commit's fence waits on it
        landing = asyncio.ensure_future(store.commit_activation(commit))

        pid = await eventually(lambda: _waiting_on_a_lock(admin), what="the commit waiting on the run's row")
        cutting()
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))  # cut off with the commit on the server
        # Not given up: sent again on another connection, where it waits anew.
        await eventually(lambda: _waiting_on_a_lock(admin, pid), what="the commit sent again")
        blocker.execute("ROLLBACK")
        await asyncio.wait_for(landing, 30)
    return claim


async def _waiting_on_a_lock(admin: Any, other_than: int = 0) -> int | None:
    """The backend of this database waiting on a lock (but `other_than`), if any."""
    row = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid <> %s "
        "AND datname = current_database()",
        (other_than,),
    ).fetchone()
    return None if row is None else int(row[0])


@covers()
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_a_start_cut_off_on_its_way_lands_once(store: Store, db_url: str) -> None:
    """A run's insert cut off on the server is settled like a commit: no run there means it never
    landed, so it is sent again; the start does not fail with a lost connection."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as blocker, psycopg.connect(db_url, autocommit=True) as admin:
        blocker.execute("BEGIN")  # the same id, not yet committed: the start's insert waits to see how it ends
        blocker.execute(
            "INSERT INTO cairn_runs (id, workflow, status, input, created_at, updated_at) "
            "VALUES ('r1', 'other.flow', 'pending', '{}', 0, 0)"
        )
        starting = asyncio.ensure_future(store.insert_run(new("r1")))
        pid = await eventually(lambda: _waiting_on_a_lock(admin), what="the insert waiting on the other one")
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await eventually(lambda: _waiting_on_a_lock(admin, pid), what="the insert sent again")
        blocker.execute("ROLLBACK")
        assert await asyncio.wait_for(starting, 30) is None  # created
    (run,) = await store.list_runs()
    assert (run.id, run.workflow) == ("r1", WF)


@covers()
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("landed", [True, False], ids=["landed", "lost"])
async def test_a_keyed_start_cut_off_at_its_commit_is_made_once(
    store: Store, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    """A start with a key (a queue's insert) whose COMMIT is cut off: its caller got the driver's
    error, whether the run was there or not, and starting again made a second run. Settled, the
    start answers as if nothing had happened, and the run is made once either way."""
    import dataclasses

    with _commit_cut_off(monkeypatch, landed) as cuts:
        assert await store.insert_run(dataclasses.replace(new("k1"), key="customer-7")) is None
    assert cuts == [], "the start's commit was not cut off"
    assert [r.id for r in await store.list_runs()] == ["k1"]


@contextlib.contextmanager
def _commit_cut_off(monkeypatch: pytest.MonkeyPatch, landed: bool) -> Iterator[list[bool]]:
    """The next transaction's COMMIT cut off as a terminated backend cuts it: its connection fails
    with the error psycopg raises then, after the COMMIT went through (`landed`) or before it
    reached the server. Yields the cuts still to come (empty once it happened)."""
    import psycopg

    from cairn.store.postgres import _PgTx

    armed = [True]
    real_commit = _PgTx.commit

    def commit(tx: _PgTx, origin: str) -> None:
        if not armed:
            return real_commit(tx, origin)
        armed.pop()
        if landed:
            real_commit(tx, origin)
            tx.end()  # COMMIT sent and its outcome read: applied
        else:
            tx.committing = True  # handed over, never sent: rolled back with the connection
        raise psycopg.OperationalError("consuming input failed: server closed the connection unexpectedly")

    monkeypatch.setattr(_PgTx, "commit", commit)
    yield armed
    monkeypatch.setattr(_PgTx, "commit", real_commit)


@covers()
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("landed", [True, False], ids=["landed", "lost"])
async def test_a_signal_cut_off_at_its_commit_is_stored_once(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    """A client's signal whose COMMIT is cut off has an unknown outcome: handed to the caller, a
    retry delivered it twice when it had landed, no retry lost it when it had not. The send's
    request id settles it: the call returns, and the signal is stored once either way."""
    import psycopg

    await store.insert_run(new("r1"))
    with _commit_cut_off(monkeypatch, landed) as cuts:
        assert await store.send_signal("r1", "go", '{"n":1}')
    assert cuts == [], "the signal's commit was not cut off"
    with psycopg.connect(db_url) as pg:
        rows = pg.execute("SELECT name, payload, request IS NOT NULL FROM cairn_signals WHERE run_id = 'r1'").fetchall()
    assert rows == [("go", '{"n":1}', True)]
    assert [e.kind for e in await store.list_events("r1")] == ["signal.received"]


@covers()
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("landed", [True, False], ids=["landed", "lost"])
async def test_control_operations_cut_off_at_their_commit_are_settled(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch, landed: bool
) -> None:
    """A pause, resume, cancel or fork whose COMMIT is cut off returns as if it was not: applied once."""
    await store.insert_run(new("r1"))
    with _commit_cut_off(monkeypatch, landed):
        assert await store.pause("r1") == RunStatus.PAUSED
    with _commit_cut_off(monkeypatch, landed):
        assert await store.resume("r1") == RunStatus.PENDING
    with _commit_cut_off(monkeypatch, landed):
        assert await store.fork("r1", 0, "f1") == "f1"
    with _commit_cut_off(monkeypatch, landed):
        assert await store.cancel("r1") == RunStatus.CANCELLED
    kinds = [e.kind for e in await store.list_events("r1")]
    assert kinds == ["paused", "resumed", "forked.to", "cancelled"]
    assert [e.kind for e in await store.list_events("f1")] == ["forked"]


async def test_a_signal_sent_again_under_its_request_id_is_stored_once(store: Store) -> None:
    """A send settled as lost may have landed after all (its COMMIT still on its way): sent again
    under the same request id, it stores nothing, even once the run has taken it and finished."""
    from cairn.store.journal_tx import signal

    assert isinstance(store, SqlStore)
    await store.insert_run(new("r1"))
    for _ in range(2):
        await store.db.transaction(lambda tx: signal(tx, "r1", "go", "1", tx.now(), "request-1"))
    assert [e.kind for e in await store.list_events("r1")] == ["signal.received"]
    await store.cancel("r1")
    await store.db.transaction(lambda tx: signal(tx, "r1", "go", "1", tx.now(), "request-1"))  # no IllegalTransition
    with pytest.raises(IllegalTransition):
        await store.db.transaction(lambda tx: signal(tx, "r1", "go", "1", tx.now(), "request-2"))


def test_a_commit_is_known_to_have_landed_only_by_the_run_it_left() -> None:
    """After a cut-off commit, the run as it left it (token, status, activations, holder, time)
    says it landed; a control operation or another worker's claim in its place says it did not."""
    from dataclasses import replace

    from cairn.records import RunRow
    from cairn.store.journal_tx import landed

    now = time.time()
    run = RunRow(
        "r1",
        WF,
        RunStatus.RUNNING,
        "{}",
        None,
        None,
        "default",
        None,
        None,
        now,
        now,
        now,
        None,
        1,
        None,
        None,
        "w1",
        4,
    )
    commit = Commit(run, 4, ActivationResult(status=RunStatus.RUNNING), owner="w1", lease=30.0, now=now + 1)
    left = replace(run, lease_token=5, activations=2, updated_at=now + 1)
    assert landed(commit, left)
    assert not landed(commit, replace(left, lease_token=4))  # never landed
    assert not landed(commit, replace(left, lease_owner="w2", updated_at=now + 2))  # claimed by another
    assert not landed(commit, replace(left, status=RunStatus.PAUSED, activations=1, lease_owner=None))  # paused
    assert not landed(commit, replace(left, updated_at=now + 3))  # touched since: cannot tell, so no


@covers()
async def test_a_database_that_refuses_us_fails_the_open_at_once_in_one_line(pg_server: str) -> None:
    """A misnamed database, an unknown user or a port nobody listens on is not going to get better:
    the open fails at once, in one line naming the URL (never its password) and the cause, not
    after a pool's 10 s of retries and a "pool initialization incomplete"."""
    from urllib.parse import urlsplit

    host = urlsplit(pg_server).hostname or "127.0.0.1"
    port = urlsplit(pg_server).port or 5432
    cases = {
        f"postgresql://postgres:s3cret@{host}:{port}/cairn_no_such_db": 'database "cairn_no_such_db" does not exist',
        f"postgresql://cairn_nobody:s3cret@{host}:{port}/postgres": 'role "cairn_nobody" does not exist',
        "postgresql://postgres:s3cret@127.0.0.1:1/postgres": "Connection refused",
        # Malformed: libpq's error quotes the URL as written, and it does not parse as a URL.
        f"postgresql://postgres:s3cret@[::1:{port}/postgres": "IPv6 host address",
        f"postgresql://postgres:s3cret/x@y@{host}:{port}/postgres": "failed to resolve host",
        # libpq quotes a password it cannot decode alone, outside any URL.
        f"postgresql://postgres:Kx9%Rt-s3cret@{host}:{port}/postgres": "percent-encoded",
        f"postgresql://postgres:two%20s3cret words@{host}:{port}/postgres": "",
        f"postgresql://postgres@{host}:{port}/postgres?password=Kx9%Rt-s3cret": "percent-encoded",
    }
    for url, cause in cases.items():
        client = cairn.Client(url)
        started = time.monotonic()
        with pytest.raises(cairn.DatabaseUnavailable) as caught:
            await client.store.open()
        assert time.monotonic() - started < 5
        message = str(caught.value)
        assert isinstance(caught.value, cairn.StoreError) and isinstance(caught.value, ConnectionError)
        assert cause in message and "\n" not in message and "s3cret" not in message and "***" in message
        await client.close()


def sched(schedule_id: str, every: float = 60.0, overlap: str = "allow") -> ScheduleSpec:
    return ScheduleSpec(
        schedule_id, WF, "default", None, every, "UTC", '{"args":[],"kwargs":{}}', overlap, "latest", None
    )


@covers("upsert_schedules", "list_schedules", "fire_schedules", "pause_schedule", "trigger_schedule", "delete_schedule")
async def test_schedules_fire_each_tick_once_pause_trigger_and_delete(store: Store) -> None:
    from cairn.clock import SYSTEM, SkippingClock

    clock = SkippingClock()
    store.clock = clock
    try:
        await store.upsert_schedules([sched("s1"), sched("s-undeclared")], "code")
        rows = {r.spec.id: r for r in await store.list_schedules()}
        assert set(rows) == {"s1", "s-undeclared"} and rows["s1"].source == "code" and not rows["s1"].paused
        first = rows["s1"].next_fire_at
        assert first is not None and 0 < first - await store.now() <= 60
        assert await store.fire_schedules([WF], ["s1"]) is not None  # nothing due yet: no run
        assert await store.list_runs(limit=10) == []
        clock.advance(61)
        wait = await store.fire_schedules([WF], ["s1"])
        assert wait is not None and 0 < wait <= 60  # seconds until the next tick
        await store.fire_schedules([WF], ["s1"])  # the same tick again: nothing more
        runs = await store.list_runs(limit=10)
        assert len(runs) == 1 and runs[0].id.startswith("s1")  # the undeclared schedule did not fire
        after = {r.spec.id: r for r in await store.list_schedules()}["s1"]
        assert after.last_run_id == runs[0].id and after.next_fire_at is not None and after.next_fire_at > first

        assert await store.pause_schedule("s1", True) is True
        clock.advance(120)
        await store.fire_schedules([WF], ["s1"])
        assert len(await store.list_runs(limit=10)) == 1  # paused: no tick fires
        assert await store.pause_schedule("nope", True) is False

        manual = await store.trigger_schedule("s1")  # a manual run even while paused
        assert manual is not None and (await store.get_run(manual)) is not None
        assert await store.trigger_schedule("nope") is None

        await store.upsert_schedules([sched("s1", every=30.0)], "code")  # a changed interval
        moved = {r.spec.id: r for r in await store.list_schedules()}["s1"]
        assert moved.spec.every == 30.0 and moved.paused  # the pause stays
        assert await store.delete_schedule("s1") is True
        assert await store.delete_schedule("s1") is False
        assert {r.spec.id for r in await store.list_schedules()} == {"s-undeclared"}
    finally:
        store.clock = SYSTEM


@covers("hand_over")
async def test_a_stopping_worker_hands_over_its_runs_and_only_the_attempts_it_names(store: Store) -> None:
    await store.insert_run(new("r1"))
    claim = await claim_one(store)
    steps = [NewStep(1, StepKind.ACTION, ACTION, '{"x":1}'), NewStep(2, StepKind.ACTION, ACTION, '{"x":2}')]
    result = ActivationResult(new_steps=steps, status=RunStatus.RUNNING)
    await store.commit_activation(Commit(claim.run, claim.token, result, owner="w1", lease=30.0))  # run kept by w1
    running = (await store.claim_work("w1", [WF], [ACTION], None, 0, 10, 30.0)).actions
    assert sorted(a.seq for a, _ in running) == [1, 2]

    await store.hand_over("w1", [("r1", 1)])  # w1 stopped step 1; step 2 still runs on its thread

    work = await store.claim_work("w2", [WF], [ACTION], None, 0, 10, 30.0)
    assert [a.seq for a, _ in work.actions] == [1]  # at once, not at the lease's end; step 2 stays w1's
    assert await store.complete_action(work.actions[0][0], "2", None, None, [], [])
    assert (await claim_one(store, "w2")).run.id == "r1"  # the run, woken by that result, is w1's no more
    kept = next(a for a, _ in running if a.seq == 2)
    assert await store.complete_action(kept, "3", None, None, [], [])  # w1's attempt still records its result


def test_an_attempts_outcome_is_known_to_have_landed_by_its_step() -> None:
    """After recording an outcome was cut off: the step no longer running under this attempt says
    it landed; still running under it, that it never did (record it again); another attempt, that
    it was superseded."""
    from cairn.store.journal_tx import attempt_recorded
    from cairn.store.protocol import ActionClaim

    claim = ActionClaim("r1", 1, ACTION, "{}", 2, None, None)
    assert attempt_recorded(claim, ("completed", 2)) is True
    assert attempt_recorded(claim, ("scheduled", 2)) is True  # a retry put it back
    assert attempt_recorded(claim, ("running", 2)) is None
    assert attempt_recorded(claim, ("running", 3)) is False
    assert attempt_recorded(claim, None) is False


@covers("upsert_queues", "get_queue", "list_queues")
async def test_queues_are_upserted_the_last_declaration_winning(store: Store) -> None:
    from cairn.queues import QueueSpec

    first = QueueSpec("billing", concurrency=2, per_key=1, rate_n=5, rate_period=1.0, priority=True)
    assert await store.upsert_queues([first, QueueSpec("plain")], "w1") == []
    assert await store.upsert_queues([first], "w1") == []  # the same limits again: nothing to say
    got = await store.get_queue("billing")
    assert got is not None and got.spec == first and got.declared_by == "w1"
    assert await store.get_queue("nope") is None and await store.get_queue("a\x00b") is None
    second = QueueSpec("billing", concurrency=3)
    assert await store.upsert_queues([second], "w2") == ["billing"]  # other limits, declared elsewhere
    got = await store.get_queue("billing")
    assert got is not None and got.spec == second and got.declared_by == "w2"
    # Counts: runs waiting in a queue of a limit, and the rate untouched by no claim.
    await store.insert_run(NewRun("q1", WF, '{"x":1}', "billing"))
    rows = {q.spec.name: q for q in await store.list_queues()}
    assert set(rows) == {"billing", "plain"}
    assert (rows["billing"].runs_waiting, rows["billing"].runs_in_flight) == (1, 0)
    assert rows["billing"].rate_next_at is None and rows["billing"].rate_starts == 0
    light = await store.list_queues(counts=False)
    assert [q.spec.name for q in light] == ["billing", "plain"] and light[0].runs_waiting == 0


async def test_a_limited_queue_claim_holds_its_limits_across_workers(store: Store) -> None:
    from cairn.queues import QueueSpec

    await store.upsert_queues([QueueSpec("one", concurrency=1, rate_n=10, rate_period=60.0)], "w1")
    for i in range(3):
        await store.insert_run(NewRun(f"r{i}", WF, '{"x":1}', "one"))
    first = await store.claim_work("w1", [WF], [], None, 10, 0, 30.0)
    assert [c.run.id for c in first.runs] == ["r0"]  # oldest first, and only one
    assert first.retry_in is not None and first.retry_in <= 0.5  # held back: look again soon (a poll, not a due time)
    other = await store.claim_work("w2", [WF], [], None, 10, 0, 30.0)
    assert other.runs == []  # the slot is taken, whoever asks
    row = await store.get_queue("one")
    assert row is not None and row.rate_starts == 1 and row.rate_next_at is not None
    assert row.rate_next_at - time.time() == pytest.approx(6.0, abs=1.0)  # 10 a minute: 6 s apart
