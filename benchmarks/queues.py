"""Queues with flow control, measured with real worker processes (docs/benchmarks.md, "Queues").

    python benchmarks/queues.py --db postgresql://postgres@127.0.0.1:5432/bench_queues [--workers 4]

Prints: concurrency=1 overlap over 200 runs; per_key=1 overlap per key (and how many keys ran at
once); the starts per second of a 20/s rate limit; throughput of 3-step workflows in the default
queue against a queue whose limit never binds (the cost of the limited claim path).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cairn  # noqa: E402
from benchmarks import queue_flows as qf  # noqa: E402
from benchmarks.tables import empty_database  # noqa: E402
from cairn.bench import scenarios  # noqa: E402
from cairn.types import RunStatus  # noqa: E402


def spans(log: Path) -> list[tuple[float, float, str]]:
    opened: dict[str, float] = {}
    out = []
    for line in log.read_text().splitlines():
        what, label, _pid, at = line.split()
        if what == "start":
            opened[label] = float(at)
        else:
            out.append((opened.pop(label), float(at), label))
    return sorted(out)


def overlap(found: list[tuple[float, float, str]]) -> tuple[int, float]:
    """How many spans began before an earlier one ended, and the most seconds of such an overlap."""
    count, worst, last_end = 0, 0.0, float("-inf")
    for start, end, _ in found:
        if start < last_end:
            count += 1
            worst = max(worst, last_end - start)
        last_end = max(last_end, end)
    return count, worst


def peak(found: list[tuple[float, float, str]]) -> int:
    events = sorted([(s, 1) for s, _, _ in found] + [(e, -1) for _, e, _ in found])
    now = best = 0
    for _, d in events:
        now += d
        best = max(best, now)
    return best


async def wait_done(client: cairn.Client, total: int, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while await client.store.count_runs(RunStatus.COMPLETED) < total:
        if await client.store.count_runs(RunStatus.FAILED):
            raise RuntimeError("a benchmark run failed")
        if time.monotonic() > deadline:
            raise TimeoutError(f"runs not completed within {timeout}s")
        await asyncio.sleep(0.05)


async def scenario(
    url: str, workers: int, concurrency: int, starts: list[tuple[object, tuple[object, ...], dict]], log: Path
) -> float:
    log.write_text("")
    await empty_database(url)
    client = cairn.Client(url)
    procs = scenarios.spawn_workers(url, workers, concurrency, module="benchmarks.queue_flows", cwd=ROOT)
    try:
        while len(await client.store.list_workers()) < workers:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker process exited at start")
            await asyncio.sleep(0.05)
        began = time.perf_counter()
        await asyncio.gather(*(client.start(wf, *args, **opts) for wf, args, opts in starts))
        await wait_done(client, len(starts))
        return time.perf_counter() - began
    finally:
        scenarios.stop_workers(procs)
        await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rate-seconds", type=float, default=15.0)
    parser.add_argument("--throughput", type=int, default=1000)
    opts = parser.parse_args()
    url, n = opts.db, opts.workers
    log = Path(tempfile.mkdtemp()) / "queue.log"
    os.environ["CAIRN_QUEUE_LOG"] = str(log)

    secs = await scenario(url, n, 8, [(qf.one, (f"o{i}", 0.005), {}) for i in range(opts.runs)], log)
    count, worst = overlap(spans(log))
    print(
        f"concurrency=1, {n} workers, {opts.runs} runs: overlaps {count} (worst {worst * 1000:.1f} ms), "
        f"{opts.runs / secs:.1f} runs/s"
    )

    keys = ["k0", "k1", "k2", "k3"]
    starts = [(qf.keyed, (f"{keys[i % 4]}-{i}", 0.01), {"key": keys[i % 4]}) for i in range(opts.runs)]
    secs = await scenario(url, n, 8, starts, log)
    found = spans(log)
    by_key: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for s in found:
        by_key[s[2].split("-")[0]].append(s)
    per_key = {k: overlap(v)[0] for k, v in sorted(by_key.items())}
    print(
        f"per_key=1, {n} workers, {opts.runs} runs over 4 keys: overlaps per key {per_key}, "
        f"at most {peak(found)} at once, {opts.runs / secs:.1f} runs/s"
    )

    total = int(20 * opts.rate_seconds)
    secs = await scenario(url, n, 8, [(qf.rated, (f"r{i}",), {}) for i in range(total)], log)
    stamps = sorted(float(line.split()[3]) for line in log.read_text().splitlines() if line.startswith("start"))
    first = stamps[0]
    per_second = Counter(int(t - first) for t in stamps)
    full = [per_second[s] for s in range(int(stamps[-1] - first))]  # complete seconds only
    mean = sum(full) / len(full)
    print(
        f"rate_limit 20/s, {n} workers, {total} runs: {mean:.2f} starts/s over {len(full)} complete seconds "
        f"(min {min(full)}, max {max(full)}): {full}"
    )

    for label, wf in (("default queue", qf.three_steps), ("limited queue", qf.three_steps_limited)):
        secs = await scenario(url, 1, 64, [(wf, (i,), {}) for i in range(opts.throughput)], log)
        print(f"throughput, {label}, 1 worker: {opts.throughput / secs:.1f} workflows/s")


if __name__ == "__main__":
    asyncio.run(main())
