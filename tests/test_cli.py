"""The `cairn` command line, driven through click's CliRunner (and one real worker process)."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import cairn
from cairn import Workflow, action, workflow
from cairn.cli.main import cli
from tests.conftest import eventually


@action(id="cli_test.increment")
async def increment(x: int) -> int:
    cairn.context().logger.info("incrementing %d", x)
    return x + 1


@workflow(id="cli_test.add_two")
class AddTwo(Workflow):
    async def run(self, x: int) -> int:
        once: int = await increment(x)
        twice: int = await increment(once)
        return twice


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("CAIRN_DATABASE_URL", raising=False)
    return f"sqlite:///{tmp_path}/cli.db"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def completed_run(url: str, x: int = 1) -> str:
    """Run AddTwo to completion with an in-process worker; its run id."""

    async def go() -> str:
        client = cairn.Client(url)
        try:
            async with cairn.Worker(client, poll_interval=0.1):
                handle = await client.start(AddTwo, x)
                assert await handle.result(timeout=30) == x + 2
                return handle.id
        finally:
            await client.close()

    return asyncio.run(go())


def test_start_rejects_invalid_json(runner: CliRunner, url: str) -> None:
    result = runner.invoke(cli, ["start", "cli_test.add_two", "--input", "[1,", "--db", url])
    assert result.exit_code == 2
    assert "--input" in result.output
    assert "not valid JSON" in result.output
    assert "char 3" in result.output


def test_start_rejects_input_that_is_neither_array_nor_object(runner: CliRunner, url: str) -> None:
    result = runner.invoke(cli, ["start", "cli_test.add_two", "--input", "5", "--db", url])
    assert result.exit_code == 2
    assert "JSON array" in result.output


def test_start_unknown_workflow_is_an_error_without_traceback(runner: CliRunner, url: str) -> None:
    result = runner.invoke(cli, ["start", "no.such.workflow", "--db", url])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no workflow named 'no.such.workflow'")
    assert "Traceback" not in result.output


def test_start_checks_arguments_against_the_local_definition(runner: CliRunner, url: str) -> None:
    result = runner.invoke(cli, ["start", "cli_test.add_two", "--input", '["seven"]', "--db", url])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "'x'" in result.stderr


def test_start_then_wait_prints_the_result(runner: CliRunner, url: str) -> None:
    async def serve_one() -> None:
        client = cairn.Client(url)
        try:
            async with cairn.Worker(client, poll_interval=0.1):
                # The command runs its own event loop, so drive it from a thread.
                result = await asyncio.to_thread(
                    runner.invoke,
                    cli,
                    ["start", "cli_test.add_two", "--input", '{"x": 40}', "--id", "r1", "--wait", "30", "--db", url],
                )
                assert result.exit_code == 0, result.output
                assert result.stdout.splitlines() == ["run r1: pending", "42"]
        finally:
            await client.close()

    asyncio.run(serve_one())


def test_runs_lists_newest_first(runner: CliRunner, url: str) -> None:
    first = completed_run(url, 1)
    second = completed_run(url, 2)
    result = runner.invoke(cli, ["runs", "--db", url])
    assert result.exit_code == 0, result.output
    assert "completed" in result.stdout
    assert result.stdout.index(second) < result.stdout.index(first)

    listed = json.loads(runner.invoke(cli, ["runs", "--db", url, "--json"]).stdout)
    assert [r["id"] for r in listed] == [second, first]
    assert listed[0]["result"] == 4

    filtered = runner.invoke(cli, ["runs", "--status", "failed", "--db", url])
    assert filtered.exit_code == 0
    assert first not in filtered.stdout


def test_show_a_completed_run(runner: CliRunner, url: str) -> None:
    run_id = completed_run(url, 5)
    result = runner.invoke(cli, ["show", run_id, "--db", url])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert run_id in out
    assert "cli_test.add_two" in out
    assert "completed" in out
    assert "x=5" in out and "x=6" in out  # each step's arguments
    assert out.count("cli_test.increment") == 4  # two step rows, two log headings
    assert "INFO incrementing 5" in out and "INFO incrementing 6" in out

    data = json.loads(runner.invoke(cli, ["show", run_id, "--db", url, "--json"]).stdout)
    assert data["run"]["status"] == "completed"
    assert data["run"]["result"] == 7
    assert [(s["seq"], s["name"], s["result"]) for s in data["steps"]] == [
        (1, "cli_test.increment", 6),
        (2, "cli_test.increment", 7),
    ]


def test_show_unknown_run(runner: CliRunner, url: str) -> None:
    completed_run(url)  # the database exists; the run does not
    result = runner.invoke(cli, ["show", "nope", "--db", url])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no run with id 'nope'")


def test_control_of_a_finished_run_is_a_clear_error(runner: CliRunner, url: str) -> None:
    run_id = completed_run(url)
    result = runner.invoke(cli, ["pause", run_id, "--db", url])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot pause run '{run_id}': it is completed")


def test_show_properties_and_events(runner: CliRunner, url: str) -> None:
    run_id = completed_run(url)
    result = runner.invoke(cli, ["show", run_id, "--db", url, "--properties", "--events"])
    assert result.exit_code == 0, result.output
    assert "Events" in result.output and "step.completed" in result.output and "completed" in result.output
    assert "Properties" in result.output


def test_show_events_of_a_long_run_draws_its_last_ones(
    runner: CliRunner, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run of 50,000 steps has 150,000 events: `--events` drew them all (90 s, 645 MB)."""
    import cairn.cli.main as cli_main

    run_id = completed_run(url)
    every = json.loads(runner.invoke(cli, ["show", run_id, "--db", url, "--json", "--events"]).stdout)["events"]
    assert len(every) > 3
    monkeypatch.setattr(cli_main, "SHOWN_EVENTS", 3)
    result = runner.invoke(cli, ["show", run_id, "--db", url, "--events"])
    assert result.exit_code == 0, result.output
    assert "earlier events are not shown (its last 3 are)" in result.output
    assert every[-1]["kind"] in result.output


