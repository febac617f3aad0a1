"""Workflows and actions used by the behaviour tests, one per pattern of the workflow vocabulary.

Side effects are counted in `CALLS` (in-process) so tests can assert what really executed.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import threading
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import BaseModel

import cairn
from cairn import BackoffPolicy, Depends, RetryPolicy, Workflow, action, workflow

CALLS: collections.Counter[str] = collections.Counter()
CLEANUPS: list[str] = []
_lock = threading.Lock()


def called(name: str) -> None:
    with _lock:
        CALLS[name] += 1


# --- actions ---------------------------------------------------------------------------------


@action
async def add_one(x: int) -> int:
    called(f"add_one:{x}")
    return x + 1


GATES: collections.defaultdict[str, threading.Event] = collections.defaultdict(threading.Event)
"""Gates that `wait_at_gate` holds its action slot behind until a test opens them."""


@action
def wait_at_gate(name: str) -> str:
    GATES[name].wait(30)
    return name


@action
def double(x: int) -> int:
    called(f"double:{x}")
    return x * 2


@action
async def slow_echo(value: str, delay: float) -> str:
    await asyncio.sleep(delay)
    called(f"slow_echo:{value}")
    return value


@action
async def boom(message: str) -> int:
    called("boom")
    raise ValueError(message)


class Flaky(Exception):
    pass


@action(retry=RetryPolicy(attempts=3, retry_on=(Flaky,)), backoff=BackoffPolicy(base_delay=0.01, jitter=False))
async def flaky(key: str, fail_times: int) -> str:
    ctx = cairn.context()
    called(f"flaky:{key}")
    ctx.logger.info("attempt %d", ctx.attempt)
    if ctx.attempt <= fail_times:
        raise Flaky(f"attempt {ctx.attempt} failed")
    return f"{ctx.idempotency_key}@{ctx.attempt}"


@action(timeout=0.2, retry=RetryPolicy(attempts=2), backoff=BackoffPolicy(base_delay=0.01, jitter=False))
async def too_slow() -> str:
    called("too_slow")
    await asyncio.sleep(5)
    return "never"


@action(retry=RetryPolicy(attempts=1))
async def transient_once() -> str:
    called("transient_once")
    raise cairn.TransientError("upstream hiccup")


class Point(BaseModel):
    x: int
    y: int


class Reading(BaseModel):
    value: float


@workflow
async def record_reading(reading: Reading) -> float:
    return reading.value


@action
async def make_point(x: int, y: int) -> Point:
    return Point(x=x, y=y)


@action
async def norm1(p: Point) -> int:
    return abs(p.x) + abs(p.y)


@action
async def not_serializable() -> Any:
    return object()


class Greeter:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting


def get_greeter() -> Iterator[Greeter]:
    yield Greeter("hello")
    CLEANUPS.append("greeter")


@action
async def greet(name: str, greeter: Annotated[Greeter, Depends(get_greeter)]) -> str:
    return f"{greeter.greeting} {name}"


@action
def remember(key: str, value: int) -> None:
    cairn.memory.add(key=key, value=value)


@action
def recall(key: str) -> Any:
    return cairn.memory.get(key)


@action
def remember_twice(key: str, first: int, then: int) -> None:
    cairn.memory.add(key=key, value=first)
    cairn.memory.add(key=key, value=then)


# --- workflows -------------------------------------------------------------------------------


@workflow
class Sequence3(Workflow):
    """Three trivial actions in a row (the benchmark shape)."""

    async def run(self, x: int) -> int:
        self.stage = "start"
        a = await add_one(x)
        self.stage = "one"
        b = await add_one(a)
        self.stage = "two"
        c = await add_one(b)
        self.stage = "done"
        return c


@workflow
class HandleStyle(Workflow):
    async def handle(self, x: int) -> int:
        return await double(x)


@workflow
async def function_style(x: int) -> int:
    return await add_one(await double(x))


@workflow
async def memory_rewritten(key: str) -> Any:
    await remember_twice(key, 1, 2)
    return cairn.memory.get(key)


@workflow
async def gated(name: str) -> str:
    return await wait_at_gate(name)


@workflow
def plain_def(xs: list[int]) -> dict[str, Any]:
    total = 0
    errors = []
    for x in xs:
        try:
            if x < 0:
                boom(f"negative {x}")
            total += double(x)
        except ValueError as exc:
            errors.append(str(exc))
    cairn.sleep(0.05)
    return {"total": total, "errors": errors, "now": cairn.now().year > 2000}


@workflow
async def fan_out(n: int) -> list[int]:
    return list(await asyncio.gather(*(add_one(i) for i in range(n))))


@workflow
async def gather_exceptions() -> list[str]:
    results = await asyncio.gather(add_one(1), boom("bad"), double(2), return_exceptions=True)
    return [type(r).__name__ if isinstance(r, BaseException) else str(r) for r in results]


@workflow
async def gather_raises() -> str:
    try:
        await asyncio.gather(add_one(1), boom("first failure"))
    except ValueError as exc:
        return f"caught {exc}"
    return "no error"


@workflow
async def out_of_order() -> list[str]:
    """The first-scheduled action finishes last; step numbers must follow scheduling order."""
    return list(await asyncio.gather(slow_echo("slow", 0.3), slow_echo("fast", 0.0)))


@workflow
async def tasks_flow(x: int) -> int:
    t1 = asyncio.create_task(add_one(x))
    t2 = asyncio.create_task(double(x))
    return await t1 + await t2


@workflow
async def wait_for_flow() -> str:
    try:
        return await asyncio.wait_for(slow_echo("late", 3.0), timeout=0.2)
    except TimeoutError:
        return "timed out"


@workflow
async def sleeper(seconds: float) -> str:
    before = cairn.now()
    await asyncio.sleep(seconds)
    await cairn.sleep(seconds)
    after = cairn.now()
    return f"slept {(after - before).total_seconds() >= 2 * seconds}"


@workflow
async def try_except(message: str) -> str:
    try:
        await boom(message)
    except ValueError as exc:
        return f"recovered from {exc}"
    return "unreachable"


@workflow
async def fails(message: str) -> int:
    return await boom(message)


@workflow
async def recorded_values() -> dict[str, Any]:
    return {"now": cairn.now().isoformat(), "random": cairn.random(), "uuid": str(cairn.uuid4())}


@workflow
async def child_flow(x: int) -> int:
    return await add_one(x)


@workflow
async def parent_flow(x: int) -> int:
    a = await child_flow(x)
    b = await cairn.child(child_flow, a, id=f"named-child-{x}")
    return a + b


@workflow
async def factorial(n: int) -> int:
    if n <= 1:
        return 1
    return n * await factorial(n - 1)


@workflow
class Approval(Workflow):
    async def run(self, order: str) -> str:
        self.order = order
        self.state = "waiting"
        decision = await cairn.wait_for_signal("approval")
        self.state = "approved" if decision["ok"] else "rejected"
        return f"{order}:{decision['by']}:{self.state}"


@workflow
async def signal_timeout() -> str:
    try:
        await cairn.wait_for_signal("never", timeout=0.2)
    except TimeoutError:
        return "no signal"
    return "signalled"


@workflow
async def signal_never_comes() -> None:
    await cairn.wait_for_signal("never", timeout=0.2)


@workflow
async def ping_pong(target: str) -> str:
    await cairn.send_signal(target, "approval", {"ok": True, "by": "ping_pong"})
    return "sent"


@workflow
async def memory_flow(key: str) -> dict[str, Any]:
    cairn.memory.add(key="from_workflow", value={"a": 1})
    await remember(key, 42)
    seen_in_workflow = cairn.memory.get(key)
    seen_in_action = await recall(key)
    return {"keys": cairn.memory.keys(), "workflow": seen_in_workflow, "action": seen_in_action}


@workflow
async def models_flow(x: int, y: int) -> int:
    p = await make_point(x, y)
    assert isinstance(p, Point)
    return await norm1(p)


@workflow
async def retry_flow(key: str, fail_times: int) -> str:
    return await flaky(key, fail_times)


@workflow
class OverrideFlow(Workflow):
    async def run(self, key: str) -> str:
        return await self.run_action(
            flaky(key, 3),
            retry=RetryPolicy(attempts=5, retry_on=(Flaky,)),
            backoff=BackoffPolicy(base_delay=0.01, jitter=False),
        )


@workflow
async def timeout_flow() -> str:
    try:
        return await too_slow()
    except cairn.ActionTimeout as exc:
        return f"timeout: {type(exc).__name__}"


@workflow
async def bad_result_flow() -> Any:
    return await not_serializable()


@workflow
async def returns_object() -> Any:
    return object()


@workflow
async def depends_flow(name: str) -> str:
    return await greet(name)


@workflow
async def transient_flow() -> str:
    try:
        await transient_once()
    except cairn.TransientError as exc:
        return f"gave up: {exc}"
    return "ok"


@workflow
async def wait_first() -> list[str]:
    fast = asyncio.create_task(slow_echo("fast", 0.0))
    slow = asyncio.create_task(slow_echo("slow", 2.0))
    done, pending = await asyncio.wait([fast, slow], return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return [t.result() for t in done]


# --- signals racing the run's own work (issue 14) --------------------------------------------


@workflow
async def count_up(n: int) -> int:
    """`n` actions one after the other: a journal of `n` activations and more."""
    x = 0
    for _ in range(n):
        x = await add_one(x)
    return x


@workflow
async def busy_waiter(n: int) -> dict[str, Any]:
    """A signal wait stays open while the run loops over actions (each a commit of its own)."""
    wait = asyncio.create_task(cairn.wait_for_signal("go"))
    total = 0
    for i in range(n):
        total += await add_one(i)
    return {"total": total, "payload": await wait}


@workflow
async def sleepy_waiter(seconds: float) -> Any:
    """A signal wait stays open while the run sleeps: the timer's claim races the signal."""
    wait = asyncio.create_task(cairn.wait_for_signal("go"))
    await asyncio.sleep(seconds)
    await add_one(1)
    return await wait


