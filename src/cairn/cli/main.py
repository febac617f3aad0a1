"""The `cairn` command line: run workers, start and inspect runs, and control them.

Every command opens one `cairn.Client`, does its work in one `asyncio.run`, and closes the client.
Expected failures (bad input, unknown runs or workflows, unreachable databases) print
`error: <message>` on stderr without a traceback; database passwords are never printed.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import math
import os
import shlex
import signal
import sqlite3
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

import cairn
from cairn.cli.json_input import parse_json, read_json_text
from cairn.cli.lazy import Lazy
from cairn.cli.times import FORMS as TIME_FORMS
from cairn.cli.times import When, iso, parse_when
from cairn.errors import CairnError, DatabaseLocked, DatabaseUnavailable, DatabaseUnusable
from cairn.transitions import RULES
from cairn.types import RunStatus
from cairn.worker.defaults import DEFAULT_CONCURRENCY, DEFAULT_DEADLOCK_TIMEOUT, DEFAULT_GRACE

if TYPE_CHECKING:
    from rich.console import Console

    from cairn.cli import render
    from cairn.client.client import QueuePlace
    from cairn.client.handle import StepInfo
    from cairn.records import RunRow
    from cairn.registry import registry
else:  # imported when a command first needs them: `cairn --help` stays fast (tests/test_cli_speed.py)
    render = Lazy("cairn.cli.render")
    registry = Lazy("cairn.registry", "registry")

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

EXPECTED: tuple[type[BaseException], ...] = (CairnError, ValueError, NotImplementedError)
"""Errors that are the user's to fix: printed as `error: ...` with exit code 2."""


# --- plumbing ---------------------------------------------------------------------------------


def loads(text: str | None) -> Any:
    from cairn.serialization import loads as decode

    return decode(text)


def redact_url(url: str) -> str:
    from cairn.store.open import redact_url as redact

    return redact(url)


class Failure(Exception):
    """Raised inside a command's coroutine to end it with a message and an exit code."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2) -> NoReturn:
    # Whatever raised it, a password in a database URL or libpq keyword string is never printed.
    click.echo(f"error: {redact_url(message)}", err=True)
    sys.exit(code)


def run(main: Coroutine[Any, Any, T], expected: tuple[type[BaseException], ...] = EXPECTED) -> T:
    """Run a command's coroutine, turning expected failures into `error: ...` and an exit code."""
    try:
        return asyncio.run(main)
    except Failure as exc:
        fail(str(exc), exc.code)
    except (DatabaseUnavailable, DatabaseLocked) as exc:  # unreachable or locked: not the user's input (exit 1)
        fail(str(exc) or type(exc).__name__, 1)
    except expected as exc:
        fail(str(exc) or type(exc).__name__, 2)
    except (OSError, sqlite3.Error) as exc:  # unreachable database, unwritable file, locked file
        fail(str(exc) or type(exc).__name__, 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)


async def with_client(
    url: str | None, body: Callable[[cairn.Client], Awaitable[T]], *, create: bool = False, migrate: bool = True
) -> T:
    """Run `body` with a client of `url`. Only commands that write work (`create`: start, dashboard)
    may create a SQLite database: any other would leave an empty file, and its folders, behind a typo.
    Without `migrate`, a database older than this code is refused, not migrated (`SchemaBehind`)."""
    from cairn.store.open import open_store

    if not create:
        must_exist(url)
    store = open_store(url)
    store.db.migrates = migrate
    client = cairn.Client(store=store)
    try:
        return await body(client)
    finally:
        await client.close()


def must_exist(url: str | None) -> None:
    """Failure (exit 1) when `url` names a SQLite file that does not exist; nothing is created."""
    path = missing_sqlite_file(url)
    if path is not None:
        raise Failure(
            f"no database at {path} ({redact_url(resolve_url(url))}): nothing to read. Check --db or "
            "CAIRN_DATABASE_URL; a worker or `cairn start` creates the database",
            code=1,
        )


def missing_sqlite_file(url: str | None) -> str | None:
    """The path of the SQLite file `url` names when that file does not exist (else None: it exists,
    is in memory, or the database is PostgreSQL, which connecting never creates)."""
    from cairn.store.sqlite import sqlite_path

    resolved = resolve_url(url)
    if not resolved.lower().startswith("sqlite:"):
        return None
    path = sqlite_path(resolved)
    return None if path == ":memory:" or Path(path).exists() else path


def resolve_url(url: str | None) -> str:
    from cairn.store.open import resolve_url as resolve

    return resolve(url)


def db_option(fn: F) -> F:
    return click.option(
        "--db",
        "db",
        envvar="CAIRN_DATABASE_URL",
        default=None,
        metavar="URL",
        help="Database URL (env CAIRN_DATABASE_URL; default sqlite:///./cairn.db).",
    )(fn)


