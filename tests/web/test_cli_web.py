"""`cairn dashboard` and `cairn dev` as a user runs them: real processes, a real port, the printed URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cairn.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]


def test_dashboard_refuses_to_bind_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["dashboard", "--db", f"sqlite:///{tmp_path}/d.db", "--host", "0.0.0.0"], env={"CAIRN_API_TOKEN": None}
    )
    assert result.exit_code == 2
    assert "refusing to serve the dashboard on 0.0.0.0 without a token" in result.output


def _spawn(args: list[str], tmp_path: Path, **env: str) -> subprocess.Popen[str]:
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    environ.pop("CAIRN_DATABASE_URL", None)
    cmd = [sys.executable, "-m", "cairn.cli.main", *args, "--db", f"sqlite:///{tmp_path}/c.db", "--port", "0"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)


def _url(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith(prefix), (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
    return next(word for word in line.split() if word.startswith("http://"))


def test_dev_serves_the_dashboard_beside_its_worker(tmp_path: Path) -> None:
    with _spawn(["dev", "examples.approval", "--poll", "0.1"], tmp_path) as proc:
        try:
            url = _url(proc, "cairn dev: dashboard and HTTP API at http://127.0.0.1:")
            with httpx.Client(base_url=url, timeout=10) as http:
                assert http.get("/healthz").json()["status"] == "ok"
                names = [w["name"] for w in http.get("/api/workflows").json()]
                assert "examples.approval.OrderApproval" in names
                started = http.post("/api/workflows/examples.approval.OrderApproval/runs", json={"args": ["o-1"]})
                assert started.status_code == 201, started.text
                assert "OrderApproval" in http.get("/").text
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


@pytest.mark.parametrize(
    ("args", "env", "said", "stop"),
    [
        (["dashboard", "--token", "s3cret-token"], {}, "cairn dashboard on sqlite:", signal.SIGTERM),
        (
            ["dev", "examples.approval", "--no-reload"],
            {"CAIRN_API_TOKEN": "s3cret-token"},
            "cairn dev: dashboard and HTTP API at http://127.0.0.1:",
            signal.SIGINT,
        ),
    ],
    ids=["dashboard --token", "dev with CAIRN_API_TOKEN"],
)
def test_a_token_guards_every_route_but_healthz(
    tmp_path: Path, args: list[str], env: dict[str, str], said: str, stop: signal.Signals
) -> None:
    """`cairn dev` served every route to anyone on the machine though CAIRN_API_TOKEN was set (the
    SPEC: a token on every route but /healthz whenever one is set), unlike `cairn dashboard`."""
    with _spawn(args, tmp_path, **env) as proc:
        try:
            with httpx.Client(base_url=_url(proc, said), timeout=10) as http:
                assert http.get("/api/runs").status_code == 401
                start = http.post("/api/workflows/examples.approval.OrderApproval/runs", json={"args": ["o"]})
                assert start.status_code == 401
                ok = http.get("/api/runs", headers={"Authorization": "Bearer s3cret-token"})
                assert ok.status_code == 200 and ok.json()["runs"] == []
                assert http.get("/healthz").status_code == 200
            proc.send_signal(stop)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_cairn_dev_refuses_an_empty_token() -> None:
    empty = CliRunner().invoke(cli, ["dev", "examples.approval", "--no-reload", "--token", " "])
    assert empty.exit_code != 0 and "the API token must not be empty" in empty.output


@pytest.mark.parametrize("command", [["dashboard"], ["dev", "examples.approval", "--no-reload"]])
def test_a_token_with_whitespace_around_it_is_refused_before_serving(tmp_path: Path, command: list[str]) -> None:
    """It was served, and no API client could ever send it (HTTP drops the spaces around a header's value)."""
    args = [*command, "--db", f"sqlite:///{tmp_path}/w.db", "--port", "0", "--token", "s3cret-token\n"]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2, refused.output
    assert "error: the API token begins or ends with whitespace" in refused.output
    assert "s3cret" not in refused.output  # the token is not printed
    assert not (tmp_path / "w.db").exists()


@pytest.mark.parametrize("command", ["dashboard", "dev"])
def test_a_port_already_taken_is_one_clear_error(tmp_path: Path, command: str) -> None:
    """uvicorn exits the process when it cannot bind: the user saw two tracebacks under "Task
    exception was never retrieved" instead of what was wrong. (`cairn dev`'s reloader, as uvicorn's,
    then waits for a change to the code: the process that failed is its child.)"""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [command, *(["examples.approval", "--no-reload"] if command == "dev" else []), "--port", str(port)]
        environ = {**os.environ}
        environ.pop("CAIRN_DATABASE_URL", None)
        done = subprocess.run(
            [sys.executable, "-m", "cairn.cli.main", *args, "--db", f"sqlite:///{tmp_path}/c.db"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=environ,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert f"error: the dashboard could not listen on 127.0.0.1:{port}: " in done.stderr
    assert "address already in use" in done.stderr
    assert "Traceback" not in done.stderr and "never retrieved" not in done.stderr, done.stderr
