"""SIGTERM to a real worker process in the middle of an action, with a second worker waiting.

What a user relies on: a stop never runs one attempt twice at once (each attempt writes start and
end marks with its pid and the time; no two intervals of one action may overlap), work that can
finish within the grace finishes there and runs once, what cannot is handed over at once when it
can be stopped (async) and kept until it ends when it cannot (a plain `def` action's thread), a
stopping worker takes no new work, and a second signal stops at once without a traceback.
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

import cairn
from tests.conftest import eventually
from tests.helpers import registered

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.process.shutdownflows"
pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]


@dataclass(frozen=True)
class Mark:
    event: str
    tag: str
    attempt: int
    pid: int
    at: float


class Marks:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[Mark]:
        marks = []
        for line in self.path.read_text().splitlines():
            event, tag, attempt, pid, at = line.split()
            marks.append(Mark(event, tag, int(attempt), int(pid), float(at)))
        return marks

    def of(self, tag: str, event: str = "start") -> list[Mark]:
        return [m for m in self.read() if m.tag == tag and m.event == event]

    async def seen(self, tag: str, event: str = "start") -> bool:
        return bool(self.of(tag, event))

    def assert_never_overlapping(self, tag: str) -> None:
        """Each attempt's interval ends before the next one starts (an unfinished one never ended)."""
        by_attempt: dict[tuple[int, int], list[Mark]] = collections.defaultdict(list)
        for m in self.read():
            if m.tag == tag:
                by_attempt[(m.attempt, m.pid)].append(m)
        spans = sorted(
            (min(m.at for m in ms if m.event == "start"), max((m.at for m in ms if m.event == "end"), default=None))
            for ms in by_attempt.values()
        )
        for (_, end), (next_start, _) in itertools.pairwise(spans):
            assert end is not None and end <= next_start, f"attempts of {tag} overlapped: {spans}"


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    stderr: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.stderr.read_text(errors="replace")

    def exited_within(self, seconds: float) -> int:
        return self.popen.wait(timeout=seconds)


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Marks:
    path = tmp_path / "marks.log"
    path.touch()
    monkeypatch.setenv("CAIRN_MARKS", str(path))
    return Marks(path)