class JsonInOption(click.Command):
    """A command that takes its JSON in an option (`--input`, `--payload`). JSON typed as one more
    argument (`cairn start checkout '{"id": 1}'`) is the common slip: the error says where it goes,
    with the command line as it should be, instead of click's bare "unexpected extra argument"."""

    allow_extra_args = True  # parsed, then refused below with the hint

    def __init__(self, *args: Any, json_option: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.json_option = json_option

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = list(args)
        rest = super().parse_args(ctx, args)
        if ctx.args:
            extra = ctx.args[0]
            hint = ""
            at = self._first_extra(given)
            if (
                len(ctx.args) == 1
                and at is not None
                and (extra.lstrip()[:1] in ("{", "[", '"') or _is_json_scalar(extra))
            ):
                fixed = [*given[:at], self.json_option, extra, *given[at + 1 :]]
                command = shlex.join(["cairn", ctx.info_name or self.name or "", *fixed])
                hint = f"; JSON goes in {self.json_option}: {command}"
            extras = " ".join(shlex.quote(a) for a in ctx.args)
            raise click.UsageError(f"unexpected extra argument{'s' if len(ctx.args) > 1 else ''} {extras}{hint}", ctx)
        return rest

    def _first_extra(self, given: list[str]) -> int | None:
        """Where in `given` the first argument beyond the command's own is: positionals in order,
        past each option and its value (the same text may be an option's value elsewhere)."""
        takes_value = {o for p in self.params if isinstance(p, click.Option) and not p.is_flag for o in p.opts}
        wanted = sum(1 for p in self.params if isinstance(p, click.Argument))
        i = positional = 0
        while i < len(given):
            token = given[i]
            if token == "--":  # what follows is all positional: no line to suggest
                return None
            if token.startswith("-") and len(token) > 1:
                i += 2 if token in takes_value else 1
                continue
            if positional == wanted:
                return i
            positional += 1
            i += 1
        return None


def _is_json_scalar(text: str) -> bool:
    try:
        return not isinstance(json.loads(text), str)
    except ValueError:
        return False


def json_flag(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(fn)


def wait_option(help: str) -> Callable[[F], F]:
    return click.option("--wait", type=Seconds(min=0, forever=True), default=None, metavar="SECONDS", help=help)


def echo_json(value: Any) -> None:
    click.echo(render.printable_json(value, indent=2))


def import_modules(modules: Sequence[str]) -> None:
    """Import user modules (the current directory first on sys.path); a clear error names the one that failed."""
    cwd = os.getcwd()
    for name in findable_names(modules):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                raise no_such_module(name) from None
            raise click.ClickException(f"cannot import module {name!r}: {exc}{raised_at(exc, cwd)}") from None
        except Exception as exc:  # the user's code failed: say what and where, in one line
            raise click.ClickException(
                f"cannot import module {name!r}: {type(exc).__name__}: {exc}{raised_at(exc, cwd)} "
                f"(`python -c 'import {name}'` shows the whole traceback)"
            ) from None


def findable_names(modules: Sequence[str]) -> list[str]:
    """The module names MODULE arguments give (a path or a name), with the current directory first
    on sys.path, where a user's `cairn worker shop` expects its `shop.py` to be found."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return [module_name(spec) for spec in modules]


def no_such_module(name: str) -> click.ClickException:
    return click.ClickException(f"cannot import module {name!r}: no such module (looked in {os.getcwd()} and sys.path)")


def raised_at(exc: BaseException, project: str) -> str:
    """`, raised at FILE, line N`: the innermost frame of `exc` in the `project` folder (else outside
    importlib and this module), or "" (a SyntaxError already names its file and line)."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<") and frame.filename not in (__file__, importlib.__file__)
    ]
    own = [frame for frame in frames if frame.filename.startswith(project + os.sep)]
    where = (own or frames)[-1:]
    return f", raised at {where[0].filename}, line {where[0].lineno}" if where else ""


def check_findable(modules: Sequence[str]) -> None:
    """A clear error when the top-level package of a MODULE cannot be found; nothing is imported
    (for `cairn dev`, whose watcher would otherwise wait for ever for a module that does not exist)."""
    import importlib.util

    for name in findable_names(modules):
        try:
            found = importlib.util.find_spec(name.partition(".")[0]) is not None
        except (ImportError, ValueError):  # an empty or relative name
            found = False
        if not found:
            raise no_such_module(name)


def module_name(spec: str) -> str:
    """`pkg.mod` as is; a path such as `pkg/mod.py` becomes `pkg.mod`."""
    if spec.endswith(".py"):
        spec = spec[:-3].replace(os.sep, ".").replace("/", ".").lstrip(".")
    return spec


# --- the group --------------------------------------------------------------------------------