def test_fork_a_completed_run(runner: CliRunner, url: str) -> None:
    run_id = completed_run(url)
    result = runner.invoke(cli, ["fork", run_id, "--from-step", "1", "--id", "forked-1", "--db", url])
    assert result.exit_code == 0, result.output
    assert "forked-1" in result.output
    bad = runner.invoke(cli, ["fork", run_id, "--from-step", "99", "--db", url])
    assert bad.exit_code == 2 and "from_step must be between 0 and 2" in bad.stderr


def test_worker_names_a_module_it_cannot_import(
    runner: CliRunner, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    result = runner.invoke(cli, ["worker", "cli_test_missing_module", "--db", url])
    assert result.exit_code != 0
    assert "cli_test_missing_module" in result.output


@pytest.mark.process
def test_worker_process_serves_runs_and_stops_on_sigterm(runner: CliRunner, url: str, tmp_path: Path) -> None:
    (tmp_path / "cli_proc_flows.py").write_text(
        textwrap.dedent("""
        from cairn import Workflow, action, workflow

        @action
        async def shout(text: str) -> str:
            return text.upper()

        @workflow
        class Shout(Workflow):
            async def run(self, text: str) -> str:
                return await shout(text)
    """)
    )
    cmd = [sys.executable, "-m", "cairn.cli.main", "worker", "cli_proc_flows", "--db", url, "--poll", "0.2"]
    with subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stderr is not None
            banner = proc.stderr.readline()
            assert "cairn worker" in banner and "1 workflows, 1 actions" in banner, banner

            async def registered() -> bool:
                client = cairn.Client(url)
                try:
                    return any(w.name == "cli_proc_flows.Shout" for w in await client.list_workflows())
                finally:
                    await client.close()

            asyncio.run(eventually(registered, what="the worker to register its workflows"))
            result = runner.invoke(
                cli, ["start", "cli_proc_flows.Shout", "--input", '["hi"]', "--wait", "30", "--db", url]
            )
            assert result.exit_code == 0, result.output
            assert result.stdout.splitlines()[-1] == '"HI"'

            workers = json.loads(runner.invoke(cli, ["workers", "--db", url, "--json"]).stdout)
            assert [w["pid"] for w in workers] == [proc.pid]

            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 0
            assert "stopped" in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert json.loads(runner.invoke(cli, ["workers", "--db", url, "--json"]).stdout) == []


def test_start_by_name_binds_positional_input_in_signature_order(url: str, tmp_path: Path) -> None:
    """The README's `cairn start shop.Checkout --input '["o-2", "bob@example.com"]'`: the command
    does not import the code, only the schema the worker registered, and binds in signature order."""
    (tmp_path / "shop.py").write_text(
        textwrap.dedent(
            """
            from cairn import Workflow, action, workflow

            @action
            async def charge(order_id: str, cents: int) -> str:
                return f"ch_{order_id}_{cents}"

            @workflow
            class Checkout(Workflow):
                async def run(self, order_id: str, email: str, cents: int = 4200) -> str:
                    return f"{await charge(order_id, cents)} for {email}"
            """
        )
    )
    cmd = [sys.executable, "-m", "cairn.cli.main", "worker", "shop", "--db", url, "--poll", "0.05"]
    with subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True) as proc:
        try:

            def start(*args: str) -> subprocess.CompletedProcess[str]:
                command = [sys.executable, "-m", "cairn.cli.main", "start", "shop.Checkout", *args, "--db", url]
                return subprocess.run(command, cwd=tmp_path.parent, capture_output=True, text=True, timeout=60)

            async def registered() -> bool:
                client = cairn.Client(url)
                try:
                    return any(w.name == "shop.Checkout" for w in await client.list_workflows())
                finally:
                    await client.close()

            asyncio.run(eventually(registered, timeout=30, what="the worker registered shop.Checkout"))
            done = start("--input", '["o-2", "bob@example.com"]', "--id", "o-2", "--wait", "30")
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines() == ["run o-2: pending", '"ch_o-2_4200 for bob@example.com"']
            again = start("--input", '["o-3", "eve@example.com"]', "--id", "o-2")
            assert again.returncode == 0 and "existed already (started with other input earlier)" in again.stderr
            bad = start("--input", '["o-4", "eve@example.com", "lots"]')
            assert bad.returncode == 2 and "argument 'cents' of shop.Checkout does not match its schema" in bad.stderr
            assert "Traceback" not in bad.stderr
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)


