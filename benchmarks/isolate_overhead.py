"""Per-call overhead of `isolate=True`: 200 sequential calls of a trivial isolated action.

Run from the repository root: `python -m benchmarks.isolate_overhead [--calls 200]`. It calls the
worker's own entry point for isolated attempts (`cairn.worker.isolate.run_isolated`) after one
warm-up call (which starts the forkserver), and prints the mean and percentiles per call next to
the same action called in process, so the figure is what isolation adds to each attempt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from benchmarks.isolated_action import trivial
from cairn.action_context import ActionContext
from cairn.worker.isolate import run_isolated


async def measure(calls: int) -> dict[str, float]:
    defn = trivial.defn

    async def one(i: int) -> None:
        ctx = ActionContext("bench-run", defn.id, 1, i)
        assert await run_isolated(defn, json.dumps({"x": i}), ctx, None) == str(i + 1)

    await one(0)  # warm-up: the forkserver starts here
    took = []
    for i in range(calls):
        start = time.perf_counter()
        await one(i)
        took.append((time.perf_counter() - start) * 1000)
    took.sort()
    start = time.perf_counter()
    for i in range(calls):
        defn.fn(i)
    in_process = (time.perf_counter() - start) * 1000 / calls
    return {
        "calls": calls,
        "mean_ms": round(statistics.fmean(took), 3),
        "p50_ms": round(took[len(took) // 2], 3),
        "p95_ms": round(took[int(len(took) * 0.95)], 3),
        "max_ms": round(took[-1], 3),
        "in_process_ms": round(in_process, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.calls))))


if __name__ == "__main__":
    main()