class _Group(click.Group):
    """Ctrl-C that no command handles itself (while the user's modules import, say) ends as it does
    inside one, `error: interrupted` and exit 130, not click's "Aborted!" and exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            fail("interrupted", 130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(cairn.__version__, prog_name="cairn")
def cli() -> None:
    """Cairn: durable workflows on SQLite or PostgreSQL."""


def main() -> None:
    """The `cairn` console script."""
    cli(prog_name="cairn")


# --- worker / dev -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerOptions:
    db: str | None
    concurrency: int
    queues: list[str] | None
    lease: float
    poll: float | None
    grace: float = DEFAULT_GRACE
    deadlock_timeout: float | None = DEFAULT_DEADLOCK_TIMEOUT


def _deadlock_timeout(ctx: click.Context, param: click.Parameter, value: str) -> float | None:
    """`--deadlock-timeout`: seconds more than 0, or `off`."""
    if value.strip().lower() in ("off", "none"):
        return None
    try:
        secs = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not seconds; give e.g. 2 or 0.5, or off") from None
    if secs == math.inf:
        return None
    if not secs > 0:
        raise click.BadParameter(f"give more than 0 seconds, or off; got {value}")
    return secs


class Seconds(click.FloatRange):
    """Seconds in a range, and a number: NaN passes every bound (`--lease nan` was taken, and failed
    every run the worker touched on PostgreSQL), and infinity is no lease, no poll, no wait."""

    def __init__(self, min: float = 0, min_open: bool = False, forever: bool = False) -> None:
        super().__init__(min=min, min_open=min_open)
        self.forever = forever

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        secs = super().convert(value, param, ctx)
        if math.isnan(secs) or (math.isinf(secs) and not self.forever):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return secs


def worker_options(concurrency: int) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        for option in reversed(
            [
                click.argument("modules", nargs=-1, required=True, metavar="MODULE..."),
                db_option,
                click.option(
                    "--concurrency",
                    type=click.IntRange(min=1),
                    default=concurrency,
                    show_default=True,
                    help="Workflow activations and action attempts run at once (each).",
                ),
                click.option(
                    "--queues", default=None, metavar="A,B", help="Comma-separated queues to serve (default: all)."
                ),
                click.option(
                    "--lease",
                    type=Seconds(min=0, min_open=True),
                    default=10.0,
                    show_default=True,
                    metavar="SECONDS",
                    help="Lease on claimed work, renewed by heartbeats.",
                ),
                click.option(
                    "--grace",
                    type=Seconds(min=0, forever=True),
                    default=DEFAULT_GRACE,
                    show_default=True,
                    metavar="SECONDS",
                    help="On SIGTERM or Ctrl-C, how long running work may finish and record its result before "
                    "the worker stops it and hands it over (a plain def action's thread, which cannot be "
                    "stopped, is waited for: it keeps its lease until it returns). A second signal stops at once.",
                ),
                click.option(
                    "--deadlock-timeout",
                    default=f"{DEFAULT_DEADLOCK_TIMEOUT:g}",
                    callback=_deadlock_timeout,
                    show_default=True,
                    metavar="SECONDS|off",
                    help="An async workflow's code running longer than this without awaiting blocks the whole "
                    "worker: it is interrupted and its run paused with WorkflowDeadlock, to retry after a fix.",
                ),
                click.option(
                    "--poll",
                    type=Seconds(min=0, min_open=True),
                    default=None,
                    metavar="SECONDS",
                    help="Safety poll interval (default: 1 on PostgreSQL, which wakes workers with NOTIFY; "
                    "0.1 on SQLite, whose watcher of other processes' commits stands aside while this "
                    "worker commits itself).",
                ),
                click.option(
                    "--log-level",
                    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
                    default="info",
                    show_default=True,
                ),
            ]
        ):
            fn = option(fn)
        return fn

    return decorate


def parse_queues(text: str | None) -> list[str] | None:
    if text is None:
        return None
    queues = [q.strip() for q in text.split(",") if q.strip()]
    if not queues:
        raise click.BadParameter("give at least one queue name", param_hint="--queues")
    return queues


@cli.command()
@worker_options(concurrency=DEFAULT_CONCURRENCY)
def worker(
    modules: tuple[str, ...],
    db: str | None,
    concurrency: int,
    queues: str | None,
    lease: float,
    grace: float,
    deadlock_timeout: float | None,
    poll: float | None,
    log_level: str,
) -> None:
    """Run a worker for the workflows and actions defined in MODULE... (SIGTERM/Ctrl-C stop it gracefully)."""
    options = WorkerOptions(db, concurrency, parse_queues(queues), lease, poll, grace, deadlock_timeout)
    serve(modules, options, log_level)


@cli.command()
@worker_options(concurrency=DEFAULT_CONCURRENCY)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8700,
    show_default=True,
    help="Port of the dashboard and HTTP API, on 127.0.0.1 (0: any free port).",
)
@click.option(
    "--reload/--no-reload",
    default=True,
    show_default=True,
    help="Restart the worker when a .py file under the current directory changes (watchfiles).",
)
@click.option(
    "--token",
    envvar="CAIRN_API_TOKEN",
    default=None,
    help="API token (env CAIRN_API_TOKEN): required on every route of the dashboard but /healthz.",
)
def dev(
    modules: tuple[str, ...],
    db: str | None,
    concurrency: int,
    queues: str | None,
    lease: float,
    grace: float,
    deadlock_timeout: float | None,
    poll: float | None,
    log_level: str,
    port: int,
    reload: bool,
    token: str | None,
) -> None:
    """Run a worker and the dashboard in one process (SQLite ./cairn.db unless --db or CAIRN_DATABASE_URL),
    restarted when your code changes."""
    from cairn.web.security import check_token

    try:
        check_token(token)  # here, not once the worker's process has been restarted for reload
    except ValueError as exc:
        fail(str(exc))
    if reload:
        check_findable(modules)
        reload_on_change(sys.argv[1:] if sys.argv[1:2] == ["dev"] else ["dev", *_dev_args(modules, db, port)], grace)
        return
    options = WorkerOptions(db, concurrency, parse_queues(queues), lease, poll, grace, deadlock_timeout)
    serve(modules, options, log_level, dashboard=port, token=token)


def _dev_args(modules: Sequence[str], db: str | None, port: int) -> list[str]:
    """The command line of `cairn dev` when it was not started as one (called from Python)."""
    return [*modules, *(["--db", db] if db else []), "--port", str(port)]


def reload_on_change(args: list[str], grace: float) -> None:
    """Run `cairn <args> --no-reload` in a child process and restart it whenever a Python file
    under the current directory changes (as uvicorn --reload does); Ctrl-C or SIGTERM stop it."""
    from cairn.cli import reload

    def changed(names: list[str]) -> None:
        click.echo(f"cairn dev: {', '.join(names[:5])} changed; restarting the worker", err=True)

    def ended(code: int) -> None:  # it printed why (a taken port, a traceback); this says what now
        click.echo(
            f"cairn dev: the worker exited (code {code}); it restarts when a .py file changes (Ctrl-C to quit)",
            err=True,
        )

    click.echo(f"cairn dev: watching {os.getcwd()} for changes to .py files", err=True)
    reload.reload_on_change([sys.executable, "-m", "cairn", *args, "--no-reload"], grace, changed, ended)


def serve(
    modules: Sequence[str],
    options: WorkerOptions,
    log_level: str,
    dashboard: int | None = None,
    token: str | None = None,
) -> None:
    logging.basicConfig(
        level=log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import_modules(modules)
    if not registry.workflows() and not registry.actions():
        raise click.ClickException(
            f"no workflows or actions are registered after importing {', '.join(modules)}; "
            "define them with @cairn.workflow and @cairn.action in those modules"
        )
    from cairn.worker.actions import calls_on_threads

    code = run(run_worker(options, dashboard, token))
    abandoned = calls_on_threads()
    if abandoned:
        # Plain `def` code still running on a thread (an attempt abandoned at its timeout, or by a
        # second signal): nothing can stop it, and the interpreter would wait for it at exit.
        click.echo(f"cairn worker: exiting with {abandoned} abandoned action call(s) still running", err=True)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        sys.exit(code)


async def run_worker(options: WorkerOptions, dashboard: int | None = None, token: str | None = None) -> int:
    """Run a worker until stopped; with `dashboard` (a port), the web app beside it on 127.0.0.1
    (with `token`, needed on every route but /healthz)."""
    # The client the user's modules got from `cairn.connect(url, retention=...)` for this database,
    # if they made one: its settings (retention) are the worker's, as for a worker they embed.
    client = cairn.connect(options.db)
    try:
        if dashboard is not None:
            return await _with_dashboard(client, dashboard, token, lambda: run_worker_on(client, options))
        return await run_worker_on(client, options)
    finally:
        await client.close()


async def _with_dashboard(
    client: cairn.Client, port: int, token: str | None, body: Callable[[], Awaitable[int]]
) -> int:
    from cairn.web import create_app, serve

    await client.store.open()
    srv = serve.server(create_app(client, token=token), "127.0.0.1", port)
    task, url = await serve.start(srv)
    note = "" if token is None else " (token required)"
    click.echo(f"cairn dev: dashboard and HTTP API at {url}{note} (API docs at {url}api/docs)")
    try:
        return await body()
    finally:
        await serve.stop(srv, task)


async def run_worker_on(client: cairn.Client, options: WorkerOptions) -> int:
    w = cairn.Worker(
        client,
        concurrency=options.concurrency,
        queues=options.queues,
        lease=options.lease,
        poll_interval=options.poll,
        grace=options.grace,
        deadlock_timeout=options.deadlock_timeout,
    )
    await client.store.open()  # fail on an unreachable database before announcing anything
    announcement = (
        f"cairn worker {w.id} on {redact_url(client.url)}: {len(registry.workflows())} workflows, "
        f"{len(registry.actions())} actions, queues {','.join(options.queues or ['*'])}, "
        f"concurrency {options.concurrency}"
    )
    return await supervise(w, announcement)


AT_ONCE = 3.0
"""Seconds a stop at once (a second signal) may take before the process exits regardless."""


def _exit_now() -> None:
    click.echo("cairn worker: stopped at once (it did not stop by itself within 3s)", err=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


async def supervise(w: cairn.Worker, announcement: str) -> int:
    """Run the worker with SIGTERM/SIGINT asking for a graceful stop (a second one cancels at once)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    requested = at_once = False

    def on_signal() -> None:
        nonlocal requested, at_once
        if requested:
            if not at_once:
                at_once = True
                click.echo("cairn worker: stopping now (work still running is abandoned)", err=True)
                w.request_stop(now=True)
                # At once, whatever the stop waits for: with the database gone, its last writes
                # retried for a minute, and Ctrl-C twice did not end `cairn dev`.
                last_word = threading.Timer(AT_ONCE, _exit_now)
                last_word.daemon = True
                last_word.start()
            return
        requested = True
        click.echo(
            f"cairn worker: stopping (finishing work in flight for up to {w.grace:g}s; signal again to stop at once)",
            err=True,
        )
        w.request_stop()

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        await w.start()  # registers this worker's workflows: only now can `cairn start NAME` find them
        click.echo(announcement, err=True)
        await w.serve_until_stopped()
    except asyncio.CancelledError:
        return 130
    except DatabaseUnusable as exc:
        click.echo(f"error: the worker stopped: {exc}", err=True)
        return 1
    except Exception as exc:
        click.echo(f"error: the worker stopped after an internal failure: {type(exc).__name__}: {exc}", err=True)
        return 1
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    if at_once:
        click.echo("cairn worker: stopped at once", err=True)
        return 130
    click.echo("cairn worker: stopped", err=True)
    return 0


