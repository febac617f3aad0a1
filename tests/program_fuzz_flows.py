"""An interpreter of small random programs, run durably by Cairn (tests/behaviour/test_program_fuzz.py).

A program is a JSON tree of nodes; `program` (async), `program_sync` (a plain `def` workflow) and
`ProgramClass` (class style) walk it, and the test computes what the same tree gives as plain Python
(its reference evaluator) to compare. Every value is a pure function of the tree: actions return a
digest of their own name, key and arguments, signals carry payloads the test derives from their
names, and branches turn on the parity of a value's digest. Where real timing decides a race (which
of two failures a gather raises first), the workflow normalises the outcome, so the result of a run
is exactly determined by its program whatever the timing, the workers and their restarts.

Each node has a number `n`, unique in its program; the *key* of one execution of a node is its
number prefixed by its scope (a loop adds the iteration to the scope), so each logical action call
has a key of its own, which its step records: the test finds each once in the journals.

Nodes ({"t": type, "n": number, ...}):
- lit {v}: the value v.
- act {fn: "a" (async def) | "s" (def), args: [nodes], fails, boom, mw}: evaluate the arguments in
  order, then the action (transiently failing `fails` times first; raising Boom if `boom`; writing
  its result to memory "am:<key>" if `mw`, which the workflow then reads back). In a class-style
  run, through `run_action` with a retry policy of its own.
- seq {body}, gather {body, rx} (asyncio.gather, return_exceptions=rx; without it a Boom becomes
  Boom("<key> gather")), tg {body} (a TaskGroup; its failure becomes Boom("<key> tg")), ascomp
  {body} (asyncio.as_completed; the values sorted), tasks {body, mid} (create_task for each, then
  `mid`, then each awaited in reverse order), race {body, mode} (asyncio.wait: FIRST_COMPLETED
  against a long sleep, or with a long timeout).
- try {body}: the value, or "caught:<message>" of a Boom.
- sleep {s, how}: a durable sleep (asyncio.sleep or cairn.sleep); "slept".
- timeout {body, fast, style, s}: asyncio.wait_for, asyncio.timeout, or wait_for of a shield; a
  fast one (a long limit) gives the body's value; a slow one (a body that ends in a long sleep)
  gives "timeout".
- if {cond, then, else}, loop {count, body}, until {count, body} (stops at a value of odd parity).
- sig {count, mode}: wait `count` times for signal "sig:<key>" (the test sends payloads
  {"key", "i"}); mode "long" waits with a long timeout, "par" waits `count` times at once (the
  n-th wait takes the n-th signal), "never" waits with a short timeout for a signal nobody sends
  ("sig-timeout").
- selfsig: send signal "self:<key>" to this run from the workflow, then wait for it; nx: send one
  to a run that does not exist ("not-found").
- mem {body, later}: write the value to memory "m:<key>", read it back (later: after a sleep).
- rec {kind}: cairn.now()/random()/uuid4(), passed to an action and checked against what that
  action must return ("rec-ok"); now() is also checked never to go backwards within a run.
- child {body, how, mid, again, tell}: the body as a child run: cairn.child (how "child"), awaiting
  the function-style workflow ("call": an id Cairn derives), the plain-def workflow ("sync"), the
  class-style one ("class"), each awaited twice by id when `again`; or cairn.start_child ("start"),
  then `mid`, then the handle's result (or, `again`, cairn.child of the same id). With `tell`, the
  body is a signal wait and the parent sends its child those signals itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from typing import Any

import cairn
from cairn import BackoffPolicy, RetryPolicy, Workflow, action, workflow

FAST = BackoffPolicy(base_delay=0.002, multiplier=2.0, max_delay=0.02, jitter=False)
LONG = 600.0
"""A timeout or sleep no run reaches (the side of a race that never wins)."""

INVOCATIONS: Counter[str] = Counter()
"""Attempts of each action key, in this process (side effects: at least once)."""
IDEMPOTENCY: defaultdict[str, set[str]] = defaultdict(set)
"""The idempotency keys each action key's attempts saw (one, however often it ran)."""
ATTEMPTS: defaultdict[str, list[int]] = defaultdict(list)
HOOK: list[Callable[[], None]] = []
"""Called (on whichever thread runs it) as each attempt begins: the test replaces workers on it."""
_lock = threading.Lock()


