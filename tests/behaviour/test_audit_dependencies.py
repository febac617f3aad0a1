"""Dependency injection and `cairn.context()` as users of FastAPI's and Waymark's `Depends` rely on
them, on both backends and a real worker: sync and async providers, generator providers whose
cleanup runs after the action and sees how it ended (a failure, a timeout, each retried attempt
with a fresh resource), plain `def` actions on threads, nested providers, direct calls outside a
workflow, `isolate=True` actions, and the context every attempt (and its providers) can read."""

from __future__ import annotations

import asyncio
import itertools
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import pytest

import cairn
from cairn import BackoffPolicy, Depend, Depends, RetryPolicy, action, workflow
from tests.conftest import eventually

EVENTS: list[str] = []
_ids = itertools.count(1)


class Session:
    """A resource a provider opens per invocation: what a database session stands for."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.id = f"{kind}{next(_ids)}"
        self.closed = False


def _transaction(session: Session) -> Iterator[Session]:
    """A FastAPI-style session provider: commit on success, roll back on error, always close."""
    EVENTS.append(f"open {session.id}")
    try:
        yield session
        EVENTS.append(f"commit {session.id}")
    except BaseException as exc:
        EVENTS.append(f"rollback {session.id} {type(exc).__name__}")
        raise
    finally:
        session.closed = True
        EVENTS.append(f"close {session.id}")


def sync_session() -> Iterator[Session]:
    yield from _transaction(Session("s"))


async def async_session() -> AsyncIterator[Session]:
    session = Session("a")
    EVENTS.append(f"open {session.id}")
    try:
        yield session
        EVENTS.append(f"commit {session.id}")
    except BaseException as exc:
        EVENTS.append(f"rollback {session.id} {type(exc).__name__}")
        raise
    finally:
        session.closed = True
        EVENTS.append(f"close {session.id}")


class Settings:
    region = "eu"


def settings() -> Settings:
    return Settings()


async def fetch_token() -> str:
    return "token"


class Repo:
    def __init__(self, session: Session, settings: Settings, token: str) -> None:
        self.session, self.settings, self.token = session, settings, token


def repo(
    session: Annotated[Session, Depends(sync_session)],
    settings: Annotated[Settings, Depends(settings)],
    token: Annotated[str, Depend(fetch_token)],  # Waymark's older spelling
) -> Repo:
    return Repo(session, settings, token)


class Boom(ValueError):
    pass


@action
async def save(
    key: str, fail: bool, r: Annotated[Repo, Depends(repo)], same: Annotated[Session, Depends(sync_session)]
) -> str:
    """Async action: a nested provider (sync generator, sync function, async function), the cached
    session shared with its own parameter, as FastAPI shares it within one request."""
    assert not r.session.closed and r.session is same
    if fail:
        raise Boom(f"cannot save {key}")
    return f"{key}:{r.session.kind}:{r.settings.region}:{r.token}"


@action
def save_sync(key: str, fail: bool, session: Session = Depends(sync_session)) -> str:  # noqa: B008
    """Plain `def` action on a thread, its provider given as the default (mypy-friendly style)."""
    if fail:
        raise Boom(f"cannot save {key}")
    return f"{key}:{session.kind}:{session.closed}"


@action
async def save_async(key: str, session: Annotated[Session, Depends(async_session)]) -> str:
    return f"{key}:{session.kind}"


@workflow
async def saving(key: str, fail: bool, how: str) -> str:
    if how == "async":
        return await save(key, fail)
    return await save_sync(key, fail)


ATTEMPT_SESSIONS: list[tuple[int, str, str]] = []


@action(retry=RetryPolicy(attempts=3), backoff=BackoffPolicy(base_delay=0.01, jitter=False))
def flaky_save(key: str, session: Annotated[Session, Depends(sync_session)]) -> str:
    ctx = cairn.context()
    ATTEMPT_SESSIONS.append((ctx.attempt, session.id, ctx.idempotency_key))
    ctx.logger.info("attempt %d writes with %s", ctx.attempt, session.kind)
    if ctx.attempt < 3:
        raise ConnectionError("the database dropped us")
    return session.id


@workflow
async def flaky_saving(key: str) -> str:
    return await flaky_save(key)


@action(timeout=0.3, retry=RetryPolicy(attempts=1))
async def stuck_async(key: str, session: Annotated[Session, Depends(async_session)]) -> str:
    await asyncio.Event().wait()  # never set: only the timeout ends it
    return key


THREAD_GATE = threading.Event()
SEEN_BY_THREAD: list[str] = []


def stuck_on_thread(key: str, session: Annotated[Session, Depends(sync_session)]) -> str:
    THREAD_GATE.wait(30)
    SEEN_BY_THREAD.append(f"{session.id} closed={session.closed}")  # still in use after the timeout
    return key


with (
    warnings.catch_warnings()
):  # a plain def with a timeout, on purpose (this module is imported by isolated actions too)
    warnings.simplefilter("ignore", cairn.ThreadTimeoutWarning)
    stuck_on_thread = action(timeout=0.3, retry=RetryPolicy(attempts=1))(stuck_on_thread)


@workflow
async def timing_out(how: str) -> str:
    try:
        await (stuck_async("k") if how == "async" else stuck_on_thread("k"))
    except cairn.ActionTimeout as exc:
        return f"timed out: {exc}"
    return "finished"


PROVIDER_GATE = threading.Event()


def slow_connection() -> Iterator[str]:
    """A plain `def` provider that blocks (a connection being opened) until the test lets it go."""
    PROVIDER_GATE.wait(30)
    yield "connection"


@action
async def use_slow_connection(conn: Annotated[str, Depends(slow_connection)]) -> str:
    return conn


@workflow
async def slow_start() -> str:
    return await use_slow_connection()


@action
async def quick(n: int) -> int:
    return n + 1


@workflow
async def quick_flow(n: int) -> int:
    return await quick(n)


def context_key() -> str:
    """A provider that reads the attempt's context (an idempotency key for an HTTP header, say)."""
    return cairn.context().idempotency_key