def test_prune_removes_old_finished_runs(runner: CliRunner, url: str) -> None:
    completed_run(url, 1)
    completed_run(url, 2)
    kept = runner.invoke(cli, ["prune", "--older-than", "1h", "--db", url])
    assert kept.exit_code == 0 and kept.stdout.strip() == "removed 0 finished runs older than 1h"
    gone = runner.invoke(cli, ["prune", "--older-than", "0", "--status", "completed", "--db", url])
    assert gone.exit_code == 0 and gone.stdout.strip() == "removed 2 finished runs older than 0"
    bad = runner.invoke(cli, ["prune", "--older-than", "soon", "--db", url])
    assert bad.exit_code == 2 and "not a duration" in bad.output
    compound = runner.invoke(cli, ["prune", "--older-than", "1h30m", "--db", url])  # as `cairn runs --since` takes
    assert compound.exit_code == 0 and compound.stdout.strip() == "removed 0 finished runs older than 1h30m"
    for never in ("inf", "nan", "-1h", "1e20w"):  # inf pruned nothing and said nothing; 1e20w was a traceback
        bad = runner.invoke(cli, ["prune", "--older-than", never, "--db", url])
        assert bad.exit_code == 2 and "--older-than" in bad.output and "Traceback" not in bad.output, bad.output


