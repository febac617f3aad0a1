"""Workflows for tests/behaviour/test_action_errors.py: actions failing with exceptions that are hard
to re-create (pydantic's ValidationError, an ExceptionGroup, a library's error whose module the
replaying process has not loaded) and the workflows that catch them."""

from __future__ import annotations

import subprocess

import pydantic

from cairn import action, workflow


class Order(pydantic.BaseModel):
    quantity: int


@action
async def parse_quantity(text: str) -> int:
    return Order(quantity=text).quantity  # type: ignore[arg-type]  # pydantic's ValidationError


@action
async def fail_several() -> int:
    raise ExceptionGroup("several failed", [ValueError("first"), KeyError("second")])


@action
async def call_library() -> int:
    from tests import lazy_error_lib  # imported by the action only

    raise lazy_error_lib.LibError("the library said no", code=7)


@action
def run_tool() -> str:
    subprocess.run(["sh", "-c", "echo 'fatal: bad config' >&2; exit 2"], check=True, capture_output=True)
    return "ok"


@action
async def echo(text: str) -> str:
    return text


@workflow
async def catches_validation_error(text: str) -> str:
    try:
        return str(await parse_quantity(text))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return f"caught {type(exc).__name__}: {str(exc).splitlines()[0]}"


@workflow
async def catches_group() -> list[str]:
    caught: list[str] = []
    try:
        await fail_several()
    except* ValueError as group:
        caught = [str(e) for e in group.exceptions]
    except* KeyError:
        caught.append("and a KeyError")
    return caught


@workflow
async def raises_validation_error(text: str) -> int:
    return await parse_quantity(text)


@workflow
async def reports_library_error() -> str:
    try:
        await call_library()
    except Exception as exc:
        said = await echo(f"{type(exc).__name__}: {exc} (code {getattr(exc, 'code', None)})")
    return said


@workflow
async def raises_library_error() -> str:
    await call_library()
    return "never"


@workflow
async def says_tool_stderr() -> str:
    try:
        return await run_tool()
    except subprocess.CalledProcessError as exc:
        return f"{exc.returncode} {exc.stderr!r}"
