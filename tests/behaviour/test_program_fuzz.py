"""The workflow engine's semantics under a randomized run: random programs, each checked against
plain Python.

Random program trees (tests/program_fuzz_flows.py lists the nodes: actions sync and async that
fail transiently or for good and write memory, gather with and without return_exceptions,
TaskGroup, as_completed, create_task, asyncio.wait, wait_for, asyncio.timeout and shield around
sleeps and actions, durable sleeps, branches, loops, signals from the test, from the run itself and
from a parent, memory, recorded now/random/uuid4, and child runs of five kinds, async, plain `def`
and class style, some awaited twice) run durably on one in-process worker that is stopped and
replaced again and again as action attempts begin (with a grace of none to half a second; the new
worker sometimes started before the old one stops; on the test's client or one of its own), with
the worker's cache of runs in memory on, and nearly off (none, one or four runs: most activations
replay their journal, and runs are evicted while their actions run). The test sends each run the
signals its program waits for. Then, for every program, against what the reference evaluator
computes from the same tree:

- the run's outcome is the reference's: the same value, or Boom with the same message;
- every run (the root and its children) has ended, none paused (a NonDeterminismError after a
  restart, a corrupt journal, a deadlock) and none wedged; each child's outcome is its subtree's,
  each child runs once (a child started twice under two derived ids would show), a class-style
  one with its properties;
- each logical action call (a key) has one step in the whole tree of runs, in the run the program
  makes it in, with the arguments, function and outcome the reference says, and an attempt count
  no lower than its transient failures need; every call the reference says must happen has its
  step; none the program cannot reach has one; a finished run has no open step;
- each key's attempts saw one idempotency key, its step's "<run>:<seq>", and no attempt number ran
  twice (at least once allows running again, under a new attempt number);
- the memory of the runs holds what the programs and their actions wrote, and nothing else.

Where real timing decides what happens (what runs on in a gather after one of its tasks failed,
what a timeout cut short), the reference marks the calls "may": done at most once, as the program
says, or not at all. Seeded: CAIRN_FUZZ_SEED picks the programs and the restarts (the interleaving
is the machine's); CAIRN_FUZZ_SCALE multiplies the number of programs; CAIRN_FUZZ_DEBUG=1 prints
each restart. The bug it found is forced at the end of this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psycopg
import pytest

import cairn
from cairn import IllegalTransition, RunNotFound, RunStatus, StepKind, StepStatus
from cairn.records import RunRow
from cairn.worker import runner
from tests import program_fuzz_flows as pf
from tests.conftest import _admin, _with_db, eventually
from tests.helpers import status_is, waits_for_a_lock

pytestmark = pytest.mark.timeout(600)

SEED = int(os.environ.get("CAIRN_FUZZ_SEED", "20250612"))
SCALE = float(os.environ.get("CAIRN_FUZZ_SCALE", "1"))
TERMINAL = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
Node = dict[str, Any]
ACTION_IDS = {"a": pf.op_async.id, "s": pf.op_sync.id}
WORKFLOWS: dict[str, Any] = {"call": pf.program, **pf.CHILD_FLOWS}


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    pf.reset()
    yield
    pf.reset()


# --- generating programs --------------------------------------------------------------------------


class Gen:
    """Random program trees, with a budget of nodes each."""

    LEAVES: ClassVar[dict[str, int]] = {"lit": 10, "act": 40, "sleep": 7, "sig": 8, "rec": 4, "selfsig": 3, "nx": 1}
    INNER: ClassVar[dict[str, int]] = {
        "seq": 10,
        "gather": 9,
        "tg": 4,
        "ascomp": 4,
        "tasks": 4,
        "race": 3,
        "try": 10,
        "timeout": 7,
        "if": 6,
        "loop": 5,
        "until": 3,
        "mem": 3,
        "child": 9,
    }

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.n = 0
        self.left = 0

    def program(self, size: int) -> dict[str, Any]:
        self.left = size
        body: list[Node] = []
        while self.left > 0 and len(body) < 6:
            body.append(self.node(0, sync=False, sig_ok=True))
        root = {"t": "seq", "n": self._num(), "body": body}
        return root if self.rng.random() < 0.3 else {"t": "try", "n": self._num(), "body": root}

    def sync_program(self, size: int) -> dict[str, Any]:
        self.left = size
        body: list[Node] = []
        while self.left > 0 and len(body) < 5:
            body.append(self.node(0, sync=True, sig_ok=True))
        root = {"t": "seq", "n": self._num(), "body": body}
        return root if self.rng.random() < 0.3 else {"t": "try", "n": self._num(), "body": root}

    def _num(self) -> int:
        self.n += 1
        return self.n

    def _pick(self, weights: dict[str, int], allowed: set[str] | frozenset[str] | None) -> str:
        names = [k for k in weights if allowed is None or k in allowed]
        (t,) = self.rng.choices(names, [weights[k] for k in names])
        return t

    def node(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        self.left -= 1
        allowed: set[str] | None = set(pf.SYNC_NODES) if sync else None
        if not sig_ok:
            allowed = (allowed or set(self.LEAVES) | set(self.INNER)) - {"sig", "selfsig"}
        leaf = depth >= 5 or self.left <= 0 or self.rng.random() < 0.35 + 0.08 * depth
        t = self._pick(self.LEAVES if leaf else self.INNER, allowed)
        made: Node = getattr(self, f"_{t}")(depth + 1, sync, sig_ok)
        return made

    def _some(self, depth: int, sync: bool, sig_ok: bool, lo: int, hi: int) -> list[dict[str, Any]]:
        return [self.node(depth, sync, sig_ok) for _ in range(self.rng.randint(lo, hi))]

    def _lit(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        v = self.rng.choice([self.rng.randint(0, 99), f"s{self.rng.randint(0, 9)}", [1, "x"], {"k": 2}])
        return {"t": "lit", "n": self._num(), "v": v}

    def _act(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        rng = self.rng
        n_args = rng.choice([0, 0, 1, 1, 2]) if depth < 5 else 0
        args = [
            self.node(depth + 1, sync, sig_ok) if rng.random() < 0.5 else self._lit(depth, sync, sig_ok)
            for _ in range(n_args)
        ]
        return {
            "t": "act",
            "n": self._num(),
            "fn": rng.choice("as"),
            "args": args,
            "fails": rng.choice([0, 0, 0, 0, 1, 2]),
            "boom": rng.random() < 0.12,
            "mw": rng.random() < 0.15,
        }

    def _sleep(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        how = "cairn" if sync else self.rng.choice(["cairn", "asyncio"])
        return {"t": "sleep", "n": self._num(), "s": self.rng.choice([0, 0.001, 0.003, 0.01]), "how": how}

    def _sig(self, depth: int, sync: bool, sig_ok: bool, modes: tuple[str, ...] = ()) -> dict[str, Any]:
        mode = self.rng.choice(modes or ("wait", "wait", "long", "never") + (() if sync else ("par",)))
        count = {"never": 1, "par": self.rng.randint(2, 3)}.get(mode) or self.rng.choice([1, 1, 2])
        return {"t": "sig", "n": self._num(), "count": count, "mode": mode, "s": self.rng.choice([0.002, 0.01])}

    def _nx(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        return {"t": "nx", "n": self._num()}

    def _selfsig(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        return {"t": "selfsig", "n": self._num()}

    def _rec(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        return {"t": "rec", "n": self._num(), "kind": self.rng.choice(["now", "random", "uuid"])}

    def _seq(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        return {"t": "seq", "n": self._num(), "body": self._some(depth, sync, sig_ok, 1, 4)}

    def _gather(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        rx = self.rng.random() < 0.5
        return {"t": "gather", "n": self._num(), "rx": rx, "body": self._some(depth, sync, sig_ok, 1, 4)}

    def _tg(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        return {"t": "tg", "n": self._num(), "body": self._some(depth, sync, sig_ok, 1, 3)}

    def _ascomp(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        return {"t": "ascomp", "n": self._num(), "body": self._some(depth, sync, sig_ok, 1, 4)}

    def _tasks(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        n = self._num()
        return {
            "t": "tasks",
            "n": n,
            "body": self._some(depth, sync, sig_ok, 1, 3),
            "mid": self.node(depth, sync, sig_ok),
        }

    def _race(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        mode = self.rng.choice(["first", "timeout"])
        return {"t": "race", "n": self._num(), "mode": mode, "body": self.node(depth, sync, sig_ok)}

    def _try(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        return {"t": "try", "n": self._num(), "body": self.node(depth, sync, sig_ok)}

    def _timeout(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        rng = self.rng
        return {
            "t": "timeout",
            "n": self._num(),
            "fast": rng.random() < 0.5,
            "style": rng.choice(["wait_for", "ctx", "shield"]),
            "s": rng.choice([0.002, 0.005, 0.02]),
            "body": self.node(depth, sync, sig_ok),
        }

    def _if(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        n = self._num()
        cond = self.node(depth, sync, sig_ok)
        return {
            "t": "if",
            "n": n,
            "cond": cond,
            "then": self.node(depth, sync, sig_ok),
            "else": self.node(depth, sync, sig_ok),
        }

    def _loop(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        return {
            "t": "loop",
            "n": self._num(),
            "count": self.rng.randint(1, 3),
            "body": self.node(depth + 1, sync, sig_ok),
        }

    def _until(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        return {
            "t": "until",
            "n": self._num(),
            "count": self.rng.randint(2, 4),
            "body": self.node(depth + 1, sync, sig_ok),
        }

    def _mem(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        return {"t": "mem", "n": self._num(), "later": self.rng.random() < 0.5, "body": self.node(depth, sync, sig_ok)}

    def _child(self, depth: int, sync: bool, sig_ok: bool) -> dict[str, Any]:
        rng = self.rng
        how = rng.choice(["child", "child", "call", "start", "start", "sync", "class"])
        n = self._num()
        tell = how == "start" and not sync and rng.random() < 0.3
        if tell:  # the parent sends the signals its child waits for (all in one commit)
            body = self._sig(depth, False, True, modes=("wait", "long", "par"))
        else:
            body = self.node(depth, how == "sync", how != "call")
        mid = self.node(depth, sync, sig_ok) if how == "start" and rng.random() < 0.5 else None
        again = how != "call" and rng.random() < 0.25
        return {"t": "child", "n": n, "how": how, "body": body, "mid": mid, "tell": tell, "again": again}


# --- the reference evaluator ----------------------------------------------------------------------


class RefBoom(Exception):
    """A Boom in the reference: the program raises it here."""


@dataclass
class Rec:
    """Something a run of the program does: an action call ("act"), signals the test sends ("sig"),
    a memory write ("mem"), a child run ("child"); `must` unless timing may skip it."""

    kind: str
    key: str
    run: str
    """The key of the run that does it ("root" or a child node's key)."""
    must: bool
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunRef:
    key: str
    id: str | None
    """The run's id (None: one Cairn derives, for a child awaited as a call)."""


@dataclass(frozen=True)
class At:
    """Where the reference is: the scope of keys, the run, and whether what happens here must."""

    scope: str
    run: RunRef
    must: bool


class Reference:
    """What a program computes as plain Python, and what its runs must (or may) do meanwhile."""

    def __init__(self, root_id: str) -> None:
        self.root_id = root_id
        self.records: list[Rec] = []

    def run(self, tree: Node) -> tuple[str, Any]:
        """("value", v) or ("boom", message)."""
        try:
            return "value", self.ev(tree, At("", RunRef("root", self.root_id), True))
        except RefBoom as exc:
            return "boom", str(exc)

    def ev(self, node: Node, at: At) -> Any:
        handler: Any = getattr(self, f"_{node['t']}")
        return handler(node, f"{at.scope}{node['n']}", at)

    def _record(self, kind: str, key: str, at: At, **data: Any) -> Rec:
        rec = Rec(kind, key, at.run.key, at.must, data)
        self.records.append(rec)
        return rec

    def _demote(self, mark: int, end: int | None = None) -> None:
        """What was recorded since `mark` may not happen after all (timing decides)."""
        for rec in self.records[mark:end]:
            rec.must = False

    def _each(self, body: list[Node], at: At) -> tuple[list[Any], bool]:
        """Every node's value, a Boom as "exc:<message>"; and whether one raised."""
        values, failed = [], False
        for b in body:
            try:
                values.append(self.ev(b, at))
            except RefBoom as exc:
                failed = True
                values.append(f"exc:{exc}")
        return values, failed

    def _lit(self, node: Node, key: str, at: At) -> Any:
        return node["v"]

    def _act(self, node: Node, key: str, at: At) -> Any:
        args = [self.ev(a, at) for a in node["args"]]
        value = None if node["boom"] else pf.act_value(node["fn"], key, args)
        self._record("act", key, at, fn=node["fn"], args=args, fails=node["fails"], boom=node["boom"], value=value)
        self.records[-1].data["mw"] = node["mw"]
        if node["boom"]:
            raise RefBoom(f"{key} boom")
        return value

    def _seq(self, node: Node, key: str, at: At) -> Any:
        return [self.ev(b, at) for b in node["body"]]

    def _gather(self, node: Node, key: str, at: At) -> Any:
        """(And a TaskGroup.) Without return_exceptions, a Boom makes the others' calls may: they
        run on unawaited until the run ends (a TaskGroup cancels them)."""
        mark = len(self.records)
        values, failed = self._each(node["body"], at)
        if failed and not node.get("rx"):
            self._demote(mark)
            raise RefBoom(f"{key} {node['t']}")
        return values

    _tg = _gather

    def _ascomp(self, node: Node, key: str, at: At) -> Any:
        return sorted(self._each(node["body"], at)[0], key=pf.canon)

    def _tasks(self, node: Node, key: str, at: At) -> Any:
        mark = len(self.records)
        values = self._each(node["body"], at)[0]
        mid_mark = len(self.records)
        try:
            mid = self.ev(node["mid"], at)
        except RefBoom:
            self._demote(mark, mid_mark)  # the tasks go on unawaited, until the run ends
            raise
        return [mid, *values]

    def _race(self, node: Node, key: str, at: At) -> Any:
        return self.ev(node["body"], at)

    def _try(self, node: Node, key: str, at: At) -> Any:
        try:
            return self.ev(node["body"], at)
        except RefBoom as exc:
            return f"caught:{exc}"

    def _sleep(self, node: Node, key: str, at: At) -> Any:
        return "slept"

    def _timeout(self, node: Node, key: str, at: At) -> Any:
        if node["fast"]:
            return self.ev(node["body"], at)
        mark = len(self.records)
        with contextlib.suppress(RefBoom):
            self.ev(node["body"], At(at.scope, at.run, False))
        self._demote(mark)
        return "timeout"

    def _if(self, node: Node, key: str, at: At) -> Any:
        cond = self.ev(node["cond"], at)
        return [cond, self.ev(node["then"] if pf.parity(cond) else node["else"], at)]

    def _loop(self, node: Node, key: str, at: At) -> Any:
        out = []
        for i in range(node["count"]):
            out.append(self.ev(node["body"], At(f"{key}.{i}/", at.run, at.must)))
            if node["t"] == "until" and pf.parity(out[-1]):
                break
        return out

    _until = _loop

    def _sig(self, node: Node, key: str, at: At) -> Any:
        if node["mode"] == "never":
            return ["sig-timeout"] * node["count"]
        payloads = [pf.sig_payload(key, i) for i in range(node["count"])]
        assert at.run.id is not None, "a signal wait in a run whose id the test cannot know"
        self._record("sig", key, at, run_id=at.run.id, name=f"sig:{key}", payloads=payloads)
        return payloads

    def _selfsig(self, node: Node, key: str, at: At) -> Any:
        return {"self": key}

    def _nx(self, node: Node, key: str, at: At) -> Any:
        return "not-found"

    def _mem(self, node: Node, key: str, at: At) -> Any:
        value = self.ev(node["body"], at)
        self._record("mem", key, at, mkey=f"m:{key}", value=value)
        return value

    def _rec(self, node: Node, key: str, at: At) -> Any:
        self._record("act", key, at, fn="a", args=None, fails=0, boom=False)  # its argument is recorded
        return "rec-ok"

    def _child(self, node: Node, key: str, at: At) -> Any:
        how = node["how"]
        child = RunRef(key, None if how == "call" else f"{self.root_id}/{key}")
        rec = self._record("child", key, at, how=how, id=child.id)
        mark = len(self.records)
        try:
            value = self.ev(node["body"], At(at.scope, child, at.must))
        except RefBoom as exc:
            rec.data["outcome"] = ("boom", str(exc))
            if how == "start" and node["mid"] is not None:
                self.ev(node["mid"], at)  # before the child's result is awaited
            raise RefBoom(str(exc)) from None
        finally:
            for told in self.records[mark:] if node["tell"] else ():
                told.data["by_parent"] = True
        rec.data["outcome"] = ("value", value)
        if node["again"] and how != "start":  # awaited again: the same outcome (a start joins by id)
            value = [value, value]
        if how == "start" and node["mid"] is not None:
            return [self.ev(node["mid"], at), value]
        return value


# --- a program in flight ----------------------------------------------------------------------------


@dataclass
class Program:
    id: str
    flow: Any
    tree: dict[str, Any]
    expected: tuple[str, Any]
    records: list[Rec]
    outcome: tuple[str, Any] | None = None
    _index: dict[tuple[str, str], Rec] = field(default_factory=dict)

    def record(self, kind: str, key: str) -> Rec | None:
        """The reference's record of `kind` for `key` (each key is recorded once)."""
        if not self._index:
            self._index = {(r.kind, r.key): r for r in self.records}
        return self._index.get((kind, key))

    @property
    def spec(self) -> dict[str, Any]:
        return {"node": self.tree, "scope": "", "root": self.id, "key": "root", "run_id": self.id}


@dataclass
class Seen:
    """What the runs of one program were found to have done."""

    runs: dict[str, str] = field(default_factory=dict)
    """Run key -> run id."""
    acts: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Action key -> (run id, step)."""
    memory: dict[str, Any] = field(default_factory=dict)


@dataclass
class Signal:
    run_id: str
    name: str
    payloads: list[dict[str, Any]]
    must: bool
    sent: int = 0
    dropped: str | None = None


class Fuzz:
    def __init__(self, client: cairn.Client, db_url: str, seed: int, label: str, cache_size: int | None) -> None:
        self.client = client
        self.db_url = db_url
        self.seed = seed
        self.label = label
        self.cache_size = cache_size
        self.rng = random.Random(seed)
        self.programs: dict[str, Program] = {}
        self.signals: list[Signal] = []
        self.problems: list[str] = []
        self.restarts = 0
        self.stats: Counter[str] = Counter()

    def problem(self, program: str, what: str) -> None:
        self.problems.append(f"{program}: {what}")

    # --- plan -------------------------------------------------------------------------------------

    def generate(self, count: int) -> None:
        gen = Gen(self.rng)
        for i in range(count):
            run_id = f"pf{i}"
            kind = self.rng.choices(["async", "sync", "class"], [7, 2, 1])[0]
            size = self.rng.randint(6, 28)
            tree = gen.sync_program(size) if kind == "sync" else gen.program(size)
            flow = {"async": pf.program, "sync": pf.program_sync, "class": pf.ProgramClass}[kind]
            ref = Reference(run_id)
            expected = ref.run(tree)
            self.programs[run_id] = Program(run_id, flow, tree, expected, ref.records)
            for rec in ref.records:
                if rec.kind == "sig" and not rec.data.get("by_parent"):
                    self.signals.append(Signal(rec.data["run_id"], rec.data["name"], rec.data["payloads"], rec.must))

    # --- running ----------------------------------------------------------------------------------

    def worker_options(self, rng: random.Random) -> dict[str, Any]:
        """A worker's options: the test's cache size, or (None) one of none, one or a few runs."""
        cache_size = self.cache_size if self.cache_size is not None else rng.choice([0, 0, 1, 4])
        return {"poll_interval": 0.05, "lease": 5.0, "cache_size": cache_size}

    async def run(self) -> None:
        worker = cairn.Worker(self.client, **self.worker_options(self.rng))
        own: cairn.Client | None = None
        await worker.start()
        settled = asyncio.Event()
        try:
            for prog in self.programs.values():
                handle = await self.client.start(prog.flow, prog.spec, id=prog.id)
                assert handle.created, prog.id
            churn = asyncio.create_task(self._churn(settled, [worker, own]))
            try:
                await self.settle()
            finally:
                settled.set()
                worker, own = await churn
        finally:
            await worker.stop()
            if own is not None:
                await own.close()

    async def _churn(self, settled: asyncio.Event, current: list[Any]) -> tuple[cairn.Worker, cairn.Client | None]:
        """Replace the worker each time a few more action attempts have begun (as one begins: the
        stop lands while it runs, or records its result), until everything has settled."""
        worker, own = current
        rng = random.Random(self.seed * 7 + 1)
        loop = asyncio.get_running_loop()
        due = asyncio.Event()
        countdown = [0]

        def attempt_began() -> None:
            countdown[0] -= 1
            if countdown[0] == 0:
                loop.call_soon_threadsafe(due.set)

        pf.HOOK.append(attempt_began)
        stop_waiting = asyncio.ensure_future(settled.wait())
        try:
            while not settled.is_set():
                due.clear()
                countdown[0] = rng.randint(2, 25)
                await asyncio.wait(
                    [asyncio.ensure_future(due.wait()), stop_waiting], timeout=5.0, return_when=asyncio.FIRST_COMPLETED
                )
                if settled.is_set():
                    break
                grace = rng.choice([0.0, 0.0, 0.001, 0.01, 0.05, 0.5])
                next_own = cairn.Client(self.db_url) if rng.random() < 0.4 else None
                fresh = cairn.Worker(next_own or self.client, **self.worker_options(rng))
                overlap = rng.random() < 0.4
                t0 = time.monotonic()
                if overlap:
                    await fresh.start()
                await worker.stop(grace=grace)
                if os.environ.get("CAIRN_FUZZ_DEBUG"):
                    print(f"restart grace={grace} overlap={overlap} stop took {time.monotonic() - t0:.2f}s")
                if own is not None:
                    await own.close()
                if not overlap:
                    await fresh.start()
                worker, own = fresh, next_own
                self.restarts += 1
        finally:
            pf.HOOK.clear()
            stop_waiting.cancel()
        return worker, own

    async def settle(self) -> None:
        """Send the signals as their runs appear, until every run of every program has ended."""
        ours = set(self.programs)
        paused: list[RunRow] = []

        async def round_() -> bool:
            rows = {r.id: r for r in await self.client.list_runs(limit=10_000)}
            for sig in self.signals:
                await self._send(sig, rows)
            mine = [r for r in rows.values() if _root_of(r) in ours]
            paused[:] = [r for r in mine if r.status == RunStatus.PAUSED]
            if paused:
                return True
            return all(r.status in TERMINAL for r in mine) and all(p in rows for p in ours)

        try:
            await eventually(round_, timeout=60 + 10 * SCALE, what="every run ended")
        except AssertionError:
            rows = [r for r in await self.client.list_runs(limit=10_000) if r.status not in TERMINAL]
            for row in rows[:5]:
                self.problem(_root_of(row), f"wedged: {await self.explain(row)}")
            self.problem("-", f"{len(rows)} run(s) never ended")
            return
        for row in paused:
            self.problem(_root_of(row), f"paused ({row.pause_reason}): {await self.explain(row)}")

    async def _send(self, sig: Signal, rows: dict[str, RunRow]) -> None:
        while sig.dropped is None and sig.sent < len(sig.payloads):
            row = rows.get(sig.run_id)
            if row is None:
                return  # not started yet
            try:
                await self.client.get(sig.run_id).signal(sig.name, sig.payloads[sig.sent])
            except IllegalTransition as exc:
                sig.dropped = str(exc)
                return
            except RunNotFound:
                return
            sig.sent += 1

    async def explain(self, row: RunRow) -> str:
        handle = self.client.get(row.id)
        lines = [f"{row.id} {row.workflow} {row.status.value} reason={row.pause_reason} error={_short(row.error)}"]
        lines += [
            f"    step {s.seq} {s.kind.value} {s.name} {s.status.value} attempt={s.attempt} args={_short(s.args)} "
            f"result={_short(s.result)} error={_short(s.error)}"
            for s in await handle.steps()
        ]
        lines += [f"    event {e.kind} {e.step or ''} {_short(e.detail)}" for e in (await handle.events())[-12:]]
        return "\n".join(lines)

    # --- checking ----------------------------------------------------------------------------------

    async def check(self) -> None:
        rows = [r for r in await self.client.list_runs(limit=10_000)]
        by_program: dict[str, list[RunRow]] = {}
        for row in rows:
            by_program.setdefault(_root_of(row), []).append(row)
        for prog in self.programs.values():
            await self.check_program(prog, by_program.get(prog.id, []))

    async def check_program(self, prog: Program, rows: list[RunRow]) -> None:
        root = next((r for r in rows if r.id == prog.id), None)
        if root is None:
            self.problem(prog.id, "the run does not exist")
            return
        prog.outcome = got = _outcome(root)
        if got != prog.expected:
            self.problem(prog.id, f"outcome {_short(got, 600)}\n    expected {_short(prog.expected, 600)}")
        self.stats[f"outcome:{got[0]}"] += 1
        seen = Seen()
        for row in rows:
            await self._check_run(prog, row, seen)
        for rec in prog.records:
            if rec.must and rec.kind == "act" and rec.key not in seen.acts:
                self.problem(prog.id, f"action {rec.key} ({rec.run}) must have run, and has no step")
            if rec.must and rec.kind == "child" and rec.key not in seen.runs:
                self.problem(prog.id, f"child {rec.key} must have run, and never started")
        self._check_memory(prog, seen.memory)

    async def _check_run(self, prog: Program, row: RunRow, seen: Seen) -> None:
        """One run of the program (the root or a child): its outcome, steps and memory."""
        run_key = json.loads(row.input)["spec"]["key"]
        if run_key in seen.runs:
            self.problem(prog.id, f"child {run_key} ran twice: {seen.runs[run_key]} and {row.id}")
        seen.runs[run_key] = row.id
        if row.status not in TERMINAL:
            self.problem(prog.id, f"run {row.id} is {row.status.value} at the end")
        if run_key != "root":
            self._check_child(prog, row, prog.record("child", run_key))
        if row.workflow == pf.ProgramClass.__cairn_workflow__.id and row.status == RunStatus.COMPLETED:
            properties = json.loads(row.properties or "{}")
            if properties != {"key": run_key, "done": True}:
                self.problem(prog.id, f"run {row.id} completed with properties {properties}")
        handle = self.client.get(row.id)
        for step in await handle.steps():
            if row.status in TERMINAL and not step.status.is_resolved:
                self.problem(prog.id, f"run {row.id} ended with step {step.seq} {step.kind.value} {step.status.value}")
            if step.kind != StepKind.ACTION:
                continue
            key = step.args["key"]
            if key in seen.acts:
                self.problem(prog.id, f"action {key} has two steps: {seen.acts[key]} and {(row.id, step.seq)}")
            seen.acts[key] = (row.id, step.seq)
            rec = prog.record("act", key)
            if rec is None:
                self.problem(prog.id, f"action {key} (run {row.id}) is not a call the program makes: {step.args}")
                continue
            where = f"action {key} (run {row.id} step {step.seq})"
            self._check_call(prog, where, run_key, step, rec)
            self._check_outcome(prog, where, row, step, rec)
        seen.memory.update(await handle.memory())

    def _check_child(self, prog: Program, row: RunRow, rec: Rec | None) -> None:
        if rec is None:
            self.problem(prog.id, f"run {row.id} is a child the program never starts")
            return
        if rec.data["id"] is not None and row.id != rec.data["id"]:
            self.problem(prog.id, f"child {rec.key} has id {row.id}, not {rec.data['id']}")
        want = WORKFLOWS[rec.data["how"]].__cairn_workflow__.id
        if row.workflow != want:
            self.problem(prog.id, f"child {row.id} runs {row.workflow}, not {want}")
        if row.status == RunStatus.CANCELLED:
            self.stats["child:cancelled"] += 1
            if rec.must:
                self.problem(prog.id, f"child {row.id} was cancelled, yet the program awaits it in full")
            return
        got = _outcome(row)
        if got != rec.data["outcome"]:
            self.problem(prog.id, f"child {row.id}: {_short(got, 400)}; expected {_short(rec.data['outcome'], 400)}")

    def _check_call(self, prog: Program, where: str, run_key: str, step: Any, rec: Rec) -> None:
        """The step is the call the program makes: in its run, of its action, with its arguments."""
        data = rec.data
        if run_key != rec.run:
            self.problem(prog.id, f"{where} is in run {run_key}; the program makes it in {rec.run}")
        if step.name != ACTION_IDS[data["fn"]]:
            self.problem(prog.id, f"{where} runs {step.name}, not {ACTION_IDS[data['fn']]}")
        if data["args"] is not None and step.args["args"] != data["args"]:
            self.problem(prog.id, f"{where} args {_short(step.args['args'])}, expected {_short(data['args'])}")
        if step.args["fails"] != data["fails"] or step.args["boom"] != data["boom"]:
            self.problem(prog.id, f"{where} has options {step.args}, expected {data}")

    def _check_outcome(self, prog: Program, where: str, row: RunRow, step: Any, rec: Rec) -> None:
        """The step's outcome is the action's, from as many attempts as its failures need, each
        attempt run once and seeing the step's idempotency key."""
        data, status, key = rec.data, step.status, rec.key
        self.stats[f"step:{status.value}"] += 1
        if status == StepStatus.COMPLETED and (
            data["boom"] or (data["args"] is not None and step.result != data["value"])
        ):
            self.problem(prog.id, f"{where} returned {_short(step.result)}, expected {data.get('value')}")
        elif status == StepStatus.FAILED and (
            not data["boom"] or step.error != {**step.error, "type": "Boom", "message": f"{key} boom"}
        ):
            self.problem(prog.id, f"{where} failed: {_short(step.error)}")
        elif status not in (StepStatus.COMPLETED, StepStatus.FAILED) and rec.must:
            self.problem(prog.id, f"{where} is {status.value}, yet the program awaits it")
        if status not in (StepStatus.COMPLETED, StepStatus.FAILED):
            return
        if step.attempt < data["fails"] + 1:
            self.problem(prog.id, f"{where} took {step.attempt} attempts; its {data['fails']} failures need more")
        if step.attempt > data["fails"] + 1:
            self.stats["attempts:extra"] += 1  # at least once: an attempt cut short ran again
        attempts = pf.ATTEMPTS.get(key, [])
        if len(attempts) != len(set(attempts)):  # an attempt ran twice: its lease's fence failed
            self.problem(prog.id, f"{where}: attempts ran {sorted(attempts)}")
        seen = pf.IDEMPOTENCY.get(key, set())
        if seen != {f"{row.id}:{step.seq}"}:
            self.problem(prog.id, f"{where}: its attempts saw idempotency keys {sorted(seen)}")

    def _check_memory(self, prog: Program, memory: dict[str, Any]) -> None:
        expected: dict[str, tuple[Any, bool]] = {}
        for rec in prog.records:
            if rec.kind == "mem":
                expected[rec.data["mkey"]] = (rec.data["value"], rec.must)
            elif rec.kind == "act" and rec.data.get("mw") and not rec.data["boom"]:
                expected[f"am:{rec.key}"] = (rec.data["value"], rec.must)
        for mkey, (value, must) in expected.items():
            if mkey in memory:
                if memory[mkey] != value:
                    self.problem(prog.id, f"memory {mkey} = {_short(memory[mkey])}, expected {_short(value)}")
            elif must:
                self.problem(prog.id, f"memory {mkey} was never written")
        for mkey in memory:
            if mkey not in expected:
                self.problem(prog.id, f"memory {mkey} is written, though the program never writes it")

    async def verdict(self) -> str:
        shown = "\n  ".join(self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        at_fault = list(dict.fromkeys(p.split(": ", 1)[0] for p in self.problems if p.startswith("pf")))[:2]
        details = []
        for pid in at_fault:
            prog = self.programs[pid]
            details.append(f"program {pid} ({prog.flow.__cairn_workflow__.id}): {pf.canon(prog.tree)}")
            for row in await self.client.list_runs(limit=10_000):
                if _root_of(row) == pid:
                    details.append(await self.explain(row))
        return (
            f"{len(self.problems)} problem(s), seed={self.seed} ({self.label}; rerun with "
            f"CAIRN_FUZZ_SEED={self.seed})\n  {shown}{more}\n" + "\n".join(details)
        )


def _root_of(row: RunRow) -> str:
    return row.id.split("/", 1)[0].split(":", 1)[0]


def _outcome(row: RunRow) -> tuple[str, Any]:
    if row.status == RunStatus.COMPLETED:
        return "value", json.loads(row.result or "null")
    error = json.loads(row.error or "{}")
    if row.status == RunStatus.FAILED and error.get("type") == "Boom":
        return "boom", error.get("message")
    return row.status.value, f"{error.get('type')}: {error.get('message')}"


def _short(value: Any, limit: int = 200) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


# --- the tests --------------------------------------------------------------------------------------


async def fuzz_programs(client: cairn.Client, db_url: str, label: str, seed: int, cache_size: int | None) -> None:
    fuzz = Fuzz(client, db_url, seed, label, cache_size)
    fuzz.generate(max(4, int(160 * SCALE)))
    began = time.monotonic()
    await fuzz.run()
    ran = time.monotonic() - began
    await fuzz.check()
    assert not fuzz.problems, await fuzz.verdict()
    outcomes = Counter(p.outcome[0] for p in fuzz.programs.values() if p.outcome)
    print(
        f"\n{label} seed={seed}: {len(fuzz.programs)} programs, {len(fuzz.signals)} signal waits, "
        f"{pf.total_invocations()} action attempts, {fuzz.restarts} worker restarts in {ran:.1f}s; "
        f"outcomes {dict(outcomes)}; {dict(sorted(fuzz.stats.items()))}"
    )


async def test_program_fuzz(client: cairn.Client, db_url: str) -> None:
    await fuzz_programs(client, db_url, f"cached on {client.url.split(':')[0]}", SEED, cache_size=1000)


async def test_program_fuzz_replaying(client: cairn.Client, db_url: str) -> None:
    """The same with (nearly) no run kept in memory: each worker keeps none, one or four, so that
    most activations replay their run's journal, and runs are evicted while their actions run."""
    await fuzz_programs(client, db_url, f"small cache on {client.url.split(':')[0]}", SEED + 1, cache_size=None)


async def test_program_fuzz_resting(client: cairn.Client, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with every waiting run's copy kept from its first step (by default only runs of 16
    steps or more are): a woken run goes on from a worker's copy when nobody touched it since, and
    a copy gone stale (another worker claimed the run, a worker restarted) must never be used."""
    monkeypatch.setattr(runner, "RESTING_MIN_STEPS", 1)
    await fuzz_programs(client, db_url, f"resting on {client.url.split(':')[0]}", SEED + 2, cache_size=1000)


# --- what the fuzz found, forced ----------------------------------------------------------------------


async def test_a_signal_survives_a_deadlock_with_a_commit(pg_server: str, pg_template: str) -> None:
    """Met by the fuzz on PostgreSQL (seed 20250613, small cache): `handle.signal` raised
    psycopg.errors.DeadlockDetected to its caller, the signal not sent. Forced here: a worker's
    commit holds a run's row (its fence, FOR NO KEY UPDATE) and then locks it FOR UPDATE (as
    `resolve_parent` locks a parent whose child ended in the same group commit, or cancelling an
    abandoned child locks its parent), while a signal to that run is on its way. The signal's
    INSERT took a FOR KEY SHARE lock on the run (its foreign key's check) and its UPDATE
    (`wake_run`) waited for the commit, which waited for that KEY SHARE: PostgreSQL refused the
    signal. Now the signal locks the run's row first, waiting holding nothing, and runs again on a
    conflict as control operations do."""
    name = f"cairn_t_{uuid.uuid4().hex[:12]}"
    _admin(pg_server, f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    url = _with_db(pg_server, name)
    client = cairn.Client(url)
    node = {"t": "sig", "n": 1, "count": 1, "mode": "wait", "s": 0.002}
    spec = {"node": node, "scope": "", "root": "waits", "key": "root", "run_id": "waits"}
    try:
        async with cairn.Worker(client, poll_interval=0.05):
            handle = await client.start(pf.program, spec, id="waits")
            await eventually(lambda: status_is(handle, RunStatus.WAITING), what="the run waiting for its signal")
        commit = psycopg.connect(url)  # a worker's commit: its fence of the run first
        try:
            commit.execute("SELECT 1 FROM cairn_runs WHERE id = 'waits' FOR NO KEY UPDATE")
            send = asyncio.ensure_future(handle.signal("sig:1", pf.sig_payload("1", 0)))
            await eventually(lambda: waits_for_a_lock(url), what="the signal waiting for the run's row")
            with contextlib.suppress(psycopg.errors.DeadlockDetected):  # the other possible loser
                await asyncio.to_thread(commit.execute, b"SELECT status FROM cairn_runs WHERE id = 'waits' FOR UPDATE")
        finally:
            commit.rollback()
            commit.close()
        await send  # raised DeadlockDetected, the signal not sent
        async with cairn.Worker(client, poll_interval=0.05):
            assert await handle.result(timeout=20) == [pf.sig_payload("1", 0)]
    finally:
        await client.close()
        _admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