@pytest.mark.parametrize(
    "command",
    [
        ["runs"],
        ["show", "r1"],
        ["result", "r1"],
        ["schedules"],
        ["workers"],
        ["replay", "tests.flows"],
        ["pause", "r1"],
        ["resume", "r1"],
        ["signal", "r1", "go"],
        ["prune", "--older-than", "1d"],
    ],
    ids=lambda c: c[0],
)
def test_a_command_that_reads_never_creates_a_missing_sqlite_database(
    runner: CliRunner, tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "some" / "new" / "dir" / "x.db"
    result = runner.invoke(cli, [*command, "--db", f"sqlite:///{missing}"])
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"error: no database at {missing} (sqlite:///{missing}): nothing to read. "
        "Check --db or CAIRN_DATABASE_URL; a worker or `cairn start` creates the database\n"
    )
    assert not (tmp_path / "some").exists()


@pytest.mark.parametrize(
    "command", [["runs"], ["show", "x"], ["pause", "x"], ["start", "cli_test.add_two", "--input", "[1]"]]
)
def test_an_unreachable_database_exits_1_and_hides_its_password(runner: CliRunner, command: list[str]) -> None:
    """The reference says exit 1 for an unreachable database (not the user's input, exit 2): it was 2,
    the error being one of Cairn's own."""
    result = runner.invoke(cli, [*command, "--db", "postgresql://postgres:s3cretpw@127.0.0.1:1/nope"])
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: cannot connect to PostgreSQL at postgresql://postgres:***@127.0.0.1:1/nope")
    assert "s3cretpw" not in result.output


def test_a_long_wrong_input_is_refused_at_once_and_said_short(runner: CliRunner, url: str, tmp_path: Path) -> None:
    """A 3 MB string given for a number: the error quoted all of it, and printing it took quadratic
    time (the password filter tried every letter as the start of a `key=`): it never finished."""
    (tmp_path / "big.json").write_text('["' + "x" * 3_000_000 + '"]')
    began = time.monotonic()
    result = runner.invoke(cli, ["start", "cli_test.add_two", "--input", f"@{tmp_path / 'big.json'}", "--db", url])
    assert time.monotonic() - began < 10
    assert result.exit_code == 2, result.output[:500]
    assert result.stderr.startswith("error: argument 'x' of cli_test.add_two does not match its schema: 'xxx")
    assert "... (3000002 characters) is not of type 'integer'" in result.stderr and len(result.stderr) < 500
    assert runner.invoke(cli, ["start", "cli_test.add_two", "--input", "[1]", "--db", url]).exit_code == 0
    named = runner.invoke(cli, ["show", "z" * 20_000, "--db", url])  # an unknown id, quoted
    assert named.exit_code == 2 and time.monotonic() - began < 20, named.output[:300]


def test_start_still_creates_the_database(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new/dir/x.db"
    result = runner.invoke(cli, ["start", "cli_test.add_two", "--input", "[1]", "--id", "n1", "--db", url])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "new" / "dir" / "x.db").exists()
    assert "n1" in runner.invoke(cli, ["runs", "--db", url]).stdout


def test_signal_to_a_finished_run_is_refused(runner: CliRunner, url: str) -> None:
    run_id = completed_run(url)
    result = runner.invoke(cli, ["signal", run_id, "go", "--payload", "1", "--db", url])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: cannot signal run '{run_id}': it is completed; a finished run takes")
    assert "signal.received" not in runner.invoke(cli, ["show", run_id, "--events", "--db", url]).stdout


def test_resume_of_a_run_that_is_not_paused_says_so(runner: CliRunner, url: str) -> None:
    runner.invoke(cli, ["start", "cli_test.add_two", "--input", "[1]", "--id", "p1", "--db", url])
    result = runner.invoke(cli, ["resume", "p1", "--db", url])
    assert result.exit_code == 0
    assert result.stdout == "run p1: pending (it was pending: nothing was resumed)\n"
    assert runner.invoke(cli, ["pause", "p1", "--db", url]).stdout == "run p1: paused\n"
    # Never started (no worker): pending again, as before the pause.
    assert runner.invoke(cli, ["resume", "p1", "--db", url]).stdout == "run p1: pending\n"


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("text", "argument"),
    [(f'{{"x": {_nested(10_000)}}}', "argument 'x'"), (f"[{_nested(10_000)}]", "argument 1 (positional)")],
)
def test_input_nested_10000_deep_is_a_clear_error_naming_the_argument(
    runner: CliRunner, url: str, text: str, argument: str
) -> None:
    result = runner.invoke(cli, ["start", "cli_test.add_two", "--input", text, "--db", url])
    assert result.exit_code == 2
    # Named as the input names it, or by the parameter when this process knows the workflow's signature.
    named = rf"({re.escape(argument)}|argument 'x' of cli_test\.add_two)"
    assert re.search(rf"{named} is nested more than 128 levels deep, over Cairn's nesting limit of 128", result.stderr)
    assert "Traceback" not in result.output and "RecursionError" not in result.output