@workflow
async def burst_receiver(n: int) -> list[Any]:
    """Waits for `n` signals of one name, one wait at a time."""
    return [await cairn.wait_for_signal("item") for _ in range(n)]


@workflow
async def timeout_then_wait(seconds: float) -> dict[str, Any]:
    """A timed wait that may lose the race with its signal: a signal that arrives as the wait times
    out must stay buffered for the next wait, never be swallowed by the one that timed out."""
    try:
        first = await cairn.wait_for_signal("go", timeout=seconds)
    except TimeoutError:
        return {"first": None, "second": await cairn.wait_for_signal("go")}
    return {"first": first, "second": None}


@action
async def charge(order_id: str, email: str, cents: int) -> str:
    return f"charged {order_id} {cents} for {email}"


@workflow
async def book_slot(when: datetime.datetime, ref: uuid.UUID, seats: int = 1) -> str:
    """Typed arguments whose JSON schema says little (a string's format, an integer): a start by
    name where the code is not imported must refuse what pydantic will refuse at the worker."""
    return f"{ref} at {when.isoformat()} x{seats}"


@workflow
async def checkout_order(order_id: str, email: str, cents: int = 4200) -> str:
    """Parameters whose alphabetical order is not their order: a start by name must bind by the latter."""
    return await charge(order_id, email, cents)


