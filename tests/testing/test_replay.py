"""Replay: `cairn replay MODULE --db URL` against recorded runs (real processes, both backends), and
`cairn.testing.replay` on journals exported by `cairn show RUN --json`."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest

import cairn
from cairn.testing import environment, replay
from tests.helpers import cli_in_thread, raw_sql, sql_row
from tests.testing import replayflows

SHOP_V1 = """
    from datetime import timedelta

    import cairn


    @cairn.action
    async def reserve(order: str) -> str:
        return f"r-{order}"


    @cairn.action
    async def charge(order: str) -> str:
        return f"c-{order}"


    @cairn.action
    async def check_fraud(order: str) -> bool:
        return True


    @cairn.workflow
    class Checkout(cairn.Workflow):
        async def run(self, order: str) -> str:
            r = await reserve(order)
            await cairn.sleep(timedelta(days=FIRST_WAIT))
            CHANGE
            c = await charge(order)
            return f"{r}|{c}"
"""

RECORD = """
import asyncio, sys
from datetime import timedelta
import cairn
from cairn.testing import environment
import shop

async def main() -> None:
    async with environment(sys.argv[1]) as env:
        for order in ("o-1", "o-2"):
            await env.client.run(shop.Checkout, order, id=order, timeout=30)
        await env.client.start(shop.Checkout, "o-3", id="o-3")  # left sleeping, in flight

