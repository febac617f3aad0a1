"""Every statement is written once, by name, in `queries.sql`; the loader adapts it to each backend.

A backend's own file (`sqlite.sql`, `postgres.sql`) overrides a statement only where the backends
truly differ in how it works (the claims). Everything else that differs is a form the loader
rewrites, so no statement is written twice:

- `{run_columns}` and `{step_columns}` (or `{run_columns:r}`, qualified): the columns of
  `RunRow` and `StepRow`, named once, by the records' fields, so a row maps to its record by name.
- `expr = ANY(:list)`: a list parameter. PostgreSQL binds it as an array; SQLite as JSON text,
  expanded with json_each.
- Row locks (`FOR UPDATE`, `FOR NO KEY UPDATE OF t`, `SKIP LOCKED`, `NOWAIT`) are PostgreSQL's; SQLite's
  writers are serialised by BEGIN IMMEDIATE, so they are dropped there, and so is `COLLATE "C"`
  (the bytewise order rows are locked in; SQLite's own order is bytewise).
- A filter that may be skipped, `(CAST(:p AS type) IS NULL OR column = CAST(:p AS type))` (or any
  test in place of the equality: a keyset page's), is one no index serves on SQLite (its plan does
  not depend on the values bound). A statement headed `-- indexed when given: p` also comes as
  `<name>_of_<p>`, where that test (each of them) is the plain one, for the caller to run when it has a value;
  headed `-- indexed when given: p and q`, as `<name>_of_<p>_and_<q>`, where both are (for an
  index on both).
- Row writes: a statement headed `-- rows: column type [= default], ...` reads its rows from
  `{rows} x`. Run alone it is one row of parameters; in PostgreSQL's `cairn_apply` (one statement
  per activation commit, see `apply_function`) it is the same text over every row of the
  transaction at once, generated here, so the two paths cannot drift apart.

Parameters are always bound (`:name`, converted to `%(name)s` for psycopg); the text is fixed,
from our own files, never built from values.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, fields
from importlib import resources

from cairn.records import RunRow, StepRow

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.M)
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_ROWS = re.compile(r"^--\s*rows:\s*(.*?)\s*$", re.M)
_GIVEN = re.compile(r"^--\s*indexed when given:\s*(\w+(?: and \w+)*)\s*$", re.M)
_COLUMNS = re.compile(r"\{(run|step)_columns(?::(\w+))?\}")
_ANY = re.compile(r"=\s*ANY\(:(\w+)\)")
_LOCK = re.compile(r"\s+FOR (?:NO KEY )?UPDATE(?: OF \w+)?(?: SKIP LOCKED| NOWAIT)?")
_FROM_ROWS = re.compile(r"\s+FROM \{rows\} x\b")
_JOIN_ROWS = re.compile(r"\s+JOIN \{rows\} x ON\s+")
_X_COLUMN = re.compile(r"\bx\.(\w+)")

RUN_COLUMNS = tuple(f.name for f in fields(RunRow))
STEP_COLUMNS = tuple(f.name for f in fields(StepRow))


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    default: str | None = None
    """SQL for when the row gives no value (e.g. `cairn_now()`)."""


@dataclass(frozen=True)
class Statement:
    name: str
    text: str
    rows: tuple[Column, ...] = ()
    """The columns of `{rows}`, for a row write."""
    last_wins_on: tuple[str, ...] = ()
    """For an upsert: the key on which, of rows applied together, the last one wins."""


def _parse(text: str) -> dict[str, Statement]:
    parts = _HEADER.split(text)
    out: dict[str, Statement] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        rows: tuple[Column, ...] = ()
        last: tuple[str, ...] = ()
        spec = _ROWS.search(body)
        if spec is not None:
            columns, _, wins = spec.group(1).partition(";")
            rows = tuple(_column(c) for c in columns.split(","))
            if wins.strip():
                last = tuple(k.strip() for k in wins.strip().removeprefix("last wins on").split(","))
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        out[name] = Statement(name, _COLUMNS.sub(_columns, "\n".join(lines).strip()), rows, last)
        for given in _GIVEN.findall(body):
            text = out[name].text
            for param in given.split(" and "):
                text = _required(text, param)
            named = f"{name}_of_{given.replace(' ', '_')}"
            out[named] = Statement(named, text, rows, last)
    return out


def _required(text: str, param: str) -> str:
    """`text` with each test on `param` that may be skipped, `(CAST(:p AS type) IS NULL OR test)`,
    made the plain test (a statement of two parts filtered alike has one in each)."""
    optional = re.compile(rf"\(CAST\(:{param} AS [\w ]+\) IS NULL\s+OR\s+")
    required, found = optional.subn("(", text)
    assert found, f"no test of :{param} that may be skipped"
    return required


def _column(spec: str) -> Column:
    typed, _, default = spec.partition("=")
    name, _, kind = typed.strip().partition(" ")
    return Column(name, kind.strip(), default.strip() or None)


def _columns(m: re.Match[str]) -> str:
    names = RUN_COLUMNS if m.group(1) == "run" else STEP_COLUMNS
    return ", ".join(f"{m.group(2)}.{n}" if m.group(2) else n for n in names)


def _one_row(columns: tuple[Column, ...]) -> str:
    """`{rows}` run alone: one row of parameters."""
    picked = []
    for c in columns:
        value = f"CAST(:{c.name} AS {c.type})"
        picked.append(f"{f'COALESCE({value}, {c.default})' if c.default else value} AS {c.name}")
    return f"(SELECT {', '.join(picked)})"


def _alone(stmt: Statement) -> str:
    """A row write run alone, as the plain one-row statement: each `x.column` its parameter, and no
    `{rows}` to join (as fast as a statement written for one row: SQLite runs these row by row).
    A write whose rows have defaults keeps a one-row `{rows}`, so each default is taken once."""
    if any(c.default for c in stmt.rows):
        return stmt.text.replace("{rows}", _one_row(stmt.rows))
    types = {c.name: c.type for c in stmt.rows}
    text = _JOIN_ROWS.sub(" WHERE ", _FROM_ROWS.sub("", stmt.text))
    text = _X_COLUMN.sub(lambda m: f"CAST(:{m.group(1)} AS {types[m.group(1)]})", text)
    assert "{rows}" not in text, f"{stmt.name}: {{rows}} must be joined as `FROM {{rows}} x` or `JOIN {{rows}} x ON`"
    return text


@functools.cache
def statements(dialect: str) -> dict[str, Statement]:
    base = resources.files(__package__)
    merged = _parse(base.joinpath("queries.sql").read_text())
    merged.update(_parse(base.joinpath(f"{dialect}.sql").read_text()))
    return merged


@functools.cache
def queries(dialect: str) -> dict[str, str]:
    """Query name → SQL in the backend's parameter style (:name for sqlite3, %(name)s for psycopg)."""
    out: dict[str, str] = {}
    for name, stmt in statements(dialect).items():
        text = _alone(stmt) if stmt.rows else stmt.text
        if dialect == "sqlite":
            text = _LOCK.sub("", _ANY.sub(r"IN (SELECT value FROM json_each(:\1))", text)).replace(' COLLATE "C"', "")
        else:
            text = _psycopg(text)
        out[name] = text
    if dialect == "postgres":
        out["apply"] = _psycopg(apply_function()[1])
        out[ONE_RUN] = _psycopg(_notifying(statements(dialect)["insert_run"]))
    return out