# --- start ------------------------------------------------------------------------------------


@cli.command(cls=JsonInOption, json_option="--input")
@click.argument("name")
@click.option(
    "--input",
    "input_text",
    default="[]",
    show_default=True,
    metavar="JSON|@FILE|-",
    help="A JSON array (positional arguments) or object (keyword arguments); @FILE reads it from FILE, "
    "- from standard input (for input too large for a command line).",
)
@click.option("--id", "run_id", default=None, help="Run id; starting an existing id returns that run.")
@click.option("--queue", default=None, help="Queue (default: the workflow's).")
@click.option("--key", default=None, help="The run's key in its queue (what per_key counts).")
@click.option("--priority", type=int, default=None, help="Lower numbers start first (a queue with priority=True).")
@click.option("--dedup-key", default=None, help="While a run of the queue with this key is unfinished, return it.")
@wait_option("Wait up to SECONDS for the result and print it as JSON.")
@db_option
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE first so NAME is validated against its code (repeatable).",
)
def start(
    name: str,
    input_text: str,
    run_id: str | None,
    queue: str | None,
    key: str | None,
    priority: int | None,
    dedup_key: str | None,
    wait: float | None,
    db: str | None,
    imports: tuple[str, ...],
) -> None:
    """Start a run of workflow NAME and print its id and status."""
    args, kwargs = parse_input(input_text)
    import_modules(imports)
    known_here = registry.workflow(name) is not None

    async def body(client: cairn.Client) -> int:
        from cairn.client.client import QueuePlace

        return await start_run(client, name, args, kwargs, run_id, queue, wait, QueuePlace(key, priority, dedup_key))

    async def main() -> int:
        path = None if known_here else missing_sqlite_file(db)
        if path is not None:  # no worker has registered anything there: fail before creating the file
            raise Failure(
                f"no workflow named {name!r}: there is no database at {path} yet, so no worker has registered "
                "one; start a worker that imports it (`cairn worker MODULE` creates the database) or pass "
                "--import MODULE. Nothing was created"
            )
        return await with_client(db, body, create=True)

    code = run(main(), expected=(*EXPECTED, TypeError))
    if code:
        sys.exit(code)


def parse_input(text: str) -> tuple[list[Any], dict[str, Any]]:
    value = parse_json(read_json_text(text, "--input"), "--input", arguments=True)
    if isinstance(value, list):
        return value, {}
    if isinstance(value, dict):
        return [], value
    raise click.BadParameter(
        f"must be a JSON array (positional arguments) or object (keyword arguments), got {json.dumps(value)[:80]}",
        param_hint="--input",
    )


async def start_run(
    client: cairn.Client,
    name: str,
    args: list[Any],
    kwargs: dict[str, Any],
    run_id: str | None,
    queue: str | None,
    wait: float | None,
    queued: QueuePlace | None = None,
) -> int:
    # The input goes apart from the start's own options: a workflow may well take an `id`, a
    # `queue` or a `key`, which `client.start(name, **kwargs)` would take for its own.
    handle, _created = await client._start(name, tuple(args), kwargs, run_id, queue, queued)
    row = await handle.describe()
    click.echo(f"run {handle.id}: {row.status.value}")
    unserved = await client.unserved([handle.id])
    if handle.id in unserved:  # it waits, and nothing says so unless we do
        click.echo(f"warning: {unserved[handle.id]}", err=True)
    if not handle.created:
        differs = " with other input" if handle.input_differs else ""
        click.echo(f"note: run {handle.id} existed already (started{differs} earlier); nothing was started", err=True)
    if wait is None:
        return 0
    return await report_outcome(handle, wait)


async def report_outcome(handle: cairn.RunHandle, wait: float | None, as_json: bool = False) -> int:
    """Wait up to `wait` seconds (None: not at all) for the run to finish, with a spinner on a
    terminal, or until it is stuck paused on an error (it would not finish before a fix); print its
    result (exit 0), or its error or that it is not finished (exit 1)."""
    if wait:
        spinner = render.console(stderr=True).status(f"waiting for run {handle.id} (up to {wait:g}s)")
        with spinner:
            row = await handle._settled(wait)
    else:
        row = await handle.describe()
    if as_json:
        echo_json({"id": row.id, "status": row.status.value, "result": loads(row.result), "error": loads(row.error)})
        return 0 if row.status == RunStatus.COMPLETED else 1
    if row.status == RunStatus.COMPLETED:
        click.echo(render.printable_json(loads(row.result)))
        return 0
    if not row.status.is_terminal:
        # A run stuck on an error ended the wait early: not "within" its seconds, but stuck.
        within = f"within {wait:g}s " if wait and not row.stuck else ""
        click.echo(f"error: run {handle.id} did not finish {within}(status: {row.status.value})", err=True)
        error = loads(row.error)
        if row.status == RunStatus.PAUSED and error is not None:  # paused on an error: say which, and what to do
            click.echo(f"it is paused on {render.format_error(error)}; after a fix: cairn retry {handle.id}", err=True)
        return 1
    error = loads(row.error)
    detail = render.format_error(error) if error is not None else "the run was cancelled"
    click.echo(f"run {handle.id} {row.status.value}: {detail}", err=True)
    return 1


