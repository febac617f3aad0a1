"""The registration-time determinism check, on workflow bodies from tests/lint_fixtures.py. Pure."""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pickle
import sys
from collections.abc import Callable
from typing import Any

import pytest

from cairn.engine.lint import UnsafeWorkflowCode, check_workflow
from cairn.errors import CairnError, WorkflowSandboxError
from tests import lint_fixtures as fx
from tests import lint_helpers

FILE = inspect.getsourcefile(fx)
NOW = "use cairn.now()"
SLEEP = "`await asyncio.sleep(s)` or `await cairn.sleep(s)`"
RANDOM = "use cairn.random() / cairn.uuid4()"
UUID = "use cairn.uuid4()"
FILE_IO = "do file I/O in an @action"
INPUT = "pass the value as workflow input"
ENV = "read configuration in an @action, or pass it as workflow input"
IO = "in an @action"


def _entry(target: Any) -> Callable[..., Any]:
    if isinstance(target, type):
        entry = target.__dict__.get("run") or target.__dict__.get("handle") or target.run
        assert callable(entry)
        return entry
    assert callable(target)
    return target


def _findings(target: Any) -> list[tuple[str, int, str, str]]:
    """(file, line, call, hint) of every finding, in the order they are reported."""
    with pytest.raises(UnsafeWorkflowCode) as caught:
        check_workflow(target, _entry(target))
    rows = []
    for finding in caught.value.findings:
        location, call, hint = _split(finding)
        file, line = location.rsplit(":", 1)
        rows.append((file, int(line), call, hint))
    return rows


def _split(finding: str) -> tuple[str, str, str]:
    location, rest = finding.split(": ", 1)
    call, hint = rest.split(" — ", 1)
    return location, call, hint


def _line(target: Any, text: str) -> int:
    """The line number in lint_fixtures.py of the line of `target` containing `text`."""
    lines, start = inspect.getsourcelines(target)
    matches = [start + i for i, line in enumerate(lines) if text in line]
    assert len(matches) == 1, (text, matches)
    return matches[0]


def _calls(target: Any) -> dict[str, str]:
    return {call: hint for _, _, call, hint in _findings(target)}


# --- what passes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [fx.clean, fx.clean_local_cairn_helpers, fx.clean_shadowed, fx.clean_not_calls, fx.CleanClass],
    ids=lambda t: t.__name__,
)
def test_clean_bodies_pass(target: Any) -> None:
    check_workflow(target, _entry(target))


def test_source_unavailable_is_skipped_silently() -> None:
    namespace: dict[str, Any] = {}
    exec("import time\ndef made_up():\n    return time.time()\n", namespace)
    check_workflow(namespace["made_up"], namespace["made_up"])
    check_workflow(len, len)


# --- each family, with its suggestion ----------------------------------------------------------


CLOCK = [
    "time.time()",
    "time.time_ns()",
    "time.monotonic()",
    "time.perf_counter()",
    "time.process_time()",
    "datetime.now()",
    "datetime.utcnow()",
    "datetime.today()",
    "dt.date.today()",
]
RANDOMNESS = [
    "random.random()",
    "random.choice([1, 2])",
    "random.Random(4)",
    "random.SystemRandom()",
    "secrets.token_hex(8)",
    "os.urandom(4)",
]
FILES = ['open("notes.txt")', 'Path("a.txt").read_text()', 'pathlib.Path("b.bin").write_bytes(b"")']
ENVIRONMENT = ['os.environ["HOME"]', 'os.environ.get("HOME")', 'os.getenv("HOME")', 'environ["USER"]']
IO_CALLS = [
    'requests.get("https://example.com", timeout=5)',
    "httpx.AsyncClient()",
    "aiohttp.ClientSession()",
    'urllib.request.urlopen("https://example.com")',
    "socket.socket()",
    'subprocess.run(["ls"], check=True)',
    'os.system("ls")',
    'os.popen("ls")',
    "threading.Thread(target=print)",
    "multiprocessing.Pool()",
    "ThreadPoolExecutor()",
]


