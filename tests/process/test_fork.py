"""A client used before `os.fork()` (as `multiprocessing` does on Linux by default): in the child,
its calls waited for ever on a loop thread that did not exist there. Now the child is told at once
to make a client of its own, `cairn.connect()` gives it one, and the parent's goes on untouched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.process, pytest.mark.timeout(60)]

SCRIPT = """
import asyncio, os, sys
import cairn
from cairn.bench import flows

url = sys.argv[1]

async def use_async(client):
    async with cairn.Worker(client, poll_interval=0.05):
        return await client.run(flows.three_steps, 1, timeout=20)

blocking = cairn.connect_sync(url)
shared = cairn.connect(url)
print("parent", asyncio.run(use_async(shared)), len(blocking.list_runs()), flush=True)
pid = os.fork()
if pid == 0:
    said = []
    for use in (lambda: blocking.list_runs(), lambda: asyncio.run(shared.list_runs())):
        try:
            use()
        except RuntimeError as exc:
            said.append("forked from" in str(exc) and "Make a new client in this process" in str(exc))
    fresh = cairn.connect(url)
    ran = asyncio.run(use_async(fresh))
    blocking.close()  # the parent's: left to it
    print("child", said, ran, fresh is not shared, flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
runs = len(blocking.list_runs())
print("parent", os.waitstatus_to_exitcode(status), runs, asyncio.run(use_async(shared)), flush=True)
blocking.close()
"""


def test_a_client_used_in_a_forked_child_says_so_and_the_parents_goes_on(db_url: str) -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, db_url], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["parent 4 1", "child [True, True] 4 True", "parent 0 2 4"]


def _run(script: str, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


FORK_IN_A_WRITE = """
import asyncio, faulthandler, os, sys, threading
import cairn
from cairn.bench import flows

url = sys.argv[1]
client = cairn.connect(url)
asyncio.run(client.list_runs())
entered, release = threading.Event(), threading.Event()

def hold(tx):
    entered.set()
    release.wait()  # the write transaction stays open until a fork begins

holder = threading.Thread(target=lambda: asyncio.run(client.store.db.transaction(hold)))
holder.start()
entered.wait()
# Registered after Cairn's, so run before them: the fork begins while the transaction is open.
os.register_at_fork(before=release.set)
pid = os.fork()
if pid == 0:
    faulthandler.dump_traceback_later(30, exit=True)
    try:
        fresh = cairn.connect(url)
        print("child", asyncio.run(fresh.start(flows.three_steps, 1, id="from-child")).id, flush=True)
        code = 0
    except BaseException as exc:
        print("child", type(exc).__name__, exc, flush=True)
        code = 1
    os._exit(code)
holder.join()
_, status = os.waitpid(pid, 0)
print("parent", os.waitstatus_to_exitcode(status), [r.id for r in asyncio.run(client.list_runs())], flush=True)
"""


def test_a_process_forked_during_a_sqlite_write_can_write_with_a_client_of_its_own(tmp_path: Path) -> None:
    """A fork that lands while another thread of the parent is inside a write transaction (an embedded
    worker committing) waits for it to end: the child inherited SQLite's lock state of a transaction
    in flight, and its own client's every write was DatabaseLocked, for ever."""
    lines = _run(FORK_IN_A_WRITE, f"sqlite:///{tmp_path}/cairn.db?busy_timeout=2")
    assert lines == ["child from-child", "parent 0 ['from-child']"]


PARENT_CLOSES_FIRST = """
import asyncio, faulthandler, os, sys
import cairn
from cairn.bench import flows

url = sys.argv[1]
client = cairn.connect(url)
asyncio.run(client.list_runs())
started, closed = os.pipe(), os.pipe()
pid = os.fork()
if pid == 0:
    faulthandler.dump_traceback_later(30, exit=True)

    async def child():
        fresh = cairn.connect(url)
        await fresh.start(flows.three_steps, 1, id="before")
        os.write(started[1], b"1")
        await asyncio.to_thread(os.read, closed[0], 1)  # the parent has closed its connections
        await fresh.start(flows.three_steps, 2, id="after")

    asyncio.run(child())
    os._exit(0)
os.read(started[0], 1)
asyncio.run(client.close())
os.write(closed[1], b"1")
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), sorted(r.id for r in asyncio.run(cairn.Client(url).list_runs())), flush=True)
"""


def test_a_forked_sqlite_writer_keeps_its_writes_when_the_parent_closes_first(tmp_path: Path) -> None:
    """The child's own connections take SQLite's file locks as any process's do: with the parent's
    lock state inherited, they took none, and the parent closing its last connection thought itself
    alone, checkpointed and deleted the write-ahead log the child went on writing to (lost)."""
    assert _run(PARENT_CLOSES_FIRST, f"sqlite:///{tmp_path}/cairn.db") == ["0 ['after', 'before']"]


CLOSE_IN_CHILD = """
import asyncio, faulthandler, logging, os, sys, threading
import cairn

url = sys.argv[1]
client = cairn.connect(url)
asyncio.run(client.list_runs())
up, stop = threading.Event(), threading.Event()
worker = cairn.Worker(client, poll_interval=0.05, grace=60)

async def serve():
    async with worker:  # an embedded worker, on a thread of its own
        up.set()
        await asyncio.to_thread(stop.wait)

serving = threading.Thread(target=asyncio.run, args=(serve(),))
serving.start()
up.wait()
pid = os.fork()
if pid == 0:
    faulthandler.dump_traceback_later(20, exit=True)  # a close or stop waiting for ever: exit code 1
    said = []
    logging.getLogger("cairn").addHandler(logging.Handler())
    logging.getLogger("cairn").handlers[-1].emit = lambda record: said.append(record.getMessage())
    asyncio.run(worker.stop())  # shared shutdown code, a pool's finalizer
    print("child stopped the worker, saying", said, flush=True)
    asyncio.run(client.close())
    asyncio.run(client.close())
    try:
        asyncio.run(client.list_runs())
    except RuntimeError as exc:
        print("child closed; still refused:", "forked from" in str(exc), flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("parent", os.waitstatus_to_exitcode(status), asyncio.run(client.list_runs()), flush=True)
stop.set()
serving.join()
asyncio.run(client.close())
"""


def test_closing_the_parents_async_client_in_a_forked_child_returns_at_once(db_url: str) -> None:
    """It waited for ever on the parent's threads and loop, which are not in the child, and stopping
    the parent's worker there waited out its grace; both are left to the parent, which goes on."""
    assert _run(CLOSE_IN_CHILD, db_url) == [
        "child stopped the worker, saying []",
        "child closed; still refused: True",
        "parent 0 []",
    ]


UNUSED_BLOCKING = """
import asyncio, faulthandler, os, sys
import cairn
from cairn.bench import flows

url = sys.argv[1]
blocking = cairn.connect_sync(url)  # made at import (gunicorn --preload), not used before the fork
pid = os.fork()
if pid == 0:
    faulthandler.dump_traceback_later(30, exit=True)
    try:
        print("child", blocking.start(flows.three_steps, 1, id="from-child").id, len(blocking.list_runs()), flush=True)
        blocking.close()
        code = 0
    except BaseException as exc:
        print("child", type(exc).__name__, exc, flush=True)
        code = 1
    os._exit(code)
_, status = os.waitpid(pid, 0)
print("parent", os.waitstatus_to_exitcode(status), [r.id for r in blocking.list_runs()], flush=True)
blocking.close()
"""


def test_a_blocking_client_unused_before_a_fork_works_in_the_child(db_url: str) -> None:
    """It was refused there as opened in the parent, having opened nothing: its loop thread started
    when it was made. The parent's goes on."""
    assert _run(UNUSED_BLOCKING, db_url) == ["child from-child 1", "parent 0 ['from-child']"]


FORK_WHILE_WAITING_FOR_ANOTHER_PROCESS = """
import asyncio, os, sqlite3, subprocess, sys, threading
import cairn
from cairn.bench import flows

url, path = sys.argv[1], sys.argv[2]
client = cairn.Client(url)
asyncio.run(client.store.open())
waiting = threading.Event()

class Watched(threading.Event):
    def wait(self, timeout=None):  # the write waits here between two tries for the lock
        waiting.set()
        return super().wait(timeout)

client.store.db._interrupt = Watched()
holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
holder.execute("BEGIN IMMEDIATE")  # another connection holds the write lock until after the fork
done = []
writer = threading.Thread(target=lambda: done.append(asyncio.run(client.start(flows.three_steps, 1, id="w")).id))
writer.start()
waiting.wait()
pid = os.fork()  # waited for that write until the lock came, or the busy timeout failed it
if pid == 0:
    os._exit(0)
holder.execute("COMMIT")
writer.join()
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), done, flush=True)
"""


def test_a_fork_goes_by_a_write_waiting_for_another_connections_lock(tmp_path: Path) -> None:
    """A fork waits for the transactions in flight, but not for one waiting for a write lock held
    elsewhere (up to the busy timeout): that one lets the fork by, then goes on waiting."""
    path = tmp_path / "cairn.db"
    assert _run(FORK_WHILE_WAITING_FOR_ANOTHER_PROCESS, f"sqlite:///{path}?busy_timeout=10", str(path)) == ["0 ['w']"]


IMPORTING = """
import os, sys, threading
import cairn
from cairn import telemetry

started_r, started_w = os.pipe()
gate_r, gate_w = os.pipe()
os.environ["GATE"], os.environ["STARTED"] = str(gate_r), str(started_w)
threading.Thread(target=telemetry._trace_api, daemon=True).start()  # a worker's first span
os.read(started_r, 1)  # that thread is inside the import now, holding its module's lock
threading.Thread(target=lambda: (threading.Event().wait(0.2), os.write(gate_w, b"x")), daemon=True).start()
pid = os.fork()
if pid == 0:
    signal_alarm = __import__("signal").alarm(5)  # a child stuck in the import dies, and says so
    print("child", telemetry._trace_api().NAME, flush=True)
    os._exit(0)
_, status = os.waitpid(pid, 0)
print("parent", os.waitstatus_to_exitcode(status), telemetry._trace_api().NAME, flush=True)
"""

SLOW_TRACE_API = """
import os
os.write(int(os.environ["STARTED"]), b"x")
os.read(int(os.environ["GATE"]), 1)
NAME = "the slow import finished"
"""


def test_a_fork_during_the_first_import_of_opentelemetry_leaves_the_child_a_working_import(tmp_path: Path) -> None:
    """A worker's first span imports OpenTelemetry's API on the worker's thread; a fork in the
    middle of that import (an app forking right after its embedded worker started) left the child
    the import's lock, held by a thread it does not have: its first `start()` hung for ever. The
    fork now waits for the import to end. Here the import is a stand-in that waits on a pipe."""
    package = tmp_path / "opentelemetry"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "trace.py").write_text(SLOW_TRACE_API)
    done = subprocess.run(
        [sys.executable, "-c", IMPORTING],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=50,
        env={**__import__("os").environ, "PYTHONPATH": f"{tmp_path}:{ROOT / 'src'}"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["child the slow import finished", "parent 0 the slow import finished"]