def _psycopg(text: str) -> str:
    """`:name` parameters as psycopg's `%(name)s` (and a literal % doubled)."""
    return _PARAM.sub(r"%(\1)s", text.replace("%", "%%"))


# --- PostgreSQL: an activation commit's row writes as one statement ------------------------------

RUN_CHANNEL = "cairn_run"
"""The LISTEN/NOTIFY channel of a run's news ("run:<id>"), which only its result waiters hear."""
WORK_CHANNEL = "cairn"
"""The channel of everything else: wake-ups of claim loops (work, schedules)."""


def channel(key: str) -> str:
    """The channel a notification of `key` is sent on (`cairn_apply` sends each on the channel
    given beside it, and its due run's wake-up on WORK_CHANNEL)."""
    return RUN_CHANNEL if key.startswith("run:") else WORK_CHANNEL


ROW_WRITES = (
    "insert_run",
    "fence_run",
    "complete_step",
    "deliver_step",
    "insert_step",
    "upsert_memory",
    "insert_properties",
    "finish_activation",
)
"""The one-row writes of an activation commit that `Tx.write_row` takes, in the order a commit makes
them and `cairn_apply` applies them."""
UPSERTS = ("upsert_memory", "insert_properties")
"""Row writes that always write one row each: no check is made of them."""
NOTIFIES = "finish_activation"
"""The row write whose `due` flag (the run left ready) sends the commit's wake-up."""


def _all_rows(stmt: Statement) -> str:
    """`{rows}` in `cairn_apply`: every row the transaction holds of this write, from its JSON array.

    LIMITed to the array's length, which changes no result and makes the planner expect a few rows
    (a tenth of its guess for the array, 100): the statement then finds each row by its key. The
    plan is made once per connection (and kept until the table is next analyzed), so one made while
    the table was empty (a new database, a worker started with it) read every row of the table in
    every commit that completed a step: 1,500 pages a commit after 1,000 workflows."""
    typed = ", ".join(f"{c.name} {c.type}" for c in stmt.rows)
    picked = ", ".join(
        f"COALESCE(j.{c.name}, {c.default}) AS {c.name}" if c.default else f"j.{c.name}" for c in stmt.rows
    )
    few = f"LIMIT json_array_length({stmt.name})"
    if not stmt.last_wins_on:
        return f"(SELECT {picked} FROM json_to_recordset({stmt.name}) AS j({typed}) {few})"
    keys = ", ".join(f"j.{k}" for k in stmt.last_wins_on)
    names = ", ".join(c.name for c in stmt.rows)
    return (
        f"(SELECT DISTINCT ON ({keys}) {picked} FROM ROWS FROM (json_to_recordset({stmt.name}) AS ({typed})) "
        f"WITH ORDINALITY AS j({names}, ord) ORDER BY {keys}, j.ord DESC {few})"
    )


