"""mypy checks users' calls of actions against the functions' signatures (ActionFunction[P, R])."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

CALLS = Path(__file__).resolve().parents[1] / "typed" / "calls.py"


@pytest.mark.timeout(300)
def test_mypy_checks_action_arguments_and_results() -> None:
    out, err, _status = api.run([str(CALLS), "--strict", "--no-error-summary", "--hide-error-context"])
    found = {(int(line), code) for line, code in re.findall(r"calls\.py:(\d+): error: .*\[([a-z-]+)\]", out)}
    source = CALLS.read_text().splitlines()
    expected = {(n, m.group(1)) for n, text in enumerate(source, 1) if (m := re.search(r"# expected: ([a-z-]+)", text))}
    assert found == expected, out + err
