"""The `cairn` command line run as a user runs it (a subprocess, a real SQLite file) on the error
paths SPEC.md names: bad input gives a one-line error and a non-zero exit, never a traceback, and
changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import ctrl_c_once_ready

FLOWS = """
    import cairn


    @cairn.action
    async def inc(x: int) -> int:
        return x + 1


    @cairn.workflow
    async def add(x: int) -> int:
        return await inc(x)


    @cairn.workflow
    async def book(id: str, key: str, queue: str = "front") -> str:
        return f"{id} {key} {queue}"
"""


def cairn(*args: str, cwd: Path, timeout: float = 60, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m cairn ARGS...` in `cwd` (CAIRN_DATABASE_URL unset: each test names its database)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CAIRN_DATABASE_URL", "COLUMNS")}
    if columns is not None:
        env["COLUMNS"] = str(columns)
    return subprocess.run(
        [sys.executable, "-m", "cairn", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "flows.py").write_text(textwrap.dedent(FLOWS))
    return tmp_path


def test_start_of_an_unknown_workflow_creates_no_database(project: Path) -> None:
    target = project / "data" / "cairn.db"
    done = cairn("start", "no.such.workflow", "--input", "[1]", "--db", f"sqlite:///{target}", cwd=project)
    assert done.returncode == 2, done.stderr
    assert "no workflow named 'no.such.workflow'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (project / "data").exists()  # neither the file nor its folder


def test_start_of_a_workflow_known_from_import_creates_the_database(project: Path) -> None:
    target = project / "data" / "cairn.db"
    done = cairn(
        "start", "flows.add", "--import", "flows", "--input", "[1]", "--db", f"sqlite:///{target}", cwd=project
    )
    assert done.returncode == 0, done.stderr
    assert target.exists()


def test_start_with_an_empty_id_is_refused(project: Path) -> None:
    url = f"sqlite:///{project}/c.db"
    done = cairn("start", "flows.add", "--import", "flows", "--input", "[1]", "--id", "", "--db", url, cwd=project)
    assert done.returncode == 2, done.stdout
    assert "run id" in done.stderr and "empty" in done.stderr
    assert not (project / "c.db").exists()


def test_a_workflow_taking_id_key_or_queue_gets_them_from_its_input_by_name(project: Path) -> None:
    """The start's own options (--id, --queue, --key) and the workflow's arguments of those names
    are apart: the input's `id` is the workflow's, --id the run's."""
    url = f"sqlite:///{project}/c.db"
    given = '{"id": "room-7", "key": "k-1", "queue": "back"}'
    done = cairn("start", "flows.book", "--import", "flows", "--input", given, "--id", "b-1", "--db", url, cwd=project)
    assert done.returncode == 0, done.stderr
    assert "run b-1: pending" in done.stdout
    done = cairn("show", "b-1", "--json", "--db", url, cwd=project)
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)["run"]
    assert run["input"] == {"id": "room-7", "key": "k-1", "queue": "back"}
    assert run["queue"] == "default"  # the workflow's `queue` argument is not the run's queue


def test_json_given_as_an_argument_is_refused_with_the_command_line_that_works(project: Path) -> None:
    url = f"sqlite:///{project}/c.db"
    done = cairn("start", "flows.add", '{"x": 1}', "--import", "flows", "--db", url, cwd=project)
    assert done.returncode == 2, done.stdout
    assert "cairn start flows.add --input '{\"x\": 1}' --import flows --db" in done.stderr, done.stderr
    assert not (project / "c.db").exists()  # nothing was started
    done = cairn("signal", "r-1", "approve", "true", "--db", url, cwd=project)
    assert done.returncode == 2
    assert "JSON goes in --payload: cairn signal r-1 approve --payload true --db" in done.stderr, done.stderr
    done = cairn("start", "flows.add", "one", "two", "--db", url, cwd=project)
    assert done.returncode == 2
    assert "unexpected extra arguments one two" in done.stderr and "--input" not in done.stderr.splitlines()[-1]
    # The same text as an argument before it, or as an option's value: the suggestion moves the extra one.
    done = cairn("signal", "1", "approve", "1", "--db", url, cwd=project)
    assert "cairn signal 1 approve --payload 1 --db" in done.stderr, done.stderr
    done = cairn("start", "flows.add", "--id", "[1]", "[1]", "--db", url, cwd=project)
    assert "cairn start flows.add --id '[1]' --input '[1]' --db" in done.stderr, done.stderr


BROKEN = """
    import cairn

    raise RuntimeError("boom at import")
"""


