"""Run every example against one database with an embedded worker.

    python -m examples.run_all [--db URL]

The default database is `sqlite:///./cairn-demo.db`, deleted first so every run starts fresh.
Exits non-zero if any example raised.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import cairn
from cairn.store.open import redact_url
from examples import approval, fanout, memory, plain_def, welcome

DEFAULT_DB = "sqlite:///./cairn-demo.db"

DEMOS: list[tuple[str, Callable[[cairn.Client], Awaitable[None]]]] = [
    ("Parallel fan-out / fan-in (Waymark)", fanout.demo),
    ("Welcome flow with a derived run id and properties (Zenaton)", welcome.demo),
    ("Run memory and dependency injection (Ziet)", memory.demo),
    ("Approval signal, durable sleep and a child workflow", approval.demo),
    ("Plain def workflow with ordinary control flow", plain_def.demo),
]


def _fresh_default_db(url: str) -> None:
    """Delete the default SQLite demo database (and its WAL files) for a clean run."""
    path = Path(url.removeprefix("sqlite:///"))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def main(url: str) -> int:
    client = cairn.Client(url)
    failed: list[str] = []
    try:
        async with cairn.Worker(client, poll_interval=0.2):
            for title, demo in DEMOS:
                print(f"\n=== {title} ===")
                started = time.monotonic()
                try:
                    await demo(client)
                except Exception:
                    traceback.print_exc()
                    failed.append(title)
                    print(f"--- FAILED: {title}")
                else:
                    print(f"--- ok ({time.monotonic() - started:.2f}s)")
    finally:
        await client.close()
    print()
    if failed:
        print(f"{len(failed)} of {len(DEMOS)} examples failed: {'; '.join(failed)}")
        return 1
    print(f"all {len(DEMOS)} examples passed on {redact_url(url)}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.run_all", description="Run every Cairn example with an embedded worker."
    )
    parser.add_argument("--db", default=DEFAULT_DB, help=f"database URL (default {DEFAULT_DB}, recreated each run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.db == DEFAULT_DB:
        _fresh_default_db(args.db)
    return asyncio.run(main(args.db))


if __name__ == "__main__":
    sys.exit(cli())
