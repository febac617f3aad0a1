"""Code written as users of the seed systems write it (Zenaton, Waymark, Oryonix, Ziet), for the
tests of the promises their documents make (tests/behaviour/test_seed_promises.py)."""

from __future__ import annotations

from pydantic import BaseModel

import cairn
from cairn import Workflow, action, workflow


class User(BaseModel):
    email: str
    slack_id: str


@action
async def greet(email: str) -> str:
    return f"hello {email}"


@workflow
class WelcomeByEmail(Workflow):
    """Zenaton's style: the input in `__init__`, `id(self)` derived from it."""

    def __init__(self, user: User) -> None:
        self.email = user.email

    async def handle(self) -> str:
        return await greet(self.email)

    def id(self) -> str:
        return f"welcome-{self.email}"


@workflow
class OnboardByEmail(Workflow):
    """SPEC's form: `id(self, ...)` takes what `run` takes."""

    async def run(self, user: User) -> str:
        return await greet(user.email)

    def id(self, user: User) -> str:
        return f"onboard-{user.email}"


@action(name="refund_card")
async def refund(cents: int) -> str:
    """Waymark keys an action by (module, the name given to @action)."""
    return f"refunded {cents}"


class CardError(Exception):
    """An exception as libraries write them: a keyword-only field its message is made from."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code

    def __str__(self) -> str:
        return f"[{self.code}] {self.args[0]}"


class Response:
    status = 503


class UpstreamError(Exception):
    """An exception whose message needs an object no record can carry."""

    def __init__(self, message: str, *, response: Response) -> None:
        super().__init__(message)
        self.response = response

    def __str__(self) -> str:
        return f"{self.args[0]} (status {self.response.status})"


@action
async def charge(cents: int) -> str:
    raise CardError(f"card declined for {cents}", code="E42")


@action
async def call_upstream(path: str) -> str:
    raise UpstreamError(f"GET {path} failed", response=Response())


@workflow
async def charge_and_catch(cents: int) -> list[str]:
    try:
        return [await charge(cents)]
    except CardError as exc:
        return [type(exc).__name__, exc.code, str(exc)]


@workflow
async def charge_uncaught(cents: int) -> str:
    return await charge(cents)


@workflow
async def upstream_and_catch(path: str) -> list[str]:
    try:
        return [await call_upstream(path)]
    except UpstreamError as exc:
        return [type(exc).__name__, str(exc)]


@action
async def raw_bytes(valid: bool) -> bytes:
    return b"ok" if valid else b"\xff\xfe"


@action
async def takes_bytes(data: bytes) -> int:
    return len(data)


@workflow
async def bytes_out(valid: bool) -> str:
    try:
        return (await raw_bytes(valid)).decode()
    except cairn.SerializationError as exc:
        return f"SerializationError: {exc}"


@workflow
async def bytes_in() -> str:
    try:
        return str(await takes_bytes(b"\xff\xfe"))
    except cairn.SerializationError as exc:
        return f"SerializationError: {exc}"


@workflow
async def store_blob(data: bytes) -> int:
    return await takes_bytes(data)