def _apply_block(stmt: Statement) -> str:
    """One write of `cairn_apply`: all its rows, their check, and the wake-up it may send."""
    body = stmt.text.replace("{rows}", _all_rows(stmt))
    assert not _PARAM.search(body), f"{stmt.name}: a row write takes its values from {{rows}} only"
    name = stmt.name
    if body.lstrip().upper().startswith("SELECT"):  # a lock, not a write: count what it locked
        apply = f"SELECT count(*) INTO n FROM ({body}) locked;"
    elif name == NOTIFIES:
        due = "coalesce(bool_or(due = 1), false)"
        apply = f"WITH written AS ({body}) SELECT count(*), {due} INTO n, is_due FROM written;"
    elif name in UPSERTS:
        apply = f"{body};"
    else:
        returning = "" if "RETURNING" in body.upper() else " RETURNING 1"
        apply = f"WITH written AS ({body}{returning}) SELECT count(*) INTO n FROM written;"
    lines = [f"IF {name} IS NOT NULL THEN", f"    {apply}"]
    if name not in UPSERTS:
        lines.append(
            f"    PERFORM cairn_expect({name}_expect IS NULL OR n = json_array_length({name}), {name}_expect);"
        )
    if name == NOTIFIES:
        wake = f"PERFORM pg_notify('{WORK_CHANNEL}', finish_notify)"
        lines.append(f"    IF is_due AND finish_notify IS NOT NULL THEN {wake}; END IF;")
    lines.append("END IF;")
    return "\n".join("    " + ln for ln in lines)


ONE_RUN = "insert_run_notifying"
"""A transaction that is one new run and at most one notification (a start): `insert_run` alone,
checked as `cairn_apply` checks it (`cairn_expect`: an id taken fails the statement, so nothing is
written and nothing sent), with its notification. One plain statement, where `cairn_apply` takes 19
parameters, parses each write's JSON rows and runs in plpgsql: a start's statement 0.31 against
0.38 ms, measured in turns. The notification is one `pg_notify` of the written row, not a count
over an unnest of arrays joined back to the row: 0.30 against 0.35 ms, and a raw one-row INSERT
0.23 ms, in turns (`cairn_runs` then had six indexes to write a new run into; seven since
migration 0019)."""


def _notifying(stmt: Statement) -> str:
    check = f"cairn_expect(CAST(:{stmt.name}_expect AS text) IS NULL OR count(*) = 1, :{stmt.name}_expect)"
    notify = "CASE WHEN CAST(:notify_channel AS text) IS NOT NULL THEN pg_notify(:notify_channel, :notification) END"
    return f"WITH written AS ({_alone(stmt)}) SELECT {check}, {notify} FROM written"


def apply_parameters() -> list[tuple[str, str]]:
    """`cairn_apply`'s parameters, in order: each write's rows (JSON), the message its failed check
    raises with (None: unchecked), the wake-up to send, the events, the notifications and the
    channel of each."""
    out: list[tuple[str, str]] = []
    for name in ROW_WRITES:
        out.append((name, "json"))
        if name not in UPSERTS:
            out.append((f"{name}_expect", "text"))
        if name == NOTIFIES:
            out.append(("finish_notify", "text"))
    return [*out, ("events", "json"), ("notifications", "text[]"), ("notify_channels", "text[]")]


@functools.cache
def apply_function() -> tuple[str, str]:
    """(CREATE OR REPLACE FUNCTION of `cairn_apply`, the statement that calls it), generated from the
    row writes' own text and `postgres/functions.sql`. The function's name carries a hash of its
    text, so processes of different versions on one database each call their own."""
    writes = statements("postgres")
    blocks = "\n".join(_apply_block(writes[name]) for name in ROW_WRITES)
    params = apply_parameters()
    template = resources.files(__package__).joinpath("postgres", "functions.sql").read_text()
    body = template.replace("{parameters}", ", ".join(f"{n} {t}" for n, t in params)).replace("{row_writes}", blocks)
    name = "cairn_apply_" + hashlib.sha256(body.encode()).hexdigest()[:12]
    args = ", ".join(f"CAST(:{n} AS {t})" if t != "text" else f":{n}" for n, t in params)
    return body.replace("{name}", name), f"SELECT {name}({args})"


@functools.cache
def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, file name, SQL script) in order."""
    folder = resources.files(__package__).joinpath(dialect, "migrations")
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            out.append((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text()))
    return sorted(out)