@cli.command()
@click.argument("run_id", metavar="RUN")
@wait_option("Wait up to SECONDS for the run to finish (default: answer at once).")
@db_option
@json_flag
def result(run_id: str, wait: float | None, db: str | None, as_json: bool) -> None:
    """Print RUN's result as JSON (exit 0), or its error or status when it has none (exit 1)."""

    async def body(client: cairn.Client) -> int:
        handle = client.get(run_id)
        try:
            await handle.describe()
        except cairn.RunNotFound:
            raise Failure(f"no run with id {run_id!r} in {redact_url(client.url)}") from None
        return await report_outcome(handle, wait, as_json)

    code = run(with_client(db, body))
    if code:
        sys.exit(code)


# --- runs / show / workers --------------------------------------------------------------------


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> When | None:
    """`--since`/`--until`: parsed before anything is opened (a bad value: exit 2, nothing done)."""
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _id_prefix(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    from cairn.names import check_name

    try:
        return check_name(value, "a run id prefix")
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.option("--status", type=click.Choice([s.value for s in RunStatus], case_sensitive=False), default=None)
@click.option("--workflow", default=None, help="Only runs of this workflow (its id, or an unambiguous short name).")
@click.option(
    "--id-prefix",
    "id_prefix",
    default=None,
    metavar="PREFIX",
    callback=_id_prefix,
    help="Only runs whose id starts so.",
)
@click.option(
    "--since", default=None, metavar="WHEN", callback=_when, help=f"Only runs created at or after WHEN: {TIME_FORMS}."
)
@click.option(
    "--until", default=None, metavar="WHEN", callback=_when, help="Only runs created before WHEN (as --since)."
)
@click.option("--oldest-first", "oldest_first", is_flag=True, help="List the oldest runs first (default: newest).")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="Runs listed at most; when there are more, how to list the next ones is printed (on stderr).",
)
@click.option(
    "--cursor",
    default=None,
    metavar="CURSOR",
    help="List the runs after a previous listing's last: the cursor it printed (give the same filters).",
)
@click.option("--counts", is_flag=True, help="Also print how many runs there are in each status (of --workflow).")
@db_option
@json_flag
@click.option(
    "--json-page",
    "as_page",
    is_flag=True,
    help='Print {"runs": [...], "next_cursor": ..., "counts": ...} (as GET /api/runs pages) instead of a table.',
)
@click.pass_context
def runs(
    ctx: click.Context,
    status: str | None,
    workflow: str | None,
    id_prefix: str | None,
    since: When | None,
    until: When | None,
    oldest_first: bool,
    limit: int,
    cursor: str | None,
    counts: bool,
    db: str | None,
    as_json: bool,
    as_page: bool,
) -> None:
    """List runs, newest first, a page at a time (--limit, then --cursor for the next)."""
    if as_json and as_page:
        raise click.UsageError("give --json (a list of runs) or --json-page (a page object), not both")
    if counts and as_json:
        raise click.UsageError("--json prints a list of runs only: give --json-page for the runs and their counts")
    sort = "created_at" if oldest_first else "-created_at"
    if cursor is not None:  # a cursor mistyped, or of the other order: said before anything is opened
        from cairn.client.client import _decode_cursor

        try:
            _decode_cursor(cursor, sort)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="'--cursor'") from None
    if since is not None and until is not None and (since.at is None) == (until.at is None):
        _check_window(since.resolve(0.0), until.resolve(0.0), since, until)

    async def body(client: cairn.Client) -> None:
        # The database's clock: what a window given as a duration counts back from, and what the
        # table times a running run by (as `cairn show` and the dashboard do; this host's may be off).
        table = not (as_json or as_page)
        now = await client.now() if table or any(w is not None and w.at is None for w in (since, until)) else 0.0
        start = None if since is None else since.resolve(now)
        end = None if until is None else until.resolve(now)
        if start is not None and end is not None and since is not None and until is not None:
            _check_window(start, end, since, until)
        query: dict[str, Any] = {
            "status": status,
            "workflow": workflow,
            "id_prefix": id_prefix,
            "since": start,
            "until": end,
            "sort": sort,
        }
        rows, next_cursor = await runs_upto(client, query, limit, cursor)
        blocked = await client.unserved([r.id for r in rows if not r.status.is_terminal])
        # Counted of the workflow the listing resolved (`Checkout` for `billing.Checkout`, as it lists).
        tally = await client.count_runs(workflow, id_prefix=id_prefix, since=start, until=end) if counts else None
        listed = [{**render.run_json(r), "blocked": blocked.get(r.id)} for r in rows]
        if as_page:
            echo_json({"runs": listed, "next_cursor": next_cursor, "counts": tally})
        elif as_json:
            echo_json(listed)
        else:
            out = render.console()
            if tally is not None:
                out.print(render.counts_line(tally))
            if not rows:
                click.echo("no runs", err=True)
            else:
                out.print(render.runs_table(rows, now, blocked, out.width))
                if blocked:
                    out.print(render.blocked_note(blocked), end="")
        if next_cursor is not None:
            shown = {"status": status, "workflow": workflow, "id_prefix": id_prefix}
            shown.update(since=_as_given(since, now), until=_as_given(until, now))
            db_args, note = _db_hint(ctx, db)
            args = next_page_args(shown, oldest_first, limit, as_json, as_page, db_args)
            command = shlex.join(["cairn", "runs", *args, "--cursor", next_cursor])
            click.echo(f"more runs: list the next ones with: {command}{note}", err=True)

    run(with_client(db, body))


def _as_given(when: When | None, now: float) -> str | None:
    """A time as the next page's command gives it: as typed, but a duration as the time it meant."""
    if when is None:
        return None
    return when.text if when.at is not None else iso(when.resolve(now))


def _check_window(start: float, end: float, since: When, until: When) -> None:
    if start >= end:
        raise click.UsageError(f"--since {since.text} is not before --until {until.text}: no run could match")


async def runs_upto(
    client: cairn.Client, query: dict[str, Any], limit: int, cursor: str | None
) -> tuple[list[RunRow], str | None]:
    """Up to `limit` runs from `cursor` on, read a page (of at most 500) at a time by keyset, and the
    cursor after the last of them (None: there are no more)."""
    from cairn.client.client import MAX_PAGE

    rows: list[RunRow] = []
    while True:
        page = await client.runs_page(**query, limit=min(MAX_PAGE, limit - len(rows)), cursor=cursor)
        rows += page.runs
        cursor = page.next_cursor
        if cursor is None or len(rows) >= limit:
            return rows, cursor


