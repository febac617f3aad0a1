"""Emptying a benchmark database between rounds: the scripts that run worker processes against one
database (queues.py, schedules_retention.py) start each round from empty tables."""

from __future__ import annotations

import sqlite3

import psycopg

import cairn

TABLES = [
    "cairn_steps",
    "cairn_events",
    "cairn_memory",
    "cairn_signals",
    "cairn_properties",
    "cairn_runs",
    "cairn_queues",
    "cairn_workers",
    "cairn_schedules",
]


async def empty_database(url: str) -> None:
    """Migrate, then empty every table the benchmarks write (our own table names, no user data)."""
    client = cairn.Client(url)
    await client.store.open()
    await client.close()
    if url.startswith("postgres"):
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {', '.join(TABLES)}".encode())
    else:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for t in TABLES:
                conn.execute(f"DELETE FROM {t}")
