"""The Store Protocol's contract, method by method, on both backends (SQLite and a real PostgreSQL):
what every caller of the seam (client, worker, web) relies on. A method added to the Protocol
without a test here fails `test_every_store_method_is_covered`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

import cairn
from cairn import RunStatus
from cairn.errors import IllegalTransition, LeaseLost
from cairn.records import ActivationResult, NewRun, NewStep
from cairn.store.protocol import Commit, Completion, RunFilters, Store, WorkerInfo, WorkflowInfo
from cairn.types import StepKind, StepStatus

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


@covers("complete_action", "get_memory")
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
    assert await store.resume("r1") == RunStatus.RUNNING
    assert await store.resume("r1") == RunStatus.RUNNING  # idempotent
    with pytest.raises(ValueError, match="from_step must be between 0 and 0"):
        await store.fork("r1", 99)
    forked = await store.fork("r1", 0, "r1-fork")
    assert forked == "r1-fork" and (await store.get_run("r1-fork")) is not None
    assert await store.cancel("r1") == RunStatus.CANCELLED
    with pytest.raises(IllegalTransition):
        await store.retry("r1")  # a cancelled run cannot be retried


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
    assert seen == [None]
    assert isinstance(store.notifies_across_processes, bool)
    assert store.refused(LeaseLost("fence")) and not store.refused(ConnectionError("gone"))


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
    for run_id in ("old1", "old2"):
        await store.cancel(run_id)
    await store.send_signal("old1", "go", "1")  # something recorded with the run goes with it
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
    assert first.next_due_in is not None and first.next_due_in <= 0.5  # held back: look again soon
    other = await store.claim_work("w2", [WF], [], None, 10, 0, 30.0)
    assert other.runs == []  # the slot is taken, whoever asks
    row = await store.get_queue("one")
    assert row is not None and row.rate_starts == 1 and row.rate_next_at is not None
    assert row.rate_next_at - time.time() == pytest.approx(6.0, abs=1.0)  # 10 a minute: 6 s apart


@covers("upsert_schedules", "list_schedules", "fire_schedules", "pause_schedule", "trigger_schedule", "delete_schedule")
async def test_schedules_fire_pause_trigger_and_delete(store: Store) -> None:
    from cairn.schedules import ScheduleSpec

    spec = ScheduleSpec("tick", WF, "default", None, 0.2, "UTC", '{"x":1}', "allow", "latest", None)
    await store.upsert_schedules([spec], "api")
    (row,) = await store.list_schedules()
    assert row.spec == spec and row.source == "api" and not row.paused and row.next_fire_at is not None
    deadline = time.monotonic() + 10
    while not await store.list_runs():  # each call starts the ticks that fell due (none early)
        assert await store.fire_schedules([WF], []) is not None
        assert time.monotonic() < deadline, "the schedule never fired"
        await asyncio.sleep(0.05)
    assert await store.pause_schedule("tick", True) and not await store.pause_schedule("nope", True)
    assert (await store.list_schedules())[0].paused
    manual = await store.trigger_schedule("tick")
    assert manual is not None and (await store.get_run(manual)) is not None
    assert await store.trigger_schedule("nope") is None
    assert await store.delete_schedule("tick") and not await store.delete_schedule("tick")
    assert await store.list_schedules() == []