def next_page_args(
    shown: dict[str, Any], oldest_first: bool, limit: int, as_json: bool, as_page: bool, db_args: list[str]
) -> list[str]:
    """The options of the command listing the next page (but its cursor): the same filters (in
    `shown`, a duration already resolved to the time it meant: the next page's window must not move)."""
    args: list[str] = []
    for name, value in shown.items():
        if value is not None:
            args += [f"--{name.replace('_', '-')}", str(value)]
    args += ["--oldest-first"] if oldest_first else []
    args += ["--limit", str(limit)] if limit != 50 else []
    args += ["--json"] if as_json else ["--json-page"] if as_page else []
    return [*args, *db_args]


def _db_hint(ctx: click.Context, db: str | None) -> tuple[list[str], str]:
    """`--db URL` for the next page's command when the URL was given on the command line and holds
    no password (one with a password is never printed: the hint says to add it)."""
    if db is None or ctx.get_parameter_source("db") != click.core.ParameterSource.COMMANDLINE:
        return [], ""
    if redact_url(db) != db:
        return [], " (with your --db)"
    return ["--db", db], ""


SHOWN_STEPS = 100
"""Steps `cairn show` lists by default: a run's latest (a loop of 10,000 steps took 6 s to draw)."""
SHOWN_EVENTS = 300
"""Events `cairn show --events` lists: a run's latest (see `_print_last_events`)."""
ALL_STEPS = 0


def _step_count(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """`--steps N|all`: a count of at least 1, ALL_STEPS for all, None when not given."""
    if value is None:
        return None
    if value.strip().lower() == "all":
        return ALL_STEPS
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise click.BadParameter(f"give a number of steps (at least 1) or 'all', not {value!r}")
    return count


async def _print_last_events(out: Console, handle: cairn.RunHandle, created_at: float) -> None:
    """The run's last SHOWN_EVENTS events, as for steps: a run of 50,000 steps has 150,000
    events, which took 90 s and 645 MB to draw. The JSON has every one (`--json --events`)."""
    events = await handle.events(last=SHOWN_EVENTS + 1)
    if len(events) > SHOWN_EVENTS:
        events = events[1:]
        out.print(
            f"the run's earlier events are not shown (its last {SHOWN_EVENTS} are): --json --events gives every one",
            style="dim",
            highlight=False,
        )
    out.print(render.events_table(events, created_at))


async def _shown_steps(handle: cairn.RunHandle, count: int | None, as_json: bool) -> tuple[list[StepInfo], bool]:
    """The steps `cairn show` lists (`--steps`), and whether it left earlier ones out."""
    wanted = count if count is not None else None if as_json else SHOWN_STEPS
    if wanted is None or wanted == ALL_STEPS:
        return await handle.steps(), False
    steps = await handle.steps(last=wanted + 1)  # one more than shown: were earlier ones left out?
    return (steps[1:], True) if len(steps) > wanted else (steps, False)


@cli.command()
@click.argument("run_id", metavar="RUN")
@db_option
@json_flag
@click.option("--traceback", "show_traceback", is_flag=True, help="Include the recorded traceback of a failure.")
@click.option("--properties", "show_properties", is_flag=True, help="Also show the properties after each step.")
@click.option(
    "--events",
    "show_events",
    is_flag=True,
    help=f"Also show the run's state changes (its last {SHOWN_EVENTS}; all with --json).",
)
@click.option("--memory", "show_memory", is_flag=True, help="Also show the run's memory (cairn.memory), key by key.")
@click.option(
    "--steps",
    "step_count",
    callback=_step_count,
    metavar="N|all",
    help=f"Show the run's last N steps, or all (default: the last {SHOWN_STEPS} in the table, all with --json).",
)
def show(
    run_id: str,
    db: str | None,
    as_json: bool,
    show_traceback: bool,
    show_properties: bool,
    show_events: bool,
    show_memory: bool,
    step_count: int | None,
) -> None:
    """Show one run: its status, input, outcome, and its steps (a long run's latest ones)."""

    async def body(client: cairn.Client) -> None:
        handle = client.get(run_id)
        try:
            row = await handle.describe()
        except cairn.RunNotFound:
            raise Failure(f"no run with id {run_id!r} in {redact_url(client.url)}") from None
        steps, earlier = await _shown_steps(handle, step_count, as_json)
        blocked = await handle.diagnose()
        used = {s.name for s in steps}
        actions = {a.id: a for a in await client.list_actions() if a.id in used}
        if as_json:
            from cairn.worker.replay import export_journal

            run_json = {**render.run_json(row), "blocked": blocked}
            described = {a.id: {"name": a.name, "description": a.description} for a in actions.values()}
            journal = export_journal(row, await client.store.list_steps(row.id))  # for cairn.testing.replay
            step_list = [render.step_json(s) for s in steps]
            shown: dict[str, Any] = {"run": run_json, "steps": step_list, "actions": described, "journal": journal}
            # What the flags add to the table, the JSON has too (as the HTTP API's routes give it).
            if show_properties:
                shown["properties_history"] = await handle.properties(history=True)
            if show_events:
                shown["events"] = [render.event_json(e) for e in await handle.events()]
            if show_memory:
                shown["memory"] = await handle.memory()
            echo_json(shown)
            return
        out = render.console()
        now = await client.now()
        out.print(render.run_header(row, now, traceback=show_traceback, blocked=blocked))
        out.print()
        if earlier:
            out.print(
                f"steps before step {steps[0].seq} are not shown (the run's last {len(steps)} are): "
                "--steps all shows every step, --steps N the last N",
                style="dim",
                highlight=False,
            )
        if steps:
            labels = {a.id: a.name for a in actions.values() if a.name and a.name != render.short_name(a.id)}
            out.print(render.steps_table(steps, out.width, labels, now))
            drawn = render.timeline(steps, now, out.width)
            if drawn is not None:
                out.print()
                out.print(drawn)
        else:
            out.print("no steps")
        logs = render.step_logs(steps)
        if logs is not None:
            out.print()
            out.print(logs)
        if show_properties:
            out.print()
            out.print(render.properties_table(await handle.properties(history=True)))
        if show_events:
            out.print()
            await _print_last_events(out, handle, row.created_at)
        if show_memory:
            out.print()
            out.print(render.memory_table(await handle.memory()))

    run(with_client(db, body))


@cli.command()
@db_option
@json_flag
def schedules(db: str | None, as_json: bool) -> None:
    """List schedules: expression, next tick, last run and its status, paused, and any declared in
    code that no live worker declares any more (they do not fire)."""

    async def body(client: cairn.Client) -> None:
        found = await client.list_schedules()
        live = {sid for w in await client.list_workers() for sid in w.schedules}
        rows = []
        for row in found:
            spec = row.spec
            orphan = row.source == "code" and spec.id not in live
            rows.append(
                {
                    "id": spec.id,
                    "workflow": spec.workflow,
                    "expression": spec.expression(),
                    "tz": spec.tz,
                    "next_fire_at": row.next_fire_at,
                    "last_run_id": row.last_run_id,
                    "last_status": row.last_status,
                    "paused": row.paused,
                    "source": row.source,
                    "note": "declared by no live worker: not firing" if orphan else "",
                }
            )
        if as_json:
            echo_json(rows)
        elif not rows:
            click.echo("no schedules", err=True)
        else:
            render.console().print(render.schedules_table(rows))

    run(with_client(db, body))


@cli.command()
@db_option
@json_flag
def queues(db: str | None, as_json: bool) -> None:
    """List queues: their limits, runs and action attempts waiting and in flight, and when the rate
    lets the next start go."""

    async def body(client: cairn.Client) -> None:
        declared = await client.list_queues()
        counts = await client.run_counts("queue")
        rows: list[dict[str, Any]] = [
            {
                "name": q.spec.name,
                "concurrency": q.spec.concurrency,
                "per_worker": q.spec.per_worker,
                "per_key": q.spec.per_key,
                "rate_limit": None if q.spec.rate_n is None else f"{q.spec.rate_n}/{q.spec.rate_period:g}s",
                "priority": q.spec.priority,
                "runs_waiting": q.runs_waiting,
                "runs_in_flight": q.runs_in_flight,
                "attempts_waiting": q.attempts_waiting,
                "attempts_in_flight": q.attempts_in_flight,
                "rate_next_at": q.rate_next_at,
                "rate_starts": q.rate_starts,
                "declared_by": q.declared_by,
                "counts": counts.get(q.spec.name, {}),
            }
            for q in declared
        ]
        # As GET /api/queues and the dashboard: queues that runs use, declared by no cairn.Queue
        # (`default` among them), are listed too, with no limits.
        names = {q.spec.name for q in declared}
        rows += [render.undeclared_queue(name, counts[name]) for name in sorted(counts) if name not in names]
        rows.sort(key=lambda r: str(r["name"]))
        if as_json:
            echo_json(rows)
        elif not rows:
            click.echo("no queues: no run uses one, and none is declared (a worker upserts its cairn.Queue)", err=True)
        else:
            render.console().print(render.queues_table(rows))

    run(with_client(db, body))


@cli.group()
def schedule() -> None:
    """Pause, resume, trigger or delete a schedule."""


def schedule_command(verb: str, doc: str) -> None:
    @schedule.command(name=verb, help=doc)
    @click.argument("schedule_id", metavar="ID")
    @db_option
    def command(schedule_id: str, db: str | None) -> None:
        async def body(client: cairn.Client) -> None:
            if verb in ("pause", "resume"):  # as for a run: a pause of a paused one changes nothing, and says so
                row = next((r for r in await client.list_schedules() if r.id == schedule_id), None)
                if row is not None and row.paused == (verb == "pause"):
                    click.echo(
                        f"schedule {schedule_id}: {'already paused' if row.paused else 'not paused'}; nothing changed"
                    )
                    return
            done = await getattr(client, f"{verb}_schedule")(schedule_id)
            extra = f": run {done.id}" if verb == "trigger" else ""
            click.echo(f"schedule {schedule_id}: {verb}{'d' if verb.endswith('e') else 'ed'}{extra}")

        run(with_client(db, body))


schedule_command("pause", "Pause schedule ID: no tick fires until it is resumed.")
schedule_command("resume", "Resume schedule ID from its next tick.")
schedule_command("trigger", "Start a run of schedule ID now.")
schedule_command("delete", "Delete schedule ID (one declared in code returns when a worker declaring it starts).")


@cli.command()
@db_option
@json_flag
def workers(db: str | None, as_json: bool) -> None:
    """List the workers registered in the database and how recently they heartbeated."""

    async def body(client: cairn.Client) -> None:
        found = await client.store.list_workers()
        now = await client.store.now()
        if as_json:
            echo_json([render.worker_json(w, now) for w in found])
            return
        blocked = await client.unserved()
        out = render.console()
        if not found:
            click.echo("no workers", err=True)
        else:
            out.print(render.workers_table(found, now, out.width))
        if blocked:
            out.print(f"{len(blocked)} runs with work due that no live worker can do:")
            out.print(render.blocked_note(blocked), end="")

    run(with_client(db, body))


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8700, show_default=True, help="Port (0: any free).")
@click.option(
    "--token",
    envvar="CAIRN_API_TOKEN",
    default=None,
    help="API token (env CAIRN_API_TOKEN): required on every route but /healthz; needed to bind beyond 127.0.0.1.",
)
def dashboard(db: str | None, host: str, port: int, token: str | None) -> None:
    """Serve the web dashboard and the HTTP API (uvicorn) until Ctrl-C."""
    from cairn.web import serve
    from cairn.web.security import check_token

    try:
        check_token(token)  # before the database is opened (created) for nothing
        serve.check_bind(host, token)
    except ValueError as exc:
        fail(str(exc))
    run(with_client(db, lambda client: serve_dashboard(client, host, port, token), create=True))