def test_input_nested_past_the_limit_but_parseable_names_the_argument(runner: CliRunner, url: str) -> None:
    result = runner.invoke(cli, ["start", "cli_test.add_two", "--input", f'{{"x": {_nested(300)}}}', "--db", url])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: argument 'x' of cli_test.add_two is nested more than 128 levels deep")


def test_input_from_a_file_or_stdin(runner: CliRunner, url: str, tmp_path: Path) -> None:
    big = {"x": 41, "padding": "y" * 300_000}  # past what a command line holds on some systems
    (tmp_path / "in.json").write_text(json.dumps({"x": 41}))
    from_file = runner.invoke(
        cli, ["start", "cli_test.add_two", "--input", f"@{tmp_path}/in.json", "--id", "f1", "--db", url]
    )
    assert from_file.exit_code == 0, from_file.output
    from_stdin = runner.invoke(
        cli, ["start", "cli_test.add_two", "--input", "-", "--id", "s1", "--db", url], input="[5]"
    )
    assert from_stdin.exit_code == 0, from_stdin.output
    large = runner.invoke(cli, ["start", "cli_test.add_two", "--input", "-", "--db", url], input=json.dumps(big))
    assert (
        large.exit_code == 2 and "unexpected" in large.stderr and "padding" in large.stderr
    )  # read whole, then checked
    listed = {r["id"]: r["input"] for r in json.loads(runner.invoke(cli, ["runs", "--json", "--db", url]).stdout)}
    assert listed == {"f1": {"x": 41}, "s1": {"x": 5}}
    missing = runner.invoke(cli, ["start", "cli_test.add_two", "--input", f"@{tmp_path}/nope.json", "--db", url])
    assert missing.exit_code == 2 and f"cannot read '{tmp_path}/nope.json': No such file or directory" in missing.output
    signal = runner.invoke(cli, ["signal", "s1", "go", "--payload", "-", "--db", url], input='{"ok": true}')
    assert signal.exit_code == 0 and "signal 'go' sent" in signal.stdout


def test_start_help_documents_file_and_stdin_input(runner: CliRunner) -> None:
    text = " ".join(runner.invoke(cli, ["start", "--help"]).output.split())
    assert "@FILE reads it from FILE" in text and "- from standard input" in text


def test_start_with_an_existing_id_notes_it_and_whether_the_input_differs(runner: CliRunner, url: str) -> None:
    first = runner.invoke(cli, ["start", "cli_test.add_two", "--input", "[1]", "--id", "o-1", "--db", url])
    assert first.exit_code == 0 and first.stdout == "run o-1: pending\n" and "note:" not in first.stderr
    same = runner.invoke(cli, ["start", "cli_test.add_two", "--input", '{"x": 1}', "--id", "o-1", "--db", url])
    assert same.exit_code == 0
    assert "note: run o-1 existed already (started earlier); nothing was started" in same.stderr
    other = runner.invoke(cli, ["start", "cli_test.add_two", "--input", "[2]", "--id", "o-1", "--db", url])
    assert other.exit_code == 0
    assert "note: run o-1 existed already (started with other input earlier); nothing was started" in other.stderr
    listed = json.loads(runner.invoke(cli, ["runs", "--json", "--db", url]).stdout)
    assert [(r["id"], r["input"]) for r in listed] == [("o-1", {"x": 1})]
