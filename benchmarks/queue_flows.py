"""Workflows for benchmarks/queues.py: each run's action appends its start and end marks (pid,
time) to the file CAIRN_QUEUE_LOG, so the script measures overlap from what really ran."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

import cairn
from cairn import action, workflow

ONE = cairn.Queue("bench-one", concurrency=1)
KEYED = cairn.Queue("bench-keyed", per_key=1)
RATED = cairn.Queue("bench-rated", rate_limit=cairn.RateLimit(20, per=timedelta(seconds=1)))
ROOMY = cairn.Queue("bench-roomy", concurrency=100_000)
"""A limit that never binds: the claim goes through the queue's row, which is what it costs."""


def mark(what: str, label: str) -> None:
    with open(os.environ["CAIRN_QUEUE_LOG"], "a") as f:
        f.write(f"{what} {label} {os.getpid()} {time.time():.6f}\n")


@action
async def work(label: str, seconds: float) -> str:
    mark("start", label)
    await asyncio.sleep(seconds)
    mark("end", label)
    return label


@workflow(queue=ONE)
async def one(label: str, seconds: float) -> str:
    return await work(label, seconds)


@workflow(queue=KEYED)
async def keyed(label: str, seconds: float) -> str:
    return await work(label, seconds)


@action
async def stamp(label: str) -> str:
    mark("start", label)
    return label


@workflow(queue=RATED)
async def rated(label: str) -> str:
    return await stamp(label)


@action
async def add_one(x: int) -> int:
    return x + 1


@workflow
async def three_steps(x: int) -> int:
    value: int = await add_one(await add_one(await add_one(x)))
    return value


@workflow(queue=ROOMY)
async def three_steps_limited(x: int) -> int:
    value: int = await add_one(await add_one(await add_one(x)))
    return value