class Boom(Exception):
    """What a failing action raises (not transient: it fails at once), and what gathers re-raise."""


def reset() -> None:
    with _lock:
        INVOCATIONS.clear()
        IDEMPOTENCY.clear()
        ATTEMPTS.clear()
        HOOK.clear()


def total_invocations() -> int:
    with _lock:
        return sum(INVOCATIONS.values())


def canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest(value: Any) -> str:
    return f"{zlib.crc32(canon(value).encode()):08x}"


def parity(value: Any) -> int:
    return int(digest(value), 16) % 2


def act_value(fn: str, key: str, args: list[Any]) -> str:
    """What action `fn` returns for `key` and `args`: a pure function of the three."""
    return f"{fn}:{key}:{digest([fn, key, args])}"


def sig_payload(key: str, i: int) -> dict[str, Any]:
    return {"key": key, "i": i}


def _attempt(fn: str, key: str, args: list[Any], fails: int, boom: bool, mw: bool) -> str:
    ctx = cairn.context()
    with _lock:
        INVOCATIONS[key] += 1
        IDEMPOTENCY[key].add(ctx.idempotency_key)
        ATTEMPTS[key].append(ctx.attempt)
    for hook in HOOK:
        hook()
    if ctx.attempt <= fails:
        raise cairn.TransientError(f"{key}: attempt {ctx.attempt} of {fails + 1} fails")
    if boom:
        raise Boom(f"{key} boom")
    value = act_value(fn, key, args)
    if mw:
        cairn.memory.add(key=f"am:{key}", value=value)
    return value


@action(backoff=FAST)
async def op_async(key: str, args: list[Any], fails: int, boom: bool, mw: bool) -> str:
    await asyncio.sleep(0.001)  # some work, during which a worker may stop
    return _attempt("a", key, args, fails, boom, mw)


@action(backoff=FAST)
def op_sync(key: str, args: list[Any], fails: int, boom: bool, mw: bool) -> str:
    return _attempt("s", key, args, fails, boom, mw)


ACTIONS = {"a": op_async, "s": op_sync}


class State:
    """What one execution of a run's code remembers (rebuilt by every replay)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.root: str = spec["root"]
        self.run_id: str | None = spec.get("run_id")
        self.last_now: float | None = None
        self.flow: Workflow | None = None
        """The class-style workflow running the program (its actions go through `run_action`)."""


def child_spec(node: dict[str, Any], scope: str, st: State, run_id: str | None) -> dict[str, Any]:
    key = f"{scope}{node['n']}"
    return {"node": node["body"], "scope": scope, "root": st.root, "key": key, "run_id": run_id}


def child_id(st: State, key: str) -> str:
    return f"{st.root}/{key}"


def _rec_value(kind: str, st: State) -> tuple[str, str | None]:
    """The recorded value as text, and a complaint about it (None: fine)."""
    if kind == "now":
        now = cairn.now().timestamp()
        bad = None if st.last_now is None or now >= st.last_now else f"now-back:{st.last_now}>{now}"
        st.last_now = now
        return repr(now), bad
    if kind == "random":
        r = cairn.random()
        return repr(r), None if 0.0 <= r < 1.0 else f"random-out:{r}"
    return str(cairn.uuid4()), None


def _read_back(node: dict[str, Any], key: str, value: Any) -> Any:
    """An action's value; one that wrote it to memory must find it there once it has returned."""
    if node["mw"] and cairn.memory.get(f"am:{key}") != value:
        return f"memory-lost:{cairn.memory.get(f'am:{key}')}"
    return value


