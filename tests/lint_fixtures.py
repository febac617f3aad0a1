"""Workflow bodies for tests/unit/test_lint.py: plain functions and classes, never registered as
workflows (one action, `draw`, shows that the check does not follow into actions).

Each one exercises one pattern of `cairn.engine.lint.check_workflow`; none of them is ever run.
Helpers it follows live here and in tests/lint_helpers.py (another module of the same package).
The tests find line numbers by searching for the text of a line, so reformatting is harmless.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import multiprocessing
import os
import pathlib
import random
import secrets
import socket
import subprocess
import threading
import time
import time as t
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from os import environ
from pathlib import Path
from time import time as now

import cairn
from tests import lint_helpers
from tests.lint_helpers import label

clock = time.monotonic  # a module-level alias by assignment: `clock()` reads the clock


async def _step(n: int) -> int:
    return n


# --- clean -------------------------------------------------------------------------------------


async def clean(n: int) -> dict[str, object]:
    results = await asyncio.gather(*(_step(i) for i in range(n)), return_exceptions=True)
    await asyncio.sleep(5)
    await cairn.sleep(5)
    started = cairn.now()
    draw = cairn.random()
    token = cairn.uuid4()
    done = await asyncio.wait_for(_step(1), timeout=10)
    print("progress", len(results), str(token))
    return {"results": results, "started": started.isoformat(), "draw": draw, "done": done}


async def clean_local_cairn_helpers() -> float:
    from cairn import now, random, uuid4

    return random() + now().timestamp() + uuid4().int


async def clean_shadowed(open: Callable[[str], str], input: str) -> str:
    random = [3, 1, 2]
    random.sort()
    time = {"at": 1}
    return open(input) + str(random) + str(time.get("at"))


async def clean_not_calls() -> str:
    try:
        await _step(1)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError("no") from exc
    os.environ["CAIRN_FLAG"] = "1"  # writing is not a read
    name = Path("x").name  # no I/O
    return name + repr(time.struct_time)


class CleanClass(cairn.Workflow):
    async def run(self, n: int) -> int:
        self.count = n
        values = await asyncio.gather(*(_step(i) for i in range(n)))
        return sum(values) + self._double(n)

    def _double(self, n: int) -> int:
        return 2 * n


# --- one family each ---------------------------------------------------------------------------


async def clock_reads() -> list[object]:
    return [
        time.time(),
        time.time_ns(),
        time.monotonic(),
        time.perf_counter(),
        time.process_time(),
        datetime.now(),
        datetime.utcnow(),
        datetime.today(),
        dt.date.today(),
    ]


def sleeps() -> None:
    time.sleep(1)


async def randomness() -> list[object]:
    return [
        random.random(),
        random.choice([1, 2]),
        random.Random(4),
        random.SystemRandom(),
        secrets.token_hex(8),
        os.urandom(4),
    ]


async def uuids() -> list[object]:
    return [uuid.uuid4(), uuid.uuid1()]


async def files() -> list[object]:
    return [open("notes.txt"), input("name? "), Path("a.txt").read_text(), pathlib.Path("b.bin").write_bytes(b"")]


async def environment() -> list[object]:
    return [os.environ["HOME"], os.environ.get("HOME"), os.getenv("HOME"), environ["USER"]]


async def io_calls() -> list[object]:
    import aiohttp
    import httpx
    import requests

    return [
        requests.get("https://example.com", timeout=5),
        httpx.AsyncClient(),
        aiohttp.ClientSession(),
        urllib.request.urlopen("https://example.com"),
        socket.socket(),
        subprocess.run(["ls"], check=True),
        os.system("ls"),
        os.popen("ls"),
        threading.Thread(target=print),
        multiprocessing.Pool(),
        ThreadPoolExecutor(),
    ]


# --- resolution, exemptions, structure ---------------------------------------------------------


async def aliased() -> list[object]:
    return [t.time(), now(), datetime.now(), dt.datetime.now(), clock()]


async def local_import() -> float:
    import time as local_clock

    return local_clock.time()


async def allowed() -> list[object]:
    return [
        time.time(),  # cairn: allow
        random.random(),
    ]


async def several(n: int) -> int:
    started = time.time()
    await asyncio.sleep(1)
    if random.random() < 0.5:
        n += 1
    token = uuid.uuid4()
    return n + int(started) + token.int


class HelperUsesClock(cairn.Workflow):
    async def run(self) -> float:
        return self._stamp() + 1

    def _stamp(self) -> float:
        return time.time()


class HandleUsesRandom:
    async def handle(self) -> float:
        return random.random()


async def in_lambda_and_comprehension(items: list[int]) -> list[float]:
    ordered = sorted(items, key=lambda _: random.random())
    return [time.monotonic() + i for i in ordered]


class BaseWithClock(cairn.Workflow):
    async def run(self) -> float:
        return time.time()


class InheritsRun(BaseWithClock):
    def helper(self) -> int:
        return 1


# --- helpers of the user's own, followed transitively ------------------------------------------


def _jitter(base: float) -> float:
    return base * random.uniform(0.9, 1.1)


def _delay(attempt: int) -> float:
    return _jitter(2.0**attempt)


def _double(n: int) -> int:
    return 2 * n


def _even(n: int) -> bool:
    return True if n == 0 else _odd(n - 1)


def _odd(n: int) -> bool:
    return False if n == 0 else _even(n - 1)


def _ping(n: int) -> float:
    return time.time() if n <= 0 else _pong(n - 1)


def _pong(n: int) -> float:
    return _ping(n - 1)


@cairn.action(id="tests.lint_fixtures.draw")
async def draw() -> float:
    return random.random()  # an action may: it is not workflow code


async def via_helper(attempt: int) -> float:
    return _delay(attempt)


async def via_other_module() -> str:
    from tests.lint_helpers import stamp as local_stamp

    return lint_helpers.stamp() + local_stamp() + label(1)


async def clean_helpers(n: int) -> str:
    drawn = await draw()
    return f"{_even(_double(n))} {_odd(n)} {email.utils.formatdate()} {label(n)} {drawn}"


async def recursive_helpers(n: int) -> float:
    return _ping(n) + _pong(n)


async def allowed_helper() -> float:
    return _delay(1)  # cairn: allow


class HelperChainInClass(cairn.Workflow):
    async def run(self) -> float:
        return self._local() + _delay(1)

    def _local(self) -> float:
        return 1.0


counter = 0


async def assigns_global() -> int:
    global counter
    counter += 1
    return counter


async def global_via_helper() -> int:
    return _bump()


def _bump() -> int:
    global counter
    counter = counter + 1
    return counter


async def clean_globals() -> int:
    def inner() -> int:
        counter = 5  # a local of its own
        counter += 1
        return counter

    return counter + inner()  # reading a module global changes nothing
