"""Reading a PostgreSQL database's activity counters for the benchmark drivers.

Why a module of its own: both the DBOS driver and the raw-SQL reference report commits per unit
of work from the same counters, and must read them the same way. The raw reference must not
import ``dbos`` (an optional extra), so the shared code lives here, on psycopg alone.

How: ``pg_stat_database`` is cluster-wide, so it is read from a connection to the ``postgres``
maintenance database and the reads add nothing to the measured database's counters. Backends
flush their statistics lazily (at most about once a second while busy, and when they exit), so
a reading is taken only once no backend is connected to the measured database and the counters
have not moved for ``STABLE_SEC``; each sample starts with ``pg_stat_clear_snapshot()``.
``pg_stat_statements`` calls are summed the same way when the extension is available.
"""

from __future__ import annotations

import time

import psycopg
from psycopg import conninfo

STABLE_SEC = 0.5


def database_name(url: str) -> str:
    name = conninfo.conninfo_to_dict(url).get("dbname")
    if not name:
        raise ValueError(f"the URL names no database: {url}")
    return str(name)


def maintenance_conninfo(url: str) -> str:
    """The same server and credentials, the ``postgres`` database."""
    return conninfo.make_conninfo(url, dbname="postgres")


class StatsReader:
    """Counters of one database, read from the maintenance database."""

    def __init__(self, url: str) -> None:
        self.dbname = database_name(url)
        self.conn = psycopg.connect(maintenance_conninfo(url), autocommit=True)
        self.has_statements = self._statements_available()

    def _statements_available(self) -> bool:
        # The view needs the extension created where we query from and the library preloaded.
        try:
            self.conn.execute("SELECT 1 FROM pg_stat_statements LIMIT 1")
        except psycopg.Error:
            return False
        return True

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> StatsReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sample(self) -> tuple[int, int | None, int]:
        """(xact_commit, pg_stat_statements calls or None, backends connected) right now."""
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        row = self.conn.execute(
            "SELECT xact_commit, (SELECT count(*) FROM pg_stat_activity WHERE datname = %s)"
            " FROM pg_stat_database WHERE datname = %s",
            (self.dbname, self.dbname),
        ).fetchone()
        if row is None:
            raise RuntimeError(f"no pg_stat_database row for {self.dbname}")
        calls: int | None = None
        if self.has_statements:
            srow = self.conn.execute(
                "SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s",
                (self.dbname,),
            ).fetchone()
            calls = int(srow[0]) if srow else None
        return int(row[0]), calls, int(row[1])

    def settled(self, timeout: float = 30.0) -> tuple[int, int | None]:
        """(commits, statements) once nobody is connected and nothing moved for STABLE_SEC."""
        deadline = time.monotonic() + timeout
        last: tuple[int, int | None] | None = None
        stable_since = time.monotonic()
        while True:
            commits, calls, backends = self.sample()
            now = time.monotonic()
            if last is None or (commits, calls) != last or backends:
                last, stable_since = (commits, calls), now
            elif now - stable_since >= STABLE_SEC:
                return last
            if now > deadline:
                raise RuntimeError(f"statistics of {self.dbname} did not settle in {timeout} s")
            time.sleep(0.05)
