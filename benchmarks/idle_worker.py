"""What a worker process with nothing to do costs, soon after its last work and long after it.

    python -m benchmarks.idle_worker [--backend sqlite,postgres] [--seconds 20]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres]

One worker process (`cairn worker cairn.bench.flows`) on an empty, migrated database; its CPU (user
+ system, from /proc) over `--seconds`, from 1 s after it registered (what `cairn bench --scenario
history` measures), then again from 35 s after (on SQLite the file watcher looks less often after
30 s without news). One JSON line per backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg

import cairn
from cairn.bench.scenarios import idle_cpu_percent


async def _migrate(url: str) -> None:
    client = cairn.Client(url)
    await client.store.open()
    await client.close()


async def measure(url: str, seconds: float) -> dict[str, float]:
    await _migrate(url)
    started = time.monotonic()
    soon = await idle_cpu_percent(url, seconds, settle=1.0)
    late = await idle_cpu_percent(url, seconds, settle=35.0)
    return {
        "cpu_percent_from_1s": soon,
        "cpu_percent_from_35s": late,
        "seconds_measured": seconds,
        "took_s": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="sqlite,postgres")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    for backend in args.backend.split(","):
        backend = backend.strip()
        if backend == "sqlite":
            url = f"sqlite:///{tempfile.mkdtemp(prefix='cairn-idle-')}/idle.db"
            figures = asyncio.run(measure(url, args.seconds))
        else:
            name = f"cairn_idle_bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(args.pg, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"'.encode())
            parts = urlsplit(args.pg)
            url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
            try:
                figures = asyncio.run(measure(url, args.seconds))
            finally:
                with psycopg.connect(args.pg, autocommit=True) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        print(json.dumps({"engine": "cairn", "backend": backend, "scenario": "idle_worker", "metrics": figures}))


if __name__ == "__main__":
    main()
