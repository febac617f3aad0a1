"""How fast the HTTP API and the dashboard answer with 100,000 runs in the database.

    python -m benchmarks.web [--backend sqlite,postgres] [--runs 100000] [--steps 5000]
        [--pg postgresql://postgres@127.0.0.1:5432/postgres] [--repeat 30] [--out FILE]

Setup (not measured) writes straight into Cairn's tables, as a bulk load would: N runs of five
workflows spread over 30 days in the statuses a busy system has (91% completed, 4% failed, 2%
waiting, 1% running, 1% paused, 1% cancelled), three steps each, and one run with S action steps,
each with its arguments, result, a log line and three events, and a property snapshot per two
steps (the 5,000-step run page). Then the app (`create_app`) answers in process through httpx's
ASGI transport, so the figures are the server's time (routing, queries, JSON or HTML), not a
network's: each request is sent `--repeat` times after one warm-up and the median and p95 are
printed, one JSON line per backend, with a table on stderr.

SQLite runs on a temporary file; PostgreSQL on a database created on the `--pg` server and
dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg

import cairn
from cairn.web import create_app

WORKFLOWS = [f"bench.web.Workflow{i}" for i in range(5)]
STATUSES = [("completed", 91), ("failed", 4), ("waiting", 2), ("running", 1), ("paused", 1), ("cancelled", 1)]
BIG = "big-run"
DAY = 86400.0

RUN_COLUMNS = (
    "id, workflow, status, input, result, error, queue, created_at, updated_at, started_at, completed_at, activations"
)
STEP_COLUMNS = "run_id, seq, kind, name, args, status, result, attempt, logs, created_at, started_at, completed_at"


def _runs(n: int, now: float) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(7)
    weights = [w for _, w in STATUSES]
    names = [s for s, _ in STATUSES]
    for i in range(n):
        created = now - rng.random() * 30 * DAY
        status = rng.choices(names, weights)[0]
        done = created + rng.random() * 5 if status in ("completed", "failed", "cancelled") else None
        result = json.dumps(f"result {i}") if status == "completed" else None
        error = json.dumps({"type": "RuntimeError", "message": "boom", "traceback": ""}) if status == "failed" else None
        yield (f"{uuid.UUID(int=rng.getrandbits(128)).hex}", WORKFLOWS[i % 5], status, json.dumps({"n": i}),
               result, error, "default", created, done or created, created, done, 3)  # fmt: skip


def _steps(run_ids: list[str], created: dict[str, float]) -> Iterator[tuple[Any, ...]]:
    for run_id in run_ids:
        t = created[run_id]
        for seq in (1, 2, 3):
            yield (run_id, seq, "action", "bench.web.step", json.dumps({"x": seq}), "completed", json.dumps(seq), 1,
                   None, t + seq, t + seq, t + seq + 0.01)  # fmt: skip


def _big_run(steps: int, now: float) -> tuple[tuple[Any, ...], list[tuple[Any, ...]], list[tuple[Any, ...]], list[Any]]:
    t0 = now - 3600
    run = (BIG, WORKFLOWS[0], "completed", json.dumps({"n": steps}), json.dumps("done"), None, "default", t0,
           now, t0, now - 1, steps)  # fmt: skip
    rows, events, props = [], [], []
    for seq in range(1, steps + 1):
        start = t0 + seq * 0.5 + (seq % 4) * 0.1  # some overlap: lanes
        rows.append((BIG, seq, "action", "bench.web.step", json.dumps({"item": seq, "note": "x" * 40}), "completed",
                     json.dumps({"ok": seq}), 1 + seq % 3, json.dumps([f"INFO step {seq} done"]), start, start,
                     start + 0.6))  # fmt: skip
        for kind, at in (("step.scheduled", start), ("step.started", start), ("step.completed", start + 0.6)):
            events.append((BIG, at, kind, seq, json.dumps({"kind": "action", "name": "bench.web.step"})))
        if seq % 2 == 0:
            props.append((BIG, seq // 2, seq, json.dumps({"done": seq, "stage": f"item {seq}", "api_key": "k"})))
    return run, rows, events, props


def load(url: str, n: int, steps: int) -> None:
    """Write the runs, their steps and the big run, in bulk (one transaction each kind)."""
    now = time.time()
    runs = list(_runs(n, now))
    created = {r[0]: r[7] for r in runs}
    some = [r[0] for r in runs]
    big, big_steps, events, props = _big_run(steps, now)
    runs.append(big)
    step_rows = [*_steps(some, created), *big_steps]
    run_sql = f"INSERT INTO cairn_runs ({RUN_COLUMNS}) VALUES ({', '.join(['?'] * 12)})"
    step_sql = f"INSERT INTO cairn_steps ({STEP_COLUMNS}) VALUES ({', '.join(['?'] * 12)})"
    event_sql = "INSERT INTO cairn_events (run_id, at, kind, step, detail) VALUES (?, ?, ?, ?, ?)"
    prop_sql = "INSERT INTO cairn_properties (run_id, activation, after_step, properties) VALUES (?, ?, ?, ?)"
    if url.startswith("sqlite"):
        with sqlite3.connect(urlsplit(url).path[1:]) as conn:
            for sql, rows in ((run_sql, runs), (step_sql, step_rows), (event_sql, events), (prop_sql, props)):
                conn.executemany(sql, rows)
            conn.execute("ANALYZE")
        return
    with psycopg.connect(url) as conn:
        for table, columns, rows in (
            ("cairn_runs", RUN_COLUMNS, runs),
            ("cairn_steps", STEP_COLUMNS, step_rows),
            ("cairn_events", "run_id, at, kind, step, detail", events),
            ("cairn_properties", "run_id, activation, after_step, properties", props),
        ):
            with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE")


async def measure(url: str, repeat: int) -> dict[str, dict[str, float]]:
    client = cairn.Client(url)
    await client.store.open()
    app = create_app(client)
    out: dict[str, dict[str, float]] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
        deep = (await http.get("/api/runs", params={"limit": 500})).json()["next_cursor"]
        for _ in range(20):  # 10,000 runs deep (with fewer runs, no page is that deep)
            if deep is None:
                break
            deep = (await http.get("/api/runs", params={"limit": 500, "cursor": deep})).json()["next_cursor"]
        requests = {
            "GET /api/runs": "/api/runs",
            "GET /api/runs?counts=true": "/api/runs?counts=true",
            "GET /api/runs?status=failed": "/api/runs?status=failed",
            "GET /api/runs?status=paused&workflow=…": f"/api/runs?status=paused&workflow={WORKFLOWS[3]}",
            "GET /api/runs?id_prefix=ab": "/api/runs?id_prefix=ab",
            "GET /api/runs?since=<1 day>": f"/api/runs?since={time.time() - DAY}",
            "GET /api/runs (10,000 deep)": f"/api/runs?cursor={deep}",
            "GET /api/runs?limit=500": "/api/runs?limit=500",
            "GET / (runs page)": "/",
            "GET /?status=failed (runs page)": "/?status=failed",
            "GET /runs/{5,000-step run} (page)": f"/runs/{BIG}",
            "GET /api/runs/{5,000-step run}/steps": f"/api/runs/{BIG}/steps",
        }
        if deep is None:
            del requests["GET /api/runs (10,000 deep)"]
        for label, path in requests.items():
            assert (await http.get(path)).status_code == 200, path  # warm-up
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                r = await http.get(path)
                times.append((time.perf_counter() - started) * 1000)
                assert r.status_code == 200
            times.sort()
            out[label] = {
                "median_ms": round(statistics.median(times), 1),
                "p95_ms": round(times[max(0, int(len(times) * 0.95) - 1)], 1),
            }
    await client.close()
    return out


def _pg_database(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    if backend == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='cairn-web-bench-')}/web.db"
        cleanup = None
    else:
        name = f"cairn_web_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(args.pg, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"'.encode())
        url = _pg_database(args.pg, name)

        def cleanup() -> None:
            with psycopg.connect(args.pg, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())

    try:
        asyncio.run(_migrate(url))
        started = time.monotonic()
        load(url, args.runs, args.steps)
        print(f"{backend}: loaded {args.runs:,} runs in {time.monotonic() - started:.1f}s", file=sys.stderr)
        figures = asyncio.run(measure(url, args.repeat))
    finally:
        if cleanup is not None:
            cleanup()
    return {"engine": "cairn", "backend": backend, "scenario": "web", "runs": args.runs, "steps": args.steps,
            "repeat": args.repeat, "metrics": figures}  # fmt: skip


async def _migrate(url: str) -> None:
    client = cairn.Client(url)
    await client.store.open()
    await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--out", default=None, help="Also write the results (a JSON list) here.")
    args = parser.parse_args()
    results = []
    for backend in args.backend.split(","):
        result = run_backend(backend.strip(), args)
        results.append(result)
        print(json.dumps(result))
        for label, m in result["metrics"].items():
            line = f"  {backend:8} {label:42} median {m['median_ms']:7.1f} ms   p95 {m['p95_ms']:7.1f} ms"
            print(line, file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