@pytest.fixture
def spawn(db_url: str, tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    procs: list[Proc] = []

    def start(*options: str) -> Proc:
        stderr = tmp_path / f"worker-{len(procs)}.stderr"
        with open(stderr, "wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", "cairn.cli.main", "worker", MODULE, "--db", db_url, "--poll", "0.1", *options],
                cwd=ROOT,
                env=os.environ.copy(),
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        procs.append(Proc(popen, stderr))
        return procs[-1]

    yield start
    for p in procs:
        if p.popen.poll() is None:
            p.popen.kill()
        p.popen.wait(timeout=10)


async def _started(
    client: cairn.Client, spawn: Callable[..., Proc], marks: Marks, workflow: str, tag: str, *options: str
) -> tuple[Proc, cairn.RunHandle]:
    """A first worker running `workflow`'s long action; the run's handle."""
    first = spawn(*options)
    await eventually(lambda: registered(client, workflow), timeout=30, what="the first worker registered")
    handle = await client.start(f"{MODULE}.{workflow}", tag)
    await eventually(lambda: marks.seen(tag), timeout=30, what="the long action started")
    return first, handle


async def _standing_by(client: cairn.Client, spawn: Callable[..., Proc]) -> Proc:
    """A second worker, live and waiting for work."""
    second = spawn("--lease", "10")

    async def live() -> bool:
        return any(w.pid == second.pid for w in await client.list_workers())

    await eventually(live, timeout=30, what="the second worker live")
    return second


async def test_sigterm_mid_sync_action_finishes_it_once_and_takes_no_new_work(
    client: cairn.Client, spawn: Callable[..., Proc], marks: Marks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAIRN_ACTION_SECONDS", "3")
    first, handle = await _started(client, spawn, marks, "sync_then_quick", "s1", "--lease", "2", "--grace", "30")
    second = await _standing_by(client, spawn)
    first.popen.send_signal(signal.SIGTERM)

    assert await handle.result(timeout=60) == ["s1", "s1-next"]
    assert first.exited_within(30) == 0, first.output()
    assert len(marks.of("s1")) == 1, f"the action ran again: {marks.of('s1')}"
    assert marks.of("s1", "end")[0].pid == first.pid  # finished where it started, within the grace
    nxt = marks.of("s1-next")
    assert [m.pid for m in nxt] == [second.pid], "the stopping worker started the next action itself"
    marks.assert_never_overlapping("s1")
    steps = [s for s in await handle.steps() if s.kind == cairn.StepKind.ACTION]
    assert [s.attempt for s in steps] == [1, 1]


async def test_sigterm_keeps_a_sync_action_longer_than_the_grace_until_its_thread_ends(
    client: cairn.Client, spawn: Callable[..., Proc], marks: Marks, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 2 s lease: had the stopping worker let it lapse (or handed it over), the second worker
    # would start the action while the first one's thread still runs.
    monkeypatch.setenv("CAIRN_ACTION_SECONDS", "4")
    first, handle = await _started(client, spawn, marks, "sync_then_quick", "s2", "--lease", "2", "--grace", "0.5")
    await _standing_by(client, spawn)
    first.popen.send_signal(signal.SIGTERM)

    assert await handle.result(timeout=60) == ["s2", "s2-next"]
    assert first.exited_within(30) == 0, first.output()
    assert len(marks.of("s2")) == 1, f"the action ran twice: {marks.of('s2')}"
    marks.assert_never_overlapping("s2")
    assert "waiting for step 1 of run" in first.output()


async def test_sigterm_hands_an_async_action_longer_than_the_grace_over_at_once(
    client: cairn.Client, spawn: Callable[..., Proc], marks: Marks, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A 30 s lease, so that only a hand-over (not an expiry) lets the second worker take it soon.
    monkeypatch.setenv("CAIRN_ACTION_SECONDS", "60")
    first, handle = await _started(client, spawn, marks, "async_then_quick", "a1", "--lease", "30", "--grace", "0.5")
    second = await _standing_by(client, spawn)
    stopped_at = time.monotonic()
    first.popen.send_signal(signal.SIGTERM)

    assert first.exited_within(15) == 0, first.output()
    assert await handle.result(timeout=20) == ["a1", "a1-next"]
    assert time.monotonic() - stopped_at < 20  # well before the 30 s lease could have run out
    assert [(m.attempt, m.pid) for m in marks.of("a1")] == [(1, first.pid), (2, second.pid)]
    marks.assert_never_overlapping("a1")


async def test_sigterm_kills_an_isolated_action_longer_than_the_grace_before_handing_it_over(
    client: cairn.Client, spawn: Callable[..., Proc], marks: Marks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAIRN_ACTION_SECONDS", "60")
    first, handle = await _started(client, spawn, marks, "isolated_then_quick", "i1", "--lease", "30", "--grace", "0.5")
    await _standing_by(client, spawn)
    first.popen.send_signal(signal.SIGTERM)

    assert first.exited_within(15) == 0, first.output()
    assert await handle.result(timeout=20) == ["i1", "i1-next"]
    assert [m.attempt for m in marks.of("i1")] == [1, 2]
    # The second attempt looked, as it started, for the first one's process: already gone.
    assert marks.of("i1", "alone") and not marks.of("i1", "overlap"), marks.read()


async def test_an_isolated_action_ends_with_its_worker_killed_by_sigkill(
    client: cairn.Client, spawn: Callable[..., Proc], marks: Marks, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child running an isolated attempt outlived its SIGKILLed worker and ran the attempt to its
    end, beside the attempt the next worker took once the lease lapsed (two at once in a queue of
    concurrency 1). It ends with its worker now."""
    monkeypatch.setenv("CAIRN_ACTION_SECONDS", "60")
    first, handle = await _started(client, spawn, marks, "isolated_then_quick", "k1", "--lease", "2")
    await _standing_by(client, spawn)
    first.popen.kill()

    assert first.exited_within(10) == -signal.SIGKILL
    assert await handle.result(timeout=30) == ["k1", "k1-next"]
    assert [m.attempt for m in marks.of("k1")] == [1, 2]
    # The second attempt looked, as it started, for the first one's process: already gone.
    assert marks.of("k1", "alone") and not marks.of("k1", "overlap"), marks.read()


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_second_sigterm_stops_at_once_without_a_traceback(
    client: cairn.Client,
    spawn: Callable[..., Proc],
    marks: Marks,
    monkeypatch: pytest.MonkeyPatch,
    second: signal.Signals,
) -> None:
    monkeypatch.setenv("CAIRN_ACTION_SECONDS", "60")
    first, _ = await _started(client, spawn, marks, "sync_then_quick", "s3", "--lease", "2", "--grace", "30")
    first.popen.send_signal(signal.SIGTERM)

    async def stopping() -> bool:
        return "cairn worker: stopping" in first.output()

    await eventually(stopping, timeout=10, what="the first stop acknowledged")
    first.popen.send_signal(second)
    code = first.exited_within(10)
    out = first.output()
    assert code != 0
    assert "Traceback" not in out and "CancelledError" not in out, out
    assert "stopped at once" in out
    assert "exiting with 1 abandoned action call(s) still running" in out
    assert marks.of("s3", "end") == []  # nothing waited for the 60 s action


async def test_an_idle_worker_stops_without_claiming_it_abandoned_anything(
    client: cairn.Client, db_url: str, tmp_path: Path
) -> None:
    """Any live non-daemon thread was counted as an abandoned action: the store's pool threads,
    still alive for a moment after the store closed, made a quarter of idle stops on PostgreSQL
    say "exiting with 2 abandoned action threads still running" and leave by `os._exit`, which
    skips the interpreter's exit handlers. Forced here with a thread that is always there."""
    stderr = tmp_path / "worker.stderr"
    with open(stderr, "wb") as err:
        worker = subprocess.Popen(
            [sys.executable, "-m", "cairn.cli.main", "worker", MODULE, "tests.process.idle_thread", "--db", db_url],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        await eventually(lambda: registered(client, "sync_then_quick"), timeout=30, what="the worker registered")
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    out = stderr.read_text()
    assert "cairn worker: stopped" in out and "abandoned" not in out, out


async def test_grace_must_be_seconds_of_zero_or_more(client: cairn.Client) -> None:
    with pytest.raises(ValueError, match=r"grace must be seconds .* got -1"):
        cairn.Worker(client, grace=-1)
    assert cairn.Worker(client, grace=timedelta(minutes=2)).grace == 120.0
    refused = subprocess.run(
        [sys.executable, "-m", "cairn.cli.main", "worker", MODULE, "--grace", "-1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and "--grace" in refused.stderr


async def test_cairn_dev_stops_its_worker_gracefully_on_ctrl_c_from_the_terminal(
    client: cairn.Client, db_url: str, marks: Marks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cairn dev` (reloading by default) killed its worker 5 s into the graceful stop, whatever
    the grace: a `def` action of 8 s died mid-way, its run left to the lease. And a terminal's
    Ctrl-C reached the worker twice (itself, then passed on by the reloader), which it takes
    for "stop at once". The terminal's Ctrl-C goes to the whole process group, as here."""
    monkeypatch.setenv("CAIRN_ACTION_SECONDS", "8")
    stderr = tmp_path / "dev.stderr"
    with open(stderr, "wb") as err:
        dev = subprocess.Popen(
            [sys.executable, "-m", "cairn.cli.main", "dev", MODULE, "--db", db_url, "--port", "0", "--grace", "30"],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # its own group, as a shell gives a command it runs
        )
    try:
        await eventually(lambda: registered(client, "sync_then_quick"), timeout=30, what="the worker registered")
        await client.start(f"{MODULE}.sync_then_quick", "d1")
        await eventually(lambda: marks.seen("d1"), timeout=30, what="the long action started")
        os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C in the terminal
        assert dev.wait(timeout=60) == 0, stderr.read_text()
    finally:
        if dev.poll() is None:
            os.killpg(dev.pid, signal.SIGKILL)
            dev.wait()
    out = stderr.read_text()
    assert len(marks.of("d1", "end")) == 1, out  # the action finished within the grace
    assert "stopping now" not in out and "SIGKILL" not in out and "killing" not in out, out
    assert "cairn worker: stopped" in out, out