async def serve_dashboard(client: cairn.Client, host: str, port: int, token: str | None) -> None:
    from cairn.web import create_app, serve

    await client.store.open()  # an unreachable database fails here, not on the first page
    srv = serve.server(create_app(client, token=token), host, port)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal() -> None:
        if stopping.is_set():
            srv.force_exit = True  # a second Ctrl-C: no more waiting for requests in flight
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        task, url = await serve.start(srv)
        note = "" if token is None else " (token required)"
        click.echo(f"cairn dashboard on {redact_url(client.url)}: {url}{note}")
        waiter = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        await serve.stop(srv, task)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


# --- control ----------------------------------------------------------------------------------


def control_command(verb: str, past: str, doc: str) -> None:
    @cli.command(name=verb, help=doc)
    @click.argument("run_id", metavar="RUN")
    @db_option
    def command(run_id: str, db: str | None) -> None:
        async def body(client: cairn.Client) -> None:
            handle = client.get(run_id)
            before = await handle.status()
            status = await getattr(handle, verb)()
            rule = RULES.get("cancel" if verb == "kill" else verb)
            if rule is not None and before in rule.noop:  # as asked already: say that nothing changed
                click.echo(f"run {run_id}: {status} (it was {before.value}: nothing was {past})")
            else:
                click.echo(f"run {run_id}: {status}")

        run(with_client(db, body))