def _told(body: dict[str, Any], scope: str) -> list[tuple[str, Any]]:
    """The signals a child whose body is a signal wait waits for, which its parent sends it."""
    key = f"{scope}{body['n']}"
    return [(f"sig:{key}", sig_payload(key, i)) for i in range(body["count"])]


def _boom_or_raise(exc: BaseException) -> str:
    if isinstance(exc, Boom):
        return f"exc:{exc}"
    raise exc


# --- the async interpreter ----------------------------------------------------------------------

Node = dict[str, Any]


async def ev(node: Node, scope: str, st: State) -> Any:
    """The value of `node` in `scope` (its handler below, by type)."""
    return await _ASYNC[node["t"]](node, f"{scope}{node['n']}", scope, st)


async def _lit(node: Node, key: str, scope: str, st: State) -> Any:
    return node["v"]


async def _act(node: Node, key: str, scope: str, st: State) -> Any:
    args = [await ev(a, scope, st) for a in node["args"]]
    call = ACTIONS[node["fn"]](key, args, node["fails"], node["boom"], node["mw"])
    if st.flow is not None:  # class style: with a retry policy of the call's own
        policy = RetryPolicy(attempts=node["fails"] + 2, retry_on=(cairn.TransientError,))
        return _read_back(node, key, await st.flow.run_action(call, retry=policy, backoff=FAST))
    return _read_back(node, key, await call)


async def _seq(node: Node, key: str, scope: str, st: State) -> Any:
    return [await ev(b, scope, st) for b in node["body"]]


async def _gather(node: Node, key: str, scope: str, st: State) -> Any:
    if node["rx"]:
        out = await asyncio.gather(*(ev(b, scope, st) for b in node["body"]), return_exceptions=True)
        return [_boom_or_raise(v) if isinstance(v, BaseException) else v for v in out]
    try:
        return list(await asyncio.gather(*(ev(b, scope, st) for b in node["body"])))
    except Boom:
        raise Boom(f"{key} gather") from None


async def _tg(node: Node, key: str, scope: str, st: State) -> Any:
    """A TaskGroup, on a task of its own: in 3.11 one whose task fails while it waits in `__aexit__`
    leaves its parent task with a cancel request counted (`cancelling()`), which would make a later
    `asyncio.timeout` on that task raise CancelledError instead of TimeoutError."""

    async def group_of_tasks() -> list[Any]:
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(ev(b, scope, st)) for b in node["body"]]
        except BaseExceptionGroup as eg:
            if eg.split(Boom)[1] is None:
                raise Boom(f"{key} tg") from None
            raise
        return [task.result() for task in tasks]

    return await asyncio.create_task(group_of_tasks())


async def _ascomp(node: Node, key: str, scope: str, st: State) -> Any:
    out = []
    for fut in asyncio.as_completed([ev(b, scope, st) for b in node["body"]]):
        try:
            out.append(await fut)
        except Boom as exc:
            out.append(f"exc:{exc}")
    return sorted(out, key=canon)


async def _tasks(node: Node, key: str, scope: str, st: State) -> Any:
    tasks = [asyncio.create_task(ev(b, scope, st)) for b in node["body"]]
    mid = await ev(node["mid"], scope, st)
    values: list[Any] = [None] * len(tasks)
    for i in reversed(range(len(tasks))):
        try:
            values[i] = await tasks[i]
        except Boom as exc:
            values[i] = f"exc:{exc}"
    return [mid, *values]


async def _race(node: Node, key: str, scope: str, st: State) -> Any:
    body = asyncio.create_task(ev(node["body"], scope, st))
    if node["mode"] == "timeout":  # a durable timeout on asyncio.wait that never expires
        done, _ = await asyncio.wait([body], timeout=LONG)
        return body.result() if body in done else "race-lost"
    never = asyncio.create_task(asyncio.sleep(LONG))
    done, _ = await asyncio.wait({body, never}, return_when=asyncio.FIRST_COMPLETED)
    never.cancel()
    return "race-lost" if never in done else body.result()


