"""Workflows written as the users of the seed systems write them (Zenaton, Waymark), for the tests
that check Cairn runs them as they expect."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel

import cairn
from cairn import RetryPolicy, Workflow, action, workflow

SENT: list[str] = []


class User(BaseModel):
    email: str
    slack_id: str


@action
async def send_welcome_email(email: str) -> str:
    SENT.append(email)
    return f"mail:{email}"


@action
def introduce_through_slack(slack_id: str) -> str:
    return f"slack:{slack_id}"


@workflow
class WelcomeFlow(Workflow):
    """Zenaton's style: the input in __init__, its properties set there, `handle` with no parameters."""

    def __init__(self, user: User) -> None:
        self.email = user.email
        self.slack_id = user.slack_id

    async def handle(self) -> str:
        self.foo = await send_welcome_email(self.email)
        await cairn.wait_for_signal("go")
        self.foo = await introduce_through_slack(self.slack_id)
        return self.foo

    def id(self) -> str:
        return self.email


@action
async def compute_factorial(n: int) -> int:
    return 1 if n <= 1 else n * await compute_factorial(n - 1)


@action
async def compute_fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


@action
async def summarize(*, n: int, factorial_value: int, fibonacci_value: int) -> str:
    return f"{n}! = {factorial_value}, fib({n}) = {fibonacci_value}"


@workflow
class ParallelMathWorkflow(Workflow):
    """Waymark's example app, with a per-call retry policy through `self.run_action`."""

    async def run(self, number: int) -> str:
        factorial_value, fibonacci_value = await asyncio.gather(
            compute_factorial(number), compute_fibonacci(number), return_exceptions=True
        )
        return await self.run_action(
            summarize(n=number, factorial_value=factorial_value, fibonacci_value=fibonacci_value),
            retry=RetryPolicy(attempts=3),
        )
