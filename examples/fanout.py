"""Waymark's parallel fan-out / fan-in: two actions run side by side, a third summarizes.

`asyncio.gather(..., return_exceptions=True)` inside a workflow is durable: both actions are
scheduled as steps at once, run on any worker in parallel, and a failure of one arrives as an
exception *value* instead of cancelling the other.
"""

from __future__ import annotations

import asyncio
import math

import cairn
from cairn import Workflow, action, workflow
from examples._show import print_steps


@action
async def compute_factorial(n: int) -> int:
    """n! (refuses negative numbers)."""
    if n < 0:
        raise ValueError(f"factorial is undefined for {n}")
    return math.factorial(n)


@action
async def compute_fibonacci(n: int) -> int:
    """The n-th Fibonacci number."""
    a, b = 0, 1
    for _ in range(abs(n)):
        a, b = b, a + b
    return -a if n < 0 and n % 2 == 0 else a  # F(-n) = (-1)^(n+1) F(n)


@action
async def summarize(*, n: int, factorial_value: int | None, fibonacci_value: int | None) -> str:
    """Build the human-readable summary (string building is work, so it lives in an action)."""
    fact = "undefined" if factorial_value is None else str(factorial_value)
    fib = "undefined" if fibonacci_value is None else str(fibonacci_value)
    return f"{n}! = {fact}, fib({n}) = {fib}"


@workflow
class ParallelMathWorkflow(Workflow):
    """Fan out to two computations, fan in to a summary."""

    async def run(self, number: int) -> str:
        factorial_value, fibonacci_value = await asyncio.gather(
            compute_factorial(number), compute_fibonacci(number), return_exceptions=True
        )
        # With return_exceptions=True a failed branch is an exception value, not a raise.
        return await summarize(
            n=number,
            factorial_value=None if isinstance(factorial_value, BaseException) else factorial_value,
            fibonacci_value=None if isinstance(fibonacci_value, BaseException) else fibonacci_value,
        )


async def demo(client: cairn.Client) -> None:
    numbers = [10, 25, -4]
    handles = [await client.start(ParallelMathWorkflow, n) for n in numbers]
    print(f"started {len(handles)} runs of {ParallelMathWorkflow.__cairn_workflow__.id} for {numbers}")
    results = await asyncio.gather(*(h.result(timeout=30) for h in handles))
    for n, handle, result in zip(numbers, handles, results, strict=True):
        print(f"\nrun {handle.id} (number={n}): {result!r}")
        await print_steps(handle)