@pytest.mark.parametrize(
    ("target", "calls", "hint"),
    [
        (fx.clock_reads, CLOCK, NOW),
        (fx.sleeps, ["time.sleep(1)"], SLEEP),
        (fx.randomness, RANDOMNESS, RANDOM),
        (fx.uuids, ["uuid.uuid4()", "uuid.uuid1()"], UUID),
        (fx.files, FILES, FILE_IO),
        (fx.files, ['input("name? ")'], INPUT),
        (fx.environment, ENVIRONMENT, ENV),
        (fx.io_calls, IO_CALLS, IO),
    ],
    ids=["clock", "sleep", "random", "uuid", "files", "input", "environ", "io"],
)
def test_each_family_is_caught_with_its_suggestion(target: Any, calls: list[str], hint: str) -> None:
    found = _calls(target)
    for call in calls:
        assert call in found, f"{call} not flagged; flagged: {sorted(found)}"
        assert hint in found[call], (call, found[call])


def test_nothing_else_is_flagged_in_the_family_fixtures() -> None:
    expected = len(CLOCK) + 1 + len(RANDOMNESS) + 2 + len(FILES) + 1 + len(ENVIRONMENT) + len(IO_CALLS)
    bodies = (fx.clock_reads, fx.sleeps, fx.randomness, fx.uuids, fx.files, fx.environment, fx.io_calls)
    assert sum(len(_findings(body)) for body in bodies) == expected


# --- resolution --------------------------------------------------------------------------------


def test_aliased_imports_and_module_aliases_are_resolved() -> None:
    found = _calls(fx.aliased)
    assert sorted(found) == sorted(["t.time()", "now()", "datetime.now()", "dt.datetime.now()", "clock()"])
    assert all(NOW in hint for hint in found.values())


def test_imports_inside_the_body_are_resolved() -> None:
    found = _calls(fx.local_import)
    assert list(found) == ["local_clock.time()"] and NOW in found["local_clock.time()"]


def test_names_taken_from_an_enclosing_function_are_resolved() -> None:
    import time as enclosing_clock

    async def nested() -> float:
        return enclosing_clock.monotonic()

    (row,) = _findings(nested)
    assert row[2] == "enclosing_clock.monotonic()" and NOW in row[3]
    assert row[1] == _line(nested, "enclosing_clock.monotonic()")


# --- exemptions, reporting, structure ----------------------------------------------------------


def test_cairn_allow_comment_exempts_its_line() -> None:
    rows = _findings(fx.allowed)
    assert [(line, call) for _, line, call, _ in rows] == [(_line(fx.allowed, "random.random()"), "random.random()")]


def test_every_finding_is_reported_in_one_error_with_its_line() -> None:
    with pytest.raises(UnsafeWorkflowCode) as caught:
        check_workflow(fx.several, fx.several)
    err = caught.value
    message = str(err).splitlines()
    assert message[0] == (
        "workflow 'tests.lint_fixtures.several' calls functions that are not deterministic or do I/O; "
        "workflow code is replayed, so move these into an @action or use Cairn's replay-safe helpers:"
    )
    expected = [
        (_line(fx.several, "time.time()"), "time.time()"),
        (_line(fx.several, "random.random()"), "random.random()"),
        (_line(fx.several, "uuid.uuid4()"), "uuid.uuid4()"),
    ]
    assert [(line, call) for _, line, call, _ in _findings(fx.several)] == expected
    for line, call in expected:
        assert any(row.strip().startswith(f"{FILE}:{line}: {call} — ") for row in message[1:]), (line, call)
    assert err.workflow == "tests.lint_fixtures.several"
    assert isinstance(err, WorkflowSandboxError) and isinstance(err, CairnError)


def test_the_error_survives_pickling_and_can_be_renamed() -> None:
    with pytest.raises(UnsafeWorkflowCode) as caught:
        check_workflow(fx.sleeps, fx.sleeps, workflow_id="billing.sleeper")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert copy.workflow == "billing.sleeper" and copy.findings == caught.value.findings
    assert str(copy) == str(caught.value)


def test_a_class_helper_method_is_checked() -> None:
    (row,) = _findings(fx.HelperUsesClock)
    assert row[1:3] == (_line(fx.HelperUsesClock, "time.time()"), "time.time()")


def test_handle_is_checked_like_run() -> None:
    (row,) = _findings(fx.HandleUsesRandom)
    assert row[2] == "random.random()" and RANDOM in row[3]


def test_an_inherited_entry_is_checked() -> None:
    (row,) = _findings(fx.InheritsRun)
    assert row[1:3] == (_line(fx.BaseWithClock, "time.time()"), "time.time()")


def test_lambdas_and_comprehensions_inside_the_body_are_checked() -> None:
    rows = _findings(fx.in_lambda_and_comprehension)
    assert [(line, call) for _, line, call, _ in rows] == [
        (_line(fx.in_lambda_and_comprehension, "key=lambda"), "random.random()"),
        (_line(fx.in_lambda_and_comprehension, "time.monotonic()"), "time.monotonic()"),
    ]