async def _try(node: Node, key: str, scope: str, st: State) -> Any:
    try:
        return await ev(node["body"], scope, st)
    except Boom as exc:
        return f"caught:{exc}"


async def _sleep(node: Node, key: str, scope: str, st: State) -> Any:
    if node["how"] == "cairn":
        await cairn.sleep(node["s"])
    else:
        await asyncio.sleep(node["s"])
    return "slept"


async def _timeout(node: Node, key: str, scope: str, st: State) -> Any:
    limit = LONG if node["fast"] else node["s"]
    deadline = asyncio.get_running_loop().time() + limit
    body = ev(node["body"], scope, st) if node["fast"] else _slow(node["body"], scope, st, deadline)
    try:
        if node["style"] == "wait_for":
            value = await asyncio.wait_for(body, limit)
        elif node["style"] == "shield":  # timed out, the body runs on unawaited
            value = await asyncio.wait_for(asyncio.shield(body), limit)
        else:
            async with asyncio.timeout(limit):
                value = await body
    except TimeoutError:
        return "timeout"
    if node["fast"]:
        return value
    return "timeout" if value == _EXPIRED else ["late", value]


async def _slow(body: Node, scope: str, st: State, deadline: float) -> Any:
    """The body of a timeout that always fires: the body (its Boom caught), then a long sleep.

    Python 3.11 can swallow the cancel a timeout sends: `asyncio.wait_for` returns the result of a
    future that completed together with the cancel (the cancel is lost), and a TaskGroup whose
    tasks failed raises their ExceptionGroup instead of the CancelledError. The body then goes on
    as if never cancelled, into the long sleep, and the timeout would take that long. Both happen
    under Cairn as in any asyncio program: it delivers a timer and the results that arrived with it
    in one batch (in step order), as a busy event loop runs callbacks that came due together. So,
    past the deadline (the timer has fired, or fires in this activation), it says so at once."""
    with contextlib.suppress(Boom):
        await ev(body, scope, st)
    if asyncio.get_running_loop().time() >= deadline:
        return _EXPIRED
    await asyncio.sleep(LONG)


_EXPIRED = "expired (its cancel swallowed)"


async def _if(node: Node, key: str, scope: str, st: State) -> Any:
    cond = await ev(node["cond"], scope, st)
    return [cond, await ev(node["then"] if parity(cond) else node["else"], scope, st)]


async def _loop(node: Node, key: str, scope: str, st: State) -> Any:
    out = []
    for i in range(node["count"]):
        out.append(await ev(node["body"], f"{key}.{i}/", st))
        if node["t"] == "until" and parity(out[-1]):
            break
    return out


async def _sig(node: Node, key: str, scope: str, st: State) -> Any:
    name = f"sig:{key}"
    if node["mode"] == "par":  # waits together: the n-th wait (in step order) takes the n-th signal
        return list(await asyncio.gather(*(cairn.wait_for_signal(name) for _ in range(node["count"]))))
    if node["mode"] == "never":
        try:
            return [await cairn.wait_for_signal(name, timeout=node["s"])]
        except TimeoutError:
            return ["sig-timeout"]
    limit = LONG if node["mode"] == "long" else None
    return [await cairn.wait_for_signal(name, timeout=limit) for _ in range(node["count"])]


async def _selfsig(node: Node, key: str, scope: str, st: State) -> Any:
    assert st.run_id is not None
    await cairn.send_signal(st.run_id, f"self:{key}", {"self": key})
    return await cairn.wait_for_signal(f"self:{key}")


async def _nx(node: Node, key: str, scope: str, st: State) -> Any:
    try:
        await cairn.send_signal(f"{st.root}/nowhere/{key}", "hello", key)
    except cairn.RunNotFound:
        return "not-found"
    return "sent to nowhere"


