"""An error whose message holds a lone surrogate: what Python makes of a file name that is not
UTF-8 (`os.fsdecode`), as in FileNotFoundError. On PostgreSQL, the event recording it could not be
written (PostgreSQL's text cannot hold such a character): the commit failed, the step was left
cancelled, the workflow's `except` never ran and the whole run failed "the database refused to
record the progress". Now the message reaches the workflow as it was raised, on both backends."""

from __future__ import annotations

import os

import pytest

import cairn
from cairn import action, workflow

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(60)]

PATH = os.fsdecode(b"/srv/in/report-\xff.csv")  # '/srv/in/report-\udcff.csv'


@action
async def read_report(path: str) -> str:
    raise FileNotFoundError(f"no file named {path}")


@workflow
async def report_or_default(path: str) -> str:
    try:
        return await read_report(path)
    except FileNotFoundError as exc:
        return f"default, since {exc}"


@workflow
async def report_or_fail(path: str) -> str:
    raise FileNotFoundError(f"no file named {path}")


async def test_an_action_error_naming_a_non_utf8_file_reaches_the_workflow(client: cairn.Client) -> None:
    handle = await client.start(report_or_default, PATH)
    assert await handle.result(timeout=30) == f"default, since no file named {PATH}"
    (step,) = await handle.steps()
    assert step.status == cairn.StepStatus.FAILED
    (failed,) = [e.detail["error"] for e in await handle.events() if e.kind == "step.failed"]
    message = f"no file named {PATH}"  # as raised, or with the surrogate as an escape, \\udcff
    assert failed in (message, message.encode("utf-8", "backslashreplace").decode())


async def test_a_workflow_failing_with_such_an_error_fails_with_it(client: cairn.Client) -> None:
    handle = await client.start(report_or_fail, PATH)
    with pytest.raises(FileNotFoundError) as failed:
        await handle.result(timeout=30)
    assert str(failed.value) == f"no file named {PATH}"
    assert await handle.status() == cairn.RunStatus.FAILED
