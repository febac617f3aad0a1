"""The command line as a newcomer meets it: tables at 80 columns, a run's timeline, actions'
human names (Ziet), timers that say when they fall due, a warning when no worker serves a start,
`--compare dbos` without DBOS, scripts' workflows under their importable name, `cairn dev` reloading."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import cairn
from cairn import Workflow, action, workflow
from cairn.cli.main import cli
from tests.conftest import eventually
from tests.helpers import registered, status_is


@action(id="cli_dx.charge", name="Charge Card", description="Charge the customer via Stripe")
async def charge(order_id: str, cents: int) -> str:
    return f"ch_{order_id}_{cents}"


@workflow(id="cli_dx.Checkout")
class Checkout(Workflow):
    async def run(self, order_id: str) -> str:
        first = await charge(order_id, 4200)
        await asyncio.gather(charge(order_id, 1), charge(order_id, 2))
        await cairn.sleep(timedelta(hours=3))
        return first


def _cli(args: list[str], columns: int = 80) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, env={"COLUMNS": str(columns)})
    return result.exit_code, result.stdout, result.stderr


async def test_show_at_80_columns_draws_a_timeline_with_names_and_due_timers(
    client: cairn.Client, worker: cairn.Worker
) -> None:
    handle = await client.start(Checkout, "o-1", id="o-1")
    await eventually(lambda: status_is(handle, cairn.RunStatus.WAITING), what="the run to sleep")
    code, out, _ = await asyncio.to_thread(_cli, ["show", "o-1", "--db", client.url])
    assert code == 0, out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, "\n".join(line for line in lines if len(line) > 80)
    assert "Charge Card" in out  # the action's human name, as its worker registered it
    assert "Timeline" in out and "█" in out and "░" in out
    timer = next(line for line in lines if " timer " in line and "scheduled" in line)
    assert "due " in timer and ("(in 2h59m)" in timer or "(in 3h00m)" in timer)

    code, out, _ = await asyncio.to_thread(_cli, ["show", "o-1", "--db", client.url, "--json"])
    shown = json.loads(out)
    assert shown["actions"] == {
        "cli_dx.charge": {"name": "Charge Card", "description": "Charge the customer via Stripe"}
    }
    assert [s["seq"] for s in shown["steps"]] == [1, 2, 3, 4]


async def test_runs_and_workers_fit_80_columns_without_breaking_names(
    client: cairn.Client, worker: cairn.Worker
) -> None:
    for i in range(3):
        await client.start(Checkout, f"o-{i}", id=f"an-order-with-a-rather-long-id-{i:04d}")
    for command in (["runs"], ["workers"]):
        code, out, err = await asyncio.to_thread(_cli, [*command, "--db", client.url])
        assert code == 0, err
        lines = out.splitlines()
        assert max(len(line) for line in lines) <= 80, out
    code, out, _ = await asyncio.to_thread(_cli, ["runs", "--db", client.url])
    for i in range(3):
        assert f"an-order-with-a-rather-long-id-{i:04d}" in out  # whole, never folded mid-word
    assert "Checkout" in out
    code, wide, _ = await asyncio.to_thread(_cli, ["runs", "--db", client.url], 200)
    assert "cli_dx.Checkout" in wide and "activations" in wide


def test_start_warns_when_no_live_worker_serves_the_workflow(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    code, out, err = _cli(["start", "cli_dx.Checkout", "--input", '["o-9"]', "--id", "o-9", "--db", url])
    assert code == 0, err
    assert "run o-9: pending" in out
    assert "warning: no live worker runs workflow 'cli_dx.Checkout'" in err


def test_bench_compare_dbos_without_dbos_says_to_install_the_bench_extra() -> None:
    if importlib.util.find_spec("dbos") is not None:  # the bench extra is not part of dev
        pytest.skip("DBOS is installed here")
    code, _, err = _cli(["bench", "--compare", "dbos"])
    assert code == 2
    assert "pip install 'cairn[bench]'" in err


def test_bench_with_an_unreachable_server_says_so_in_one_line() -> None:
    """It printed a psycopg traceback from deep in a scenario, and exited 0."""
    code, _, err = _cli(
        ["bench", "--backend", "postgres", "--scenario", "sequential", "--pg", "postgresql://u:s3cret@127.0.0.1:1/x"]
    )
    assert code == 1
    assert err.startswith("error: cannot connect to PostgreSQL at postgresql://u:***@127.0.0.1:1/x to create the bench")
    assert "Traceback" not in err and "s3cret" not in err


SCRIPT = """
    import asyncio
    import sys

    import cairn


    @cairn.action
    async def charge(order_id: str) -> str:
        return f"ch_{order_id}"


    @cairn.workflow
    class Checkout(cairn.Workflow):
        async def run(self, order_id: str) -> str:
            return await charge(order_id)


    async def main() -> None:
        client = cairn.connect(sys.argv[1])
        print(Checkout.__cairn_workflow__.id, charge.id)
        async with cairn.Worker(client):
            print(await client.run(Checkout, "o-1", id="o-1", timeout=30))


    if __name__ == "__main__":
        asyncio.run(main())