async def _mem(node: Node, key: str, scope: str, st: State) -> Any:
    value = await ev(node["body"], scope, st)
    cairn.memory.add(key=f"m:{key}", value=value)
    if node["later"]:  # read back in a later activation (after a replay, without a cache)
        await cairn.sleep(0.001)
    return cairn.memory.get(f"m:{key}")


async def _rec(node: Node, key: str, scope: str, st: State) -> Any:
    text, bad = _rec_value(node["kind"], st)
    got = await op_async(key, [text], 0, False, False)
    return bad or ("rec-ok" if got == act_value("a", key, [text]) else f"rec-bad:{got}")


async def _child(node: Node, key: str, scope: str, st: State) -> Any:
    how = node["how"]
    if how == "call":
        return await program(child_spec(node, scope, st, None))
    cid = child_id(st, key)
    spec = child_spec(node, scope, st, cid)
    flow = CHILD_FLOWS[how]
    if how != "start":
        value = await cairn.child(flow, spec, id=cid)
        return [value, await cairn.child(flow, spec, id=cid)] if node["again"] else value
    handle = cairn.start_child(flow, spec, id=cid)
    if node["tell"]:  # the body is a signal wait: this run sends what it waits for, all at once
        # (each send is made as it is called: no cancel can come between them)
        await asyncio.gather(*[handle.signal(name, payload) for name, payload in _told(node["body"], scope)])
    mid = None if node["mid"] is None else await ev(node["mid"], scope, st)
    value = await (cairn.child(flow, spec, id=cid) if node["again"] else handle.result())
    return value if node["mid"] is None else [mid, value]


_ASYNC: dict[str, Callable[[Node, str, str, State], Coroutine[Any, Any, Any]]] = {
    "lit": _lit,
    "act": _act,
    "seq": _seq,
    "gather": _gather,
    "tg": _tg,
    "ascomp": _ascomp,
    "tasks": _tasks,
    "race": _race,
    "try": _try,
    "sleep": _sleep,
    "timeout": _timeout,
    "if": _if,
    "loop": _loop,
    "until": _loop,
    "sig": _sig,
    "selfsig": _selfsig,
    "nx": _nx,
    "mem": _mem,
    "rec": _rec,
    "child": _child,
}


# --- the plain-def interpreter (a subset: what blocks naturally) --------------------------------


def ev_sync(node: Node, scope: str, st: State) -> Any:
    """`ev` in a plain `def` workflow, where every durable call blocks and returns its value."""
    return _SYNC[node["t"]](node, f"{scope}{node['n']}", scope, st)


def _act_sync(node: Node, key: str, scope: str, st: State) -> Any:
    args = [ev_sync(a, scope, st) for a in node["args"]]
    return _read_back(node, key, ACTIONS[node["fn"]](key, args, node["fails"], node["boom"], node["mw"]))


def _try_sync(node: Node, key: str, scope: str, st: State) -> Any:
    try:
        return ev_sync(node["body"], scope, st)
    except Boom as exc:
        return f"caught:{exc}"


def _sleep_sync(node: Node, key: str, scope: str, st: State) -> Any:
    cairn.sleep(node["s"])
    return "slept"


def _if_sync(node: Node, key: str, scope: str, st: State) -> Any:
    cond = ev_sync(node["cond"], scope, st)
    return [cond, ev_sync(node["then"] if parity(cond) else node["else"], scope, st)]


def _loop_sync(node: Node, key: str, scope: str, st: State) -> Any:
    out = []
    for i in range(node["count"]):
        out.append(ev_sync(node["body"], f"{key}.{i}/", st))
        if node["t"] == "until" and parity(out[-1]):
            break
    return out