@workflow
async def child_with_taken_id(child_id: str) -> str:
    try:
        await cairn.child(child_flow, 1, id=child_id)
    except cairn.RunIdConflict as exc:
        return f"conflict: {exc.existing} holds {exc.run_id}"
    return "started"


# --- values a database cannot store (issue 14) -----------------------------------------------


@workflow
async def nul_memory_key() -> str:
    cairn.memory.add(key="bad\x00key", value=1)
    return "stored"


@workflow
async def nul_signal_name() -> Any:
    return await cairn.wait_for_signal("bad\x00name")


@action
def nul_memory_key_in_action() -> None:
    cairn.memory.add(key="bad\x00key", value=1)


@workflow
async def nul_memory_key_from_action() -> str:
    await nul_memory_key_in_action()
    return "stored"


@workflow
async def nul_past_the_door() -> str:
    """Fault injection: a NUL key that skips the door's check (as a bug in Cairn might), so the
    database itself refuses the run's commit (PostgreSQL; SQLite stores it)."""
    from cairn.engine.runtime import require_runtime

    require_runtime("test").memory_add("bad\x00key", 1)
    await add_one(1)
    return "stored"


@workflow
async def nul_after_an_action() -> str:
    """`nul_past_the_door` once an action has run: the commit the database refuses also records
    that action's result, so its step is still open when the run fails."""
    from cairn.engine.runtime import require_runtime

    await add_one(1)
    require_runtime("test").memory_add("bad\x00key", 1)
    await add_one(2)
    return "stored"


