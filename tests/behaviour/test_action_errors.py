"""What a workflow and `result()` get of an exception that is hard to re-create: pydantic's
ValidationError, an ExceptionGroup, a library's error whose module the process has not loaded, a
CalledProcessError's bytes. Each is catchable, says what it said, and the same in every process."""

from __future__ import annotations

import sys

import pytest

import cairn
from cairn.registry import registry
from cairn.worker.replay import check_run
from tests import error_flows

pytestmark = pytest.mark.usefixtures("worker")


async def test_a_validation_error_of_an_action_is_caught_as_a_value_error(client: cairn.Client) -> None:
    """It failed the run with Cairn's own TypeError (ValidationError's `__new__` needs arguments
    the record does not hold), which no `except` in the workflow could catch."""
    got = await client.run(error_flows.catches_validation_error, "many", timeout=15)
    assert got == "caught ValidationError: 1 validation error for Order"


async def test_result_raises_a_validation_error_the_caller_can_catch(client: cairn.Client) -> None:
    handle = await client.start(error_flows.raises_validation_error, "many")
    with pytest.raises(ValueError, match="1 validation error for Order") as raised:
        await handle.result(timeout=15)
    assert isinstance(raised.value, cairn.ActionError) and raised.value.type_name == "ValidationError"


async def test_an_exception_group_of_an_action_comes_back_with_its_members(client: cairn.Client) -> None:
    assert await client.run(error_flows.catches_group, timeout=15) == ["first", "and a KeyError"]


async def test_a_replay_without_the_library_loaded_sees_the_error_the_run_saw(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An action that imports its library itself raised the library's error; a worker restarted
    since (the library not loaded) re-created it as `ActionError("LibError: ...")`, so the workflow
    called `echo` with another text than it had recorded, and its run paused, diverged."""
    handle = await client.start(error_flows.reports_library_error)
    said = await handle.result(timeout=15)
    assert said == "LibError: the library said no (code 7)"
    monkeypatch.delitem(sys.modules, "tests.lazy_error_lib")
    run = await handle.describe()
    defn = registry.workflow(run.workflow)
    assert defn is not None
    assert check_run(defn, run, await client.store.list_steps(run.id)) is None


async def test_result_raises_workflow_failed_for_a_type_the_client_has_not_loaded(
    client: cairn.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`WorkflowFailed` says the run's exception could not be re-created, and was raised nowhere:
    `result()` raised a bare ActionError. It is one still, for `except ActionError`."""
    handle = await client.start(error_flows.raises_library_error)
    with pytest.raises(Exception, match="the library said no") as first:  # the action loaded the library here
        await handle.result(timeout=15)
    assert type(first.value) is sys.modules["tests.lazy_error_lib"].LibError
    monkeypatch.delitem(sys.modules, "tests.lazy_error_lib")
    with pytest.raises(cairn.WorkflowFailed) as raised:
        await handle.result(timeout=15)
    failed = raised.value
    assert str(failed) == "the library said no"
    assert isinstance(failed, cairn.ActionError) and failed.type_name == "LibError"
    assert failed.code == 7  # type: ignore[attr-defined]
    assert "Original traceback" in "".join(failed.__notes__)


async def test_a_subprocess_error_keeps_its_stderr_bytes(client: cairn.Client) -> None:
    """CalledProcessError's `stderr` (bytes) was dropped from the record: the workflow got None."""
    assert await client.run(error_flows.says_tool_stderr, timeout=15) == "2 b'fatal: bad config\\n'"