control_command("pause", "paused", "Pause RUN: it stops at its next step boundary until resumed.")
control_command("resume", "resumed", "Resume a paused RUN.")
control_command("cancel", "cancelled", "Cancel RUN and its children: pending steps are cancelled.")
control_command("kill", "cancelled", "Alias of cancel.")
control_command("retry", "retried", "Retry a failed RUN (or one paused on an error) from the failed step.")


@cli.command()
@click.argument("run_id", metavar="RUN")
@click.option("--from-step", "from_step", type=int, required=True, help="Reuse the journal up to this step.")
@click.option("--id", "new_id", default=None, help="Id of the new run (default: RUN:fork:<random>).")
@db_option
def fork(run_id: str, from_step: int, new_id: str | None, db: str | None) -> None:
    """Start a new run that reuses RUN's journal up to a step, then runs on its own."""

    async def body(client: cairn.Client) -> None:
        forked = await client.get(run_id).fork(from_step, id=new_id)
        click.echo(f"run {forked.id}: forked from {run_id} at step {from_step}")

    run(with_client(db, body))


@cli.command()
@click.option("--older-than", "older_than", required=True, metavar="AGE", help="e.g. 7d, 12h, 90m, 3600.")
@click.option(
    "--status",
    type=click.Choice(["completed", "failed", "cancelled"]),
    default=None,
    help="Only runs that ended so (default: every finished run).",
)
@db_option
def prune(older_than: str, status: str | None, db: str | None) -> None:
    """Delete finished runs older than AGE, with all they recorded (parents of live runs are kept)."""
    from cairn.policies import parse_duration

    try:
        age = parse_duration(older_than, "--older-than")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None

    async def body(client: cairn.Client) -> None:
        removed = await client.prune(age, status)
        click.echo(f"removed {removed} finished run{'s' if removed != 1 else ''} older than {older_than}")

    run(with_client(db, body))


@cli.command(name="signal", cls=JsonInOption, json_option="--payload")
@click.argument("run_id", metavar="RUN")
@click.argument("name")
@click.option(
    "--payload",
    default="null",
    show_default=True,
    metavar="JSON|@FILE|-",
    help="The signal's payload as JSON; @FILE reads it from FILE, - from standard input.",
)
@db_option
def signal_command(run_id: str, name: str, payload: str, db: str | None) -> None:
    """Send signal NAME with a JSON payload to RUN (refused once RUN has finished)."""
    value = parse_json(read_json_text(payload, "--payload"), "--payload")

    async def body(client: cairn.Client) -> None:
        await client.get(run_id).signal(name, value)
        click.echo(f"run {run_id}: signal {name!r} sent")

    run(with_client(db, body), expected=(*EXPECTED, TypeError))


def _csv(value: str, allowed: tuple[str, ...], option: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise click.BadParameter(f"unknown {', '.join(unknown)}; choose from {', '.join(allowed)}", param_hint=option)
    return items


@cli.command()
@click.option("--backend", "backends", default="sqlite,postgres", show_default=True, help="sqlite, postgres or both.")
@click.option(
    "--pg",
    "server",
    default="postgresql://postgres@127.0.0.1:5432/postgres",
    show_default=True,
    envvar="CAIRN_BENCH_POSTGRES_URL",
    help="A PostgreSQL server (any database) to create bench databases on.",
)
@click.option(
    "--scenario",
    "chosen",
    default="sequential,throughput,naive,start,reads,fanout,pickup,db_cost,backlog",
    show_default=True,
    help="Comma-separated: sequential, throughput, naive, start, reads, fanout, pickup, db_cost, backlog, history, "
    "signal_loop, memory.",
)
@click.option("--workers", default="1,2,4", show_default=True, help="Worker processes for throughput.")
@click.option("--compare", default="", help="Comma-separated: dbos, raw (the raw-SQL reference).")
@click.option("--runs", type=click.IntRange(20), default=200, show_default=True, help="Sequential runs.")
@click.option("--workflows", type=click.IntRange(10), default=1000, show_default=True, help="Throughput runs.")
@click.option("--sleepers", type=click.IntRange(100), default=100_000, show_default=True, help="Memory scenario.")
@click.option(
    "--repeat",
    type=click.IntRange(1, 9),
    default=1,
    show_default=True,
    help="Run each scenario this many times (Cairn and competitors in turn) and keep each one's median run.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON (one list) instead of a table.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Also write the JSON results here.")
def bench(
    backends: str,
    server: str,
    chosen: str,
    workers: str,
    compare: str,
    runs: int,
    workflows: int,
    sleepers: int,
    repeat: int,
    as_json: bool,
    out: str | None,
) -> None:
    """Measure Cairn (optionally beside DBOS and raw SQL) on SQLite and PostgreSQL; see docs/benchmarks.md."""
    import importlib.util

    from cairn.bench.run import SCENARIOS, Bench, summary_table

    if "dbos" in compare.split(",") and importlib.util.find_spec("dbos") is None:
        fail("--compare dbos needs DBOS, which is not installed: pip install 'cairn[bench]' (DBOS 3.4 and matplotlib)")

    chosen_backends = _csv(backends, ("sqlite", "postgres"), "--backend")
    if "postgres" in chosen_backends:
        _reachable_for_bench(server)
    bench_run = Bench(
        backends=chosen_backends,
        server=server,
        scenarios_=_csv(chosen, SCENARIOS, "--scenario"),
        workers=[int(w) for w in _csv(workers, tuple(str(i) for i in range(1, 33)), "--workers")],
        compare=_csv(compare, ("dbos", "raw"), "--compare") if compare else [],
        runs=runs,
        workflows=workflows,
        sleepers=sleepers,
        console=render.console(stderr=True),
        repeat=repeat,
    )
    if out:
        target = Path(out)

        def save(results: list[dict[str, Any]]) -> None:
            target.write_text(json.dumps(results, indent=2) + "\n")

        bench_run.on_result = save
    results = bench_run.run()
    if as_json:
        echo_json(results)
    else:
        render.console().print(summary_table(results))


def _reachable_for_bench(server: str) -> None:
    """Exit 1 with one line when the server the bench creates its databases on cannot be reached
    (it printed a traceback from deep in a scenario, and exited 0)."""
    import psycopg

    try:
        with psycopg.connect(server, connect_timeout=10):
            pass
    except psycopg.Error as exc:
        said = redact_url(" ".join(str(exc).split()))
        fail(
            f"cannot connect to PostgreSQL at {redact_url(server)} to create the bench's databases ({said}); "
            "give a server with --pg, or measure SQLite alone with --backend sqlite",
            1,
        )


import cairn.cli.replay  # noqa: E402  (`cairn replay` joins the group defined above)

if __name__ == "__main__":
    main()
