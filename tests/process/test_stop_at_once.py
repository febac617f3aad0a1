"""A second signal stops a worker at once, as the README says, even when what its stop waits for
cannot end: with its PostgreSQL database gone, the stop's last writes retried for a minute, and
Ctrl-C twice did not end `cairn worker` (nor `cairn dev`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import cairn
from tests.conftest import _admin, eventually
from tests.helpers import registered

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.process, pytest.mark.timeout(90)]


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_two_sigints_stop_a_worker_whose_database_went_away(db_url: str, pg_server: str) -> None:
    client = cairn.Client(db_url)
    cmd = [sys.executable, "-m", "cairn.cli.main", "worker", "tests.flows", "--db", db_url, "--poll", "0.1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        await eventually(lambda: registered(client, "tests.flows.Sequence3"), timeout=30, what="the worker up")
        await client.close()
        name = urlsplit(db_url).path.lstrip("/")
        _admin(pg_server, f'DROP DATABASE "{name}" WITH (FORCE)')  # the database goes away
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)  # the first stop under way (not synchronisation: a second signal may come any time)
        proc.send_signal(signal.SIGINT)
        began = time.monotonic()
        out, _ = proc.communicate(timeout=30)
        assert time.monotonic() - began < 10, out
        assert proc.returncode == 130, out
        assert "stopping now" in out and "stopped at once" in out, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
