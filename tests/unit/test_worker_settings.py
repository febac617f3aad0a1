"""A worker's settings, from Python and from `cairn worker`: a value that is not one (NaN, infinity
where a finite number is needed, a string where a list is) is refused at once, naming it. Before,
`--lease nan` was taken and failed every run the worker touched on PostgreSQL, `queues="billing"`
served the queues b, i, l, l, i, n and g, and `CAIRN_MAX_PAYLOAD_BYTES=abc` failed every activation
with "invalid literal for int()", naming nothing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

import cairn
from cairn.cli.main import cli
from cairn.serialization import max_payload_bytes


@pytest.fixture
def client(tmp_path: Path) -> cairn.Client:
    return cairn.Client(f"sqlite:///{tmp_path}/settings.db")


@pytest.mark.parametrize("lease", [math.nan, math.inf, 0, -1])
def test_a_lease_that_is_not_a_finite_positive_number_is_refused(client: cairn.Client, lease: float) -> None:
    with pytest.raises(ValueError, match=r"lease must be a positive, finite number of seconds"):
        cairn.Worker(client, lease=lease)


@pytest.mark.parametrize("poll", [math.nan, math.inf, 0])
def test_a_poll_interval_that_is_not_a_finite_positive_number_is_refused(client: cairn.Client, poll: float) -> None:
    with pytest.raises(ValueError, match=r"poll_interval must be a positive, finite number of seconds"):
        cairn.Worker(client, poll_interval=poll)


def test_queues_given_as_one_string_are_refused_saying_how_to_write_them(client: cairn.Client) -> None:
    with pytest.raises(TypeError, match=r"queues must be a list of queue names, got the string 'billing'"):
        cairn.Worker(client, queues="billing")
    assert cairn.Worker(client, queues=["billing"]).queues == ["billing"]


def test_an_infinite_deadlock_timeout_turns_the_watchdog_off_as_none_does(client: cairn.Client) -> None:
    assert cairn.Worker(client, deadlock_timeout=math.inf).deadlock_timeout is None
    assert cairn.Worker(client).deadlock_timeout == 2.0


@pytest.mark.parametrize(
    "args", [["--lease", "nan"], ["--lease", "inf"], ["--poll", "nan"], ["--poll", "inf"], ["--grace", "nan"]]
)
def test_cairn_worker_refuses_seconds_that_are_not_a_finite_number(tmp_path: Path, args: list[str]) -> None:
    done = CliRunner().invoke(cli, ["worker", "tests.flows", "--db", f"sqlite:///{tmp_path}/w.db", *args])
    assert done.exit_code == 2
    assert f"Invalid value for '{args[0]}': '{args[1]}' is not a finite number of seconds" in done.output
    assert not (tmp_path / "w.db").exists()


def test_cairn_result_refuses_a_wait_of_nan(tmp_path: Path) -> None:
    done = CliRunner().invoke(cli, ["result", "r-1", "--db", f"sqlite:///{tmp_path}/w.db", "--wait", "nan"])
    assert done.exit_code == 2 and "'nan' is not a finite number of seconds" in done.output


@pytest.mark.parametrize("value", ["abc", "1e3", "0", "-1"])
def test_a_bad_payload_limit_is_refused_when_a_client_or_worker_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CAIRN_MAX_PAYLOAD_BYTES", value)
    max_payload_bytes.cache_clear()
    try:
        for make in (
            lambda: cairn.Client(f"sqlite:///{tmp_path}/p.db"),
            lambda: cairn.Worker(url=f"sqlite:///{tmp_path}/p.db"),
        ):
            with pytest.raises(
                ValueError, match=rf"CAIRN_MAX_PAYLOAD_BYTES must be a whole number of bytes above 0, got '{value}'"
            ):
                make()
    finally:
        monkeypatch.undo()
        max_payload_bytes.cache_clear()