@pytest.mark.parametrize("command", [["worker"], ["dev", "--no-reload", "--port", "0"], ["replay"]])
def test_a_module_that_fails_to_import_is_a_one_line_error(project: Path, command: list[str]) -> None:
    """`cairn replay` exits 2 for it: its exit 1 says that a run diverged, which a deploy acts on."""
    (project / "broken.py").write_text(textwrap.dedent(BROKEN))
    done = cairn(*command, "broken", "--db", f"sqlite:///{project}/c.db", cwd=project)
    assert done.returncode == (2 if command == ["replay"] else 1), done.stderr
    assert "Traceback" not in done.stderr
    assert "cannot import module 'broken': RuntimeError: boom at import" in done.stderr
    assert f"raised at {project / 'broken.py'}, line 4" in done.stderr  # where, in the user's code


SLOW_TO_IMPORT = """
    import sys, threading

    print("importing", flush=True)
    threading.Event().wait()  # a module whose import takes its time (a model to load, a slow mount)
"""


@pytest.mark.parametrize("command", [["worker"], ["replay"]])
def test_ctrl_c_while_the_users_modules_import_ends_as_an_interrupt(project: Path, command: list[str]) -> None:
    """It was click's "Aborted!" with exit code 1, which means a failed run or a divergence."""
    (project / "slow.py").write_text(textwrap.dedent(SLOW_TO_IMPORT))
    env = {k: v for k, v in os.environ.items() if k != "CAIRN_DATABASE_URL"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cairn", *command, "slow", "--db", f"sqlite:///{project}/c.db"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err = ctrl_c_once_ready(proc, "importing", timeout=30)
    assert proc.returncode == 130 and "error: interrupted" in err and "Aborted" not in err, err


def test_dev_with_reload_and_no_such_module_exits_instead_of_watching(project: Path) -> None:
    done = cairn("dev", "no_such_module", "--db", f"sqlite:///{project}/c.db", "--port", "0", cwd=project, timeout=30)
    assert done.returncode == 1, done.stderr
    assert "cannot import module 'no_such_module': no such module" in done.stderr
    assert not (project / "c.db").exists()


def test_runs_at_60_columns_keeps_ids_and_statuses_whole(project: Path) -> None:
    url = f"sqlite:///{project}/c.db"
    started = cairn("start", "flows.add", "--import", "flows", "--input", "[1]", "--db", url, cwd=project)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.split()[1].rstrip(":")
    assert len(run_id) == 32
    assert cairn("cancel", run_id, "--db", url, cwd=project).returncode == 0
    listed = cairn("runs", "--db", url, cwd=project, columns=60)
    assert listed.returncode == 0, listed.stderr
    assert "…" not in listed.stdout, listed.stdout
    assert "cancelled" in listed.stdout
    lines = listed.stdout.splitlines()[2:]
    assert "".join(line.split()[0] for line in lines if line.strip()).startswith(run_id), listed.stdout


KEEPS_A_SECOND = """
    import os
    from datetime import timedelta

    import cairn

    cairn.connect(os.environ["FLOWS_DB"], retention=timedelta(seconds=1))  # as a user's app module does


    @cairn.workflow
    async def quick(x: int) -> int:
        return x
"""


def test_a_worker_keeps_the_retention_its_modules_connect_with(project: Path) -> None:
    """SPEC 4: `cairn.connect(url, retention=...)` sets how long finished runs are kept; a `cairn
    worker` process whose modules connect so to its database prunes by it, as an embedded one does."""
    import cairn

    (project / "keeper.py").write_text(textwrap.dedent(KEEPS_A_SECOND))
    url = f"sqlite:///{project}/c.db"
    env = {k: v for k, v in os.environ.items() if k not in ("CAIRN_DATABASE_URL", "CAIRN_RETENTION")}
    worker = subprocess.Popen(
        [sys.executable, "-m", "cairn", "worker", "keeper", "--db", url],
        cwd=project,
        env={**env, "FLOWS_DB": url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with cairn.connect_sync(url) as client:
            deadline = time.monotonic() + 30  # until the worker has registered its workflow
            while not any(w.name == "keeper.quick" for w in client.list_workflows()) and time.monotonic() < deadline:
                assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
                time.sleep(0.05)
            handle = client.start("keeper.quick", 7)
            assert handle.result(timeout=30) == 7
            deadline = time.monotonic() + 30  # the worker prunes at its heartbeats: poll for the outcome
            while client.list_runs() and worker.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert client.list_runs() == [], "the finished run was not pruned by the worker's retention"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