def _context(key_from_provider: str) -> dict[str, Any]:
    ctx = cairn.context()
    ctx.logger.info("inside %s", ctx.action_id)
    return {
        "run_id": ctx.run_id,
        "action_id": ctx.action_id,
        "attempt": ctx.attempt,
        "key": ctx.idempotency_key,
        "provider_key": key_from_provider,
    }


@action
async def context_async(key: Annotated[str, Depends(context_key)]) -> dict[str, Any]:
    return _context(key)


@action
def context_thread(key: Annotated[str, Depends(context_key)]) -> dict[str, Any]:
    return _context(key)


def logged_session() -> Iterator[str]:
    """In an isolated action's process: its lines are kept with the step, cleanup's included."""
    cairn.context().logger.info("provider opened")
    try:
        yield "session"
        cairn.context().logger.info("provider committed")
    except Exception as exc:
        cairn.context().logger.info("provider rolled back after %s", type(exc).__name__)
        raise
    finally:
        cairn.context().logger.info("provider closed")


@action(isolate=True, retry=RetryPolicy(attempts=1))
def context_isolated(fail: bool, session: Annotated[str, Depends(logged_session)]) -> dict[str, Any]:
    if fail:
        raise Boom("isolated failure")
    return _context(cairn.context().idempotency_key)


@workflow
async def contexts() -> list[dict[str, Any]]:
    return [await context_async(), await context_thread(), await context_isolated(False)]


@workflow
async def isolated_failure() -> str:
    try:
        await context_isolated(True)
    except Boom as exc:
        return f"caught {exc}"
    return "no failure"


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    EVENTS.clear()
    ATTEMPT_SESSIONS.clear()
    SEEN_BY_THREAD.clear()
    yield
    THREAD_GATE.set()  # nothing of a failed test stays parked on a thread
    PROVIDER_GATE.set()
    THREAD_GATE.clear()
    PROVIDER_GATE.clear()


def _of(session_kind: str) -> list[str]:
    """EVENTS without session ids: what happened to the sessions, in order."""
    return [" ".join(part.rstrip("0123456789") for part in e.split()) for e in EVENTS if session_kind in e]


# --- cleanup after the action, and what it sees --------------------------------------------------


@pytest.mark.usefixtures("worker")
async def test_generator_providers_commit_after_success_and_roll_back_after_a_failure(client: cairn.Client) -> None:
    assert await client.run(saving, "k1", False, "async", timeout=10) == "k1:s:eu:token"
    assert _of(" s") == ["open s", "commit s", "close s"]  # one session: the cached one, shared
    EVENTS.clear()
    assert await client.run(saving, "k2", False, "thread", timeout=10) == "k2:s:False"
    assert _of(" s") == ["open s", "commit s", "close s"]
    EVENTS.clear()
    # The action's error is thrown into the provider at its `yield` (it used to be resumed as if
    # all went well, so a session provider committed the work of a failed action).
    for how in ("async", "thread"):
        with pytest.raises(Boom, match=f"cannot save k-{how}"):
            await client.run(saving, f"k-{how}", True, how, timeout=10)
        assert _of(" s") == ["open s", "rollback s Boom", "close s"], how
        EVENTS.clear()


