"""Both backends' migrations build the same schema: the same tables, the same columns, the same
indexes (by what they index), but for the differences listed here with their reasons. A migration
added to one backend and forgotten on the other fails this test."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

import cairn

pytestmark = pytest.mark.timeout(60)

Schema = dict[str, object]

ALLOWED = {
    ("cairn_events", "primary key"): "PostgreSQL keys events by (run_id, id), indexing each row once "
    "(migration 0006); SQLite keeps its AUTOINCREMENT id as the key, which needs an index of its own",
    ("cairn_events", "index (run_id, id)"): "the same difference, on SQLite's side",
    ("cairn_schema_version", "*"): "the bookkeeping table is made by the store itself, alike but for types",
}


async def _schema(url: str) -> dict[str, set[str]]:
    client = cairn.Client(url)
    await client.store.open()
    await client.close()
    found: dict[str, set[str]] = {}
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                if table.startswith("sqlite_"):
                    continue
                facts = found.setdefault(table, set())
                info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()  # our own table names
                facts.update(f"column {row[1]}" for row in info)
                key = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5]]
                facts.add(f"primary key ({', '.join(key)})")
                for _, name, unique, origin, _ in conn.execute(f'PRAGMA index_list("{table}")'):
                    if origin == "pk":
                        continue
                    cols = [r[2] for r in conn.execute(f'PRAGMA index_info("{name}")')]
                    facts.add(f"{'unique ' if unique else ''}index ({', '.join(cols)})")
        return found
    with psycopg.connect(url) as pg:
        rows = pg.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        ).fetchall()
        for table, column in rows:
            found.setdefault(table, set()).add(f"column {column}")
        indexes = pg.execute(
            """SELECT t.relname, i.indisprimary, i.indisunique,
                      array_agg(a.attname ORDER BY array_position(i.indkey::int[], a.attnum::int))
               FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(i.indkey)
               WHERE n.nspname = 'public' GROUP BY t.relname, i.indexrelid, i.indisprimary, i.indisunique"""
        ).fetchall()
        for table, primary, unique, cols in indexes:
            what = "primary key" if primary else f"{'unique ' if unique else ''}index"
            found.setdefault(table, set()).add(f"{what} ({', '.join(cols)})")
    return found


def _allowed(table: str, fact: str) -> bool:
    return any(t == table and (f == "*" or fact.startswith(f)) for t, f in ALLOWED)


async def test_both_backends_have_the_same_schema(tmp_path: object, pg_template: str, pg_server: str) -> None:
    from tests.conftest import _with_db

    sqlite = await _schema(f"sqlite:///{tmp_path}/schema.db")
    postgres = await _schema(_with_db(pg_server, pg_template))
    assert set(sqlite) == set(postgres), "tables differ"
    differences = sorted(
        f"{table}: {fact} only on {side}"
        for table in sqlite
        for side, mine, theirs in (("SQLite", sqlite, postgres), ("PostgreSQL", postgres, sqlite))
        for fact in mine[table] - theirs[table]
        if not _allowed(table, fact)
    )
    assert differences == []