@workflow
async def add_then_wait(x: int) -> int:
    a = await add_one(x)
    await cairn.wait_for_signal("go")
    return a


@action(id="tests.elsewhere.enrich")
async def enrich(x: int) -> int:
    return x * 100


@workflow
async def needs_elsewhere(x: int) -> int:
    """Its second step needs an action that the test's first worker does not have."""
    a = await add_one(x)
    return await enrich(a)


@action(timeout=0.1)
async def over_its_deadline() -> str:
    called("over_its_deadline")
    await asyncio.sleep(5)
    return "never"


@workflow
async def deadline_flow() -> str:
    try:
        return await over_its_deadline()
    except cairn.ActionTimeout as exc:
        return type(exc).__name__


@action
async def raises_generator_exit() -> str:
    called("raises_generator_exit")
    raise GeneratorExit("raised by the action")


@workflow
async def generator_exit_flow() -> str:
    try:
        return await raises_generator_exit()
    except cairn.ActionError as exc:
        return f"{type(exc).__name__}: {exc}"


# --- schedules (issue 19): never declared at import, or every test's worker would fire them --------


@workflow
async def tick(label: str) -> str:
    return label


@workflow
async def tick_and_wait(label: str) -> str:
    """A scheduled run that goes on until signalled: its next ticks find it still going."""
    return str(await cairn.wait_for_signal("done")) + label


@workflow
async def nan_waits(seconds: str = "nan") -> list[str]:
    """Each way of waiting NaN (or infinite) seconds: refused where it is written, and no timer
    recorded (one due at NaN was stored as no time at all and fired at once; one due at infinity
    was refused by PostgreSQL's JSON, which failed the run, and kept by SQLite)."""
    told = []
    for wait in (
        lambda: cairn.sleep(float(seconds)),
        lambda: asyncio.sleep(float(seconds)),
        lambda: asyncio.wait_for(asyncio.sleep(1), timeout=float(seconds)),
        lambda: cairn.wait_for_signal("never", timeout=float(seconds)),
    ):
        try:
            await wait()
            told.append("waited")
        except ValueError as exc:
            told.append(str(exc))
    return told


@workflow
async def takes_anything(value: object) -> None:
    """Takes any JSON, however deep (up to the nesting limit)."""


@workflow
async def keyword_only(a: int, *, b: str = "x", c: int = 0) -> str:
    """Parameters after `*` are given by name only, by name as everywhere else."""
    return f"{a}{b}{c}"