"""


def test_a_scripts_workflows_belong_to_its_importable_module(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(textwrap.dedent(SCRIPT))
    url = f"sqlite:///{tmp_path}/s.db"
    done = subprocess.run([sys.executable, "shop.py", url], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["shop.Checkout", "shop.charge", "ch_o-1"]
    # So `cairn worker shop` serves what `python shop.py` started.
    listed = subprocess.run(
        [sys.executable, "-m", "cairn", "runs", "--db", url, "--json"], cwd=tmp_path, capture_output=True, text=True
    )
    assert [r["workflow"] for r in json.loads(listed.stdout)] == ["shop.Checkout"]


APP = """
import cairn


@cairn.workflow
async def first() -> int:
    return 1
"""


def _cairn_dev(project: Path, url: str, port: int) -> subprocess.Popen[str]:
    """`cairn dev app` (reloading) on `url` in `project`, where app.py is APP; its stderr piped."""
    (project / "app.py").write_text(APP)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CAIRN_DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "cairn", "dev", "app", "--db", url, "--port", str(port)],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


@pytest.mark.process
@pytest.mark.timeout(90)
async def test_cairn_dev_reloads_the_worker_when_a_module_changes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/dev.db"
    proc = _cairn_dev(tmp_path, url, 0)
    client = cairn.Client(url)
    try:
        await eventually(lambda: registered(client, "app.first"), timeout=30, what="the first worker")
        (tmp_path / "app.py").write_text(APP + "\n\n@cairn.workflow\nasync def second() -> int:\n    return 2\n")
        await eventually(lambda: registered(client, "app.second"), timeout=30, what="the reloaded worker")
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        await client.close()
    assert "app.py changed; restarting the worker" in err
    assert proc.returncode == 0, err


@pytest.mark.process
@pytest.mark.timeout(90)
async def test_cairn_dev_says_when_its_worker_exits_and_starts_it_again_at_the_next_change(tmp_path: Path) -> None:
    """A worker that could not start (its port taken) left `cairn dev` watching in silence."""
    url = f"sqlite:///{tmp_path}/dev.db"
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    proc = _cairn_dev(tmp_path, url, taken.getsockname()[1])
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr or ()], daemon=True)
    reader.start()
    client = cairn.Client(url)
    try:
        said: list[str] = []
        while not any("the worker exited (code 1)" in line for line in said):
            said.append(lines.get(timeout=30))
        assert any("is in use" in line or "address already in use" in line.lower() for line in said), said
        assert "it restarts when a .py file changes (Ctrl-C to quit)" in said[-1]
        taken.close()
        (tmp_path / "app.py").write_text(APP + "\n\n@cairn.workflow\nasync def second() -> int:\n    return 2\n")
        await eventually(lambda: registered(client, "app.second"), timeout=30, what="the worker started again")
    finally:
        taken.close()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        await client.close()
    assert proc.returncode == 0