asyncio.run(main())
"""


def _app(root: Path, change: str, first_wait: str = "1") -> Path:
    root.mkdir()
    code = textwrap.dedent(SHOP_V1).replace("CHANGE", change).replace("FIRST_WAIT", first_wait)
    (root / "shop.py").write_text(code)
    (root / "record.py").write_text(RECORD)
    return root


def _python(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _snapshot(db_url: str) -> list[Any]:
    """Every row of every Cairn table: what "nothing is written" is checked against."""
    tables = ["cairn_runs", "cairn_steps", "cairn_events", "cairn_signals", "cairn_memory", "cairn_workers"]
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            return [sorted(map(repr, conn.execute(f"SELECT * FROM {t}").fetchall())) for t in tables]
    with psycopg.connect(db_url) as pg:
        return [sorted(map(repr, pg.execute(f"SELECT * FROM {t}".encode()).fetchall())) for t in tables]


@pytest.mark.process
def test_cairn_replay_exits_1_naming_the_run_and_step_when_a_call_is_inserted(db_url: str, tmp_path: Path) -> None:
    old = _app(tmp_path / "old", "pass")
    recorded = _python(old, "record.py", db_url)
    assert recorded.returncode == 0, recorded.stderr
    before = _snapshot(db_url)

    same = _python(old, "-m", "cairn", "replay", "shop", "--db", db_url)
    assert same.returncode == 0, same.stdout + same.stderr
    assert "3 runs replayed" in same.stderr and "0 diverge" in same.stderr

    new = _app(tmp_path / "new", "await check_fraud(order)")
    changed = _python(new, "-m", "cairn", "replay", "shop", "--db", db_url)
    assert changed.returncode == 1, changed.stdout + changed.stderr
    # The two completed runs diverge at step 3 (reserve, sleep, then charge recorded); o-3 is
    # still asleep at step 2, which the new code reaches the same way.
    for run_id in ("o-1", "o-2"):
        assert f"run {run_id} (shop.Checkout) diverges at step 3" in changed.stdout
    assert "run o-3" not in changed.stdout
    assert "recorded: action shop.charge" in changed.stdout
    assert "new:      action shop.check_fraud" in changed.stdout

    completed_only = _python(new, "-m", "cairn", "replay", "shop", "--db", db_url, "--status", "completed", "--json")
    assert completed_only.returncode == 1
    report = json.loads(completed_only.stdout)
    assert sorted(report["replayed"]) == ["o-1", "o-2"]
    assert {(d["run"], d["step"]) for d in report["divergences"]} == {("o-1", 3), ("o-2", 3)}

    limited = _python(new, "-m", "cairn", "replay", "shop", "--db", db_url, "--workflow", "Checkout", "--limit", "1")
    assert limited.returncode in (0, 1)  # the most recent run: o-3 (in flight, replays) or another
    # A workflow the code does not define is a usage error (2), not a divergence (1) a deploy acts on.
    unknown = _python(new, "-m", "cairn", "replay", "shop", "--db", db_url, "--workflow", "Nope")
    assert unknown.returncode == 2 and "workflow 'Nope' is not defined in shop" in unknown.stderr, unknown.stderr

    assert _snapshot(db_url) == before, "cairn replay wrote to the database"


@pytest.mark.process
def test_a_run_in_flight_diverges_when_the_code_changes_before_its_position(db_url: str, tmp_path: Path) -> None:
    old = _app(tmp_path / "old", "pass")
    assert _python(old, "record.py", db_url).returncode == 0
    # The new code sleeps for a different time: timers compare by kind, so that still replays...
    longer = _app(tmp_path / "longer", "pass", first_wait="2")
    assert _python(longer, "-m", "cairn", "replay", "shop", "--db", db_url).returncode == 0
    # ...but a new first call does not, for every run, the sleeping one too.
    first = _app(tmp_path / "first", "pass").joinpath("shop.py")
    first.write_text(
        first.read_text().replace(
            "r = await reserve(order)", "await check_fraud(order)\n        r = await reserve(order)"
        )
    )
    moved = _python(first.parent, "-m", "cairn", "replay", "shop", "--db", db_url)
    assert moved.returncode == 1
    for run_id in ("o-1", "o-2", "o-3"):
        assert f"run {run_id} (shop.Checkout) diverges at step 1" in moved.stdout


async def test_testing_replay_checks_a_journal_exported_by_cairn_show(tmp_path: Path) -> None:
    async with environment() as env:
        await env.client.run(replayflows.Checkout, "o-9", id="o-9", timeout=30)
        shown = await cli_in_thread(["show", "o-9", "--db", env.url, "--json"])
    assert shown.exit_code == 0, shown.output
    exported = json.loads(shown.output)
    assert exported["journal"]["run"]["id"] == "o-9"

    # As a dict, as text and as a file; on the same code it replays.
    path = tmp_path / "o-9.json"
    path.write_text(shown.output)
    report = replay(exported, shown.output, path, workflow=replayflows.CheckoutSame)
    assert report.ok and report.replayed == ["o-9", "o-9", "o-9"]
    assert replay(exported).ok  # on the workflow registered under its recorded id

    with pytest.raises(cairn.NonDeterminismError) as caught:
        replay(exported, workflow=replayflows.CheckoutChanged)
    assert caught.value.step == 3
    assert "replayflows.charge" in caught.value.recorded and "replayflows.check_fraud" in caught.value.attempted

    found = replay(exported, workflow=replayflows.CheckoutChanged, raise_on_divergence=False)
    assert not found.ok and found.divergences[0].run_id == "o-9"

    # Guarded by cairn.patched, the change replays the old run on the old branch.
    assert replay(exported, workflow=replayflows.CheckoutPatched).ok


def test_replay_refuses_what_is_not_a_journal() -> None:
    with pytest.raises(ValueError, match="not a Cairn journal"):
        replay({"run": {}, "steps": []})


def _cairn_functions(db_url: str) -> int:
    """The `cairn_apply_*` functions in a PostgreSQL database (created by a store that migrates)."""
    if db_url.startswith("sqlite"):
        return 0
    row = sql_row(db_url, "SELECT count(*) FROM pg_proc WHERE starts_with(proname, 'cairn_apply_')")
    return int(row[0]) if row else 0


async def test_cairn_replay_neither_migrates_the_database_nor_creates_its_function(db_url: str) -> None:
    """`cairn replay` runs with the code about to be deployed, against the database the running
    workers use: it reads a database at its code's schema version and writes nothing there, not
    even its version's database function; one older than its code it refuses, naming both
    versions, and leaves it as it was (migrating it before the deploy would change what the running
    workers read)."""
    client = cairn.Client(db_url)
    await client.store.open()
    await client.close()
    if not db_url.startswith("sqlite"):
        raw_sql(
            db_url,
            "DO $$ DECLARE f record; BEGIN FOR f IN SELECT oid::regprocedure AS sig FROM pg_proc "
            "WHERE starts_with(proname, 'cairn_apply_') LOOP EXECUTE 'DROP FUNCTION ' || f.sig; END LOOP; END $$",
        )
    args = ["replay", "tests.testing.replayflows", "--db", db_url]
    same = await cli_in_thread(args)
    assert same.exit_code == 0, same.output
    assert _cairn_functions(db_url) == 0

    latest = sql_row(db_url, "SELECT max(version) FROM cairn_schema_version")
    assert latest is not None
    raw_sql(db_url, "DELETE FROM cairn_schema_version WHERE version = ?", latest[0])
    behind = await cli_in_thread(args)
    assert behind.exit_code == 2, behind.output
    assert f"is at schema version {int(str(latest[0])) - 1}; this version of Cairn reads version {latest[0]}" in (
        behind.output
    )
    assert "does not migrate it here because this command writes nothing" in behind.output
    assert sql_row(db_url, "SELECT max(version) FROM cairn_schema_version") == (int(str(latest[0])) - 1,)
    assert _cairn_functions(db_url) == 0