# --- the user's own helpers, followed transitively ---------------------------------------------


def test_a_helper_is_followed_and_the_chain_is_reported() -> None:
    ((file, line, call, hint),) = _findings(fx.via_helper)
    assert (file, line, call) == (FILE, _line(fx._jitter, "random.uniform"), "random.uniform(0.9, 1.1)")
    assert hint.startswith(RANDOM)
    assert hint.endswith("(reached through via_helper -> _delay -> _jitter -> random.uniform(0.9, 1.1))")


def test_helpers_in_other_modules_of_the_package_are_followed() -> None:
    rows = _findings(fx.via_other_module)
    helpers = inspect.getsourcefile(lint_helpers)
    line = _line(lint_helpers.stamp, "datetime.datetime.now()")
    assert [(f, n, c) for f, n, c, _ in rows] == [(helpers, line, "datetime.datetime.now()")]  # once, not per path
    assert rows[0][3].endswith("(reached through via_other_module -> stamp -> datetime.datetime.now())")


def test_deterministic_helpers_actions_and_the_standard_library_are_not_flagged() -> None:
    check_workflow(fx.clean_helpers, fx.clean_helpers)  # email.utils.formatdate reads the clock: not ours to read


def test_helpers_that_call_each_other_end_and_report_once() -> None:
    ((_, line, call, hint),) = _findings(fx.recursive_helpers)
    assert (line, call) == (_line(fx._ping, "time.time()"), "time.time()")
    assert hint.endswith("(reached through recursive_helpers -> _ping -> time.time())")


def test_cairn_allow_on_a_call_exempts_what_it_reaches() -> None:
    check_workflow(fx.allowed_helper, fx.allowed_helper)


def test_a_class_workflow_follows_module_helpers_from_its_methods() -> None:
    ((_, line, call, hint),) = _findings(fx.HelperChainInClass)
    assert (line, call) == (_line(fx._jitter, "random.uniform"), "random.uniform(0.9, 1.1)")
    assert "(reached through HelperChainInClass.run -> _delay -> _jitter -> random.uniform(0.9, 1.1))" in hint


def test_a_helper_from_an_enclosing_function_is_followed() -> None:
    import time as enclosing

    def helper() -> float:
        return enclosing.monotonic()

    async def nested() -> float:
        return helper()

    ((_, line, call, hint),) = _findings(nested)
    assert (line, call) == (_line(helper, "enclosing.monotonic()"), "enclosing.monotonic()")
    assert hint.endswith("(reached through nested -> helper -> enclosing.monotonic())")


# --- module globals ----------------------------------------------------------------------------

GLOBAL = "a workflow must not assign module globals"


def test_assigning_a_module_global_is_refused_with_what_to_use_instead() -> None:
    ((_, line, call, hint),) = _findings(fx.assigns_global)
    assert (line, call) == (_line(fx.assigns_global, "counter += 1"), "counter += 1")
    assert hint.startswith(GLOBAL) and "cairn.memory.add" in hint and "property" in hint


def test_a_helper_assigning_a_global_is_refused_through_the_chain() -> None:
    ((_, line, call, hint),) = _findings(fx.global_via_helper)
    assert (line, call) == (_line(fx._bump, "counter = counter + 1"), "counter = counter + 1")
    assert hint.startswith(GLOBAL) and hint.endswith(
        "(reached through global_via_helper -> _bump -> counter = counter + 1)"
    )


def test_reading_globals_and_assigning_locals_of_the_same_name_pass() -> None:
    check_workflow(fx.clean_globals, fx.clean_globals)


def test_a_flat_layout_follows_the_modules_beside_the_workflow(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flat_helpers.py").write_text("import random\n\ndef jitter():\n    return random.random()\n")
    (tmp_path / "flat_flows.py").write_text(
        "from flat_helpers import jitter\n\nasync def wf() -> float:\n    return jitter()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    flows = importlib.import_module("flat_flows")
    try:
        ((file, line, call, hint),) = _findings(flows.wf)
    finally:
        for name in ("flat_flows", "flat_helpers"):
            sys.modules.pop(name, None)
    assert (file, line, call) == (str(tmp_path / "flat_helpers.py"), 4, "random.random()")
    assert hint.endswith("(reached through wf -> jitter -> random.random())")