def _sig_sync(node: Node, key: str, scope: str, st: State) -> Any:
    name = f"sig:{key}"
    if node["mode"] == "never":
        try:
            return [cairn.wait_for_signal(name, timeout=node["s"])]
        except TimeoutError:
            return ["sig-timeout"]
    limit = LONG if node["mode"] == "long" else None
    return [cairn.wait_for_signal(name, timeout=limit) for _ in range(node["count"])]


def _selfsig_sync(node: Node, key: str, scope: str, st: State) -> Any:
    assert st.run_id is not None
    cairn.send_signal(st.run_id, f"self:{key}", {"self": key})
    return cairn.wait_for_signal(f"self:{key}")


def _nx_sync(node: Node, key: str, scope: str, st: State) -> Any:
    try:
        cairn.send_signal(f"{st.root}/nowhere/{key}", "hello", key)
    except cairn.RunNotFound:
        return "not-found"
    return "sent to nowhere"


def _mem_sync(node: Node, key: str, scope: str, st: State) -> Any:
    value = ev_sync(node["body"], scope, st)
    cairn.memory.add(key=f"m:{key}", value=value)
    if node["later"]:
        cairn.sleep(0.001)
    return cairn.memory.get(f"m:{key}")


def _rec_sync(node: Node, key: str, scope: str, st: State) -> Any:
    text, bad = _rec_value(node["kind"], st)
    got: Any = op_async(key, [text], 0, False, False)  # blocks, and is the value, in a plain-def workflow
    return bad or ("rec-ok" if got == act_value("a", key, [text]) else f"rec-bad:{got}")


def _child_sync(node: Node, key: str, scope: str, st: State) -> Any:
    how = node["how"]
    if how == "call":
        return program(child_spec(node, scope, st, None))
    if node["tell"]:
        raise ValueError("a plain-def workflow sends one signal per activation: never all of them at once")
    cid = child_id(st, key)
    spec = child_spec(node, scope, st, cid)
    flow = CHILD_FLOWS[how]
    if how != "start":
        value = cairn.child(flow, spec, id=cid)
        return [value, cairn.child(flow, spec, id=cid)] if node["again"] else value
    handle = cairn.start_child(flow, spec, id=cid)
    mid = None if node["mid"] is None else ev_sync(node["mid"], scope, st)
    value = cairn.child(flow, spec, id=cid) if node["again"] else handle.result()
    return value if node["mid"] is None else [mid, value]


_SYNC: dict[str, Callable[[Node, str, str, State], Any]] = {
    "lit": lambda node, key, scope, st: node["v"],
    "act": _act_sync,
    "seq": lambda node, key, scope, st: [ev_sync(b, scope, st) for b in node["body"]],
    "try": _try_sync,
    "sleep": _sleep_sync,
    "if": _if_sync,
    "loop": _loop_sync,
    "until": _loop_sync,
    "sig": _sig_sync,
    "selfsig": _selfsig_sync,
    "nx": _nx_sync,
    "mem": _mem_sync,
    "rec": _rec_sync,
    "child": _child_sync,
}
SYNC_NODES = frozenset(_SYNC)


# --- the workflows --------------------------------------------------------------------------------


@workflow
async def program(spec: dict[str, Any]) -> Any:
    """Run the program tree `spec["node"]` in scope `spec["scope"]`."""
    return await ev(spec["node"], spec["scope"], State(spec))


@workflow
def program_sync(spec: dict[str, Any]) -> Any:
    """`program` as a plain `def` workflow (on a thread of its own; durable calls block)."""
    return ev_sync(spec["node"], spec["scope"], State(spec))


@workflow
class ProgramClass(Workflow):
    """`program` in class style, keeping what it is at as properties."""

    async def run(self, spec: dict[str, Any]) -> Any:
        self.key = spec.get("key", "root")
        self.done = False
        st = State(spec)
        st.flow = self
        value = await ev(spec["node"], spec["scope"], st)
        self.done = True
        return value


CHILD_FLOWS: dict[str, Any] = {"child": program, "start": program, "sync": program_sync, "class": ProgramClass}