@pytest.mark.usefixtures("worker")
async def test_each_retried_attempt_gets_a_fresh_dependency_cleaned_up_before_the_next(client: cairn.Client) -> None:
    handle = await client.start(flaky_saving, "r")
    last = await handle.result(timeout=10)
    sessions = [s for _, s, _ in ATTEMPT_SESSIONS]
    assert [a for a, _, _ in ATTEMPT_SESSIONS] == [1, 2, 3] and len(set(sessions)) == 3 and last == sessions[-1]
    assert len({k for _, _, k in ATTEMPT_SESSIONS}) == 1  # one idempotency key across retries
    assert ATTEMPT_SESSIONS[0][2] == f"{handle.id}:1"
    expected = []
    for s in sessions[:-1]:
        expected += [f"open {s}", f"rollback {s} ConnectionError", f"close {s}"]
    assert [*expected, f"open {last}", f"commit {last}", f"close {last}"] == EVENTS
    (step,) = await handle.steps()
    assert [line for line in step.logs if "writes with" in line] == [
        f"INFO attempt {n} writes with s" for n in (1, 2, 3)
    ]


@pytest.mark.usefixtures("worker")
async def test_a_timeout_cleans_up_after_the_action_not_under_its_running_thread(client: cairn.Client) -> None:
    result = await client.run(timing_out, "async", timeout=10)
    assert result.startswith("timed out:")
    assert _of(" a") == ["open a", "rollback a CancelledError", "close a"]  # the cancelled attempt, cleaned up
    EVENTS.clear()
    # A plain def action past its timeout runs on (nothing stops a thread): its session must stay
    # open until the thread returns (it was closed at the timeout, under the running action).
    result = await client.run(timing_out, "thread", timeout=10)
    assert result.startswith("timed out:")
    assert _of(" s") == ["open s"]
    THREAD_GATE.set()
    await eventually(lambda: _async(len(EVENTS) == 3), what="the cleanup once the thread returned")
    assert [f"{EVENTS[0].split()[1]} closed=False"] == SEEN_BY_THREAD
    assert _of(" s") == ["open s", "rollback s CancelledError", "close s"]


async def _async(value: Any) -> Any:
    return value


@pytest.mark.usefixtures("worker")
async def test_a_plain_def_provider_that_blocks_holds_up_its_own_attempt_only(client: cairn.Client) -> None:
    """Plain `def` providers ran on the worker's event loop: one opening a slow connection stopped
    every run of the worker (and its heartbeats) until it returned."""
    slow = await client.start(slow_start)
    assert await client.run(quick_flow, 1, timeout=10) == 2  # while the provider still blocks
    assert await slow.status() != cairn.RunStatus.COMPLETED
    PROVIDER_GATE.set()
    assert await slow.result(timeout=10) == "connection"


# --- outside a workflow ----------------------------------------------------------------------------


async def test_direct_calls_resolve_depends_and_clean_up_from_async_code() -> None:
    assert await save("d1", False) == "d1:s:eu:token"
    assert await save_async("d2") == "d2:a"
    assert save_sync("d3", False) == "d3:s:False"  # a plain def action, called from a running loop
    assert _of(" s") == ["open s", "commit s", "close s"] * 2
    assert _of(" a") == ["open a", "commit a", "close a"]
    EVENTS.clear()
    with pytest.raises(Boom):
        await save("d4", True)
    assert _of(" s") == ["open s", "rollback s Boom", "close s"]


def test_direct_calls_from_sync_code_take_a_dependency_given_as_an_argument() -> None:
    """A unit test passes its own fake for an injected parameter (it used to be a TypeError:
    "got an unexpected keyword argument")."""
    mine = Session("mine")
    assert save_sync("d5", False, session=mine) == "d5:mine:False"
    assert asyncio.run(save_async("d6", session=mine)) == "d6:mine"  # type: ignore[arg-type]
    assert EVENTS == []  # no provider ran
    assert save_sync("d7", False) == "d7:s:False"
    assert _of(" s") == ["open s", "commit s", "close s"]
    with pytest.raises(TypeError, match="save_sync"):
        save_sync()  # type: ignore[call-arg]


# --- cairn.context() ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
async def test_context_in_async_threaded_and_isolated_actions_and_in_providers(client: cairn.Client) -> None:
    handle = await client.start(contexts)
    seen = await handle.result(timeout=30)
    steps = await handle.steps()
    assert [s.name for s in steps] == [context_async.id, context_thread.id, context_isolated.id]
    for step, ctx in zip(steps, seen, strict=True):
        key = f"{handle.id}:{step.seq}"  # "<run_id>:<step>"
        assert ctx == {"run_id": handle.id, "action_id": step.name, "attempt": 1, "key": key, "provider_key": key}
        assert f"INFO inside {step.name}" in step.logs, step.logs
    assert steps[2].logs[0] == "INFO provider opened"
    assert steps[2].logs[-2:] == ["INFO provider committed", "INFO provider closed"]


@pytest.mark.usefixtures("worker")
async def test_an_isolated_actions_provider_sees_its_failure_in_its_own_process(client: cairn.Client) -> None:
    handle = await client.start(isolated_failure)
    assert await handle.result(timeout=30) == "caught isolated failure"
    (step,) = await handle.steps()
    assert step.logs == ["INFO provider opened", "INFO provider rolled back after Boom", "INFO provider closed"]
