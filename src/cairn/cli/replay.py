"""`cairn replay MODULE... --db URL`: replay recorded runs against the code about to be deployed.

It reads runs and their journals through the client's store (reads only), rebuilds each run on the
code imported from MODULE... as a worker would, executing no action, and prints every run whose
journal that code does not replay: the step, the recorded call and the new call. Exit 0 when none
diverge, 1 otherwise, so that it can gate a deploy in CI.
"""

from __future__ import annotations

from typing import Any

import click

import cairn
from cairn.cli.main import cli, db_option, echo_json, fail, import_modules, json_flag, run, with_client
from cairn.records import RunRow, StepRow
from cairn.store.protocol import RunFilters
from cairn.types import RunStatus

PAGE = 500
"""Runs read at a time: journals are replayed page by page, so any number of runs fits in memory."""


@cli.command()
@click.argument("modules", nargs=-1, required=True, metavar="MODULE...")
@db_option
@click.option("--workflow", default=None, metavar="NAME", help="Only runs of this workflow (id or name).")
@click.option(
    "--status",
    type=click.Choice(["completed", "all"], case_sensitive=False),
    default="all",
    show_default=True,
    help="Replay completed runs only, or every run that has recorded steps (runs in flight too).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, metavar="N", help="Only the N most recent runs (default: all)."
)
@json_flag
def replay(
    modules: tuple[str, ...], db: str | None, workflow: str | None, status: str, limit: int | None, as_json: bool
) -> None:
    """Replay recorded runs against the code in MODULE... without running actions or writing anything;
    print each run that diverges (step, recorded call, new call) and exit 1 if any does."""
    from cairn.registry import registry

    try:
        import_modules(modules)
    except click.ClickException as exc:  # a usage error (exit 2): exit 1 says that a run diverged
        fail(exc.message, 2)
    if not registry.workflows():
        # Usage errors (exit 2): exit 1 says that a run diverged, which a deploy's check acts on.
        raise click.UsageError(f"no workflows are registered after importing {', '.join(modules)}")
    workflow_id = None
    if workflow is not None:
        defn = registry.workflow(workflow)
        if defn is None:
            known = ", ".join(w.id for w in registry.workflows())
            where = ", ".join(modules)
            raise click.UsageError(f"workflow {workflow!r} is not defined in {where} (defined: {known})")
        workflow_id = defn.id
    # Run with the code about to be deployed: migrating the database in use to it, before the
    # deploy, would change what the running workers read.
    reading = with_client(db, lambda client: _replay(client, workflow_id, status, limit, as_json), migrate=False)
    code = run(reading)
    if code:
        raise SystemExit(code)


async def _replay(client: cairn.Client, workflow: str | None, status: str, limit: int | None, as_json: bool) -> int:
    from cairn.cli import render
    from cairn.registry import registry
    from cairn.worker.replay import ReplayReport, check_runs

    filters = RunFilters(status=RunStatus.COMPLETED.value if status == "completed" else None, workflow=workflow)
    report, read, after = ReplayReport(), 0, None
    out = render.console(stderr=True)
    with out.status("reading journals") as progress:
        while limit is None or read < limit:
            size = PAGE if limit is None else min(PAGE, limit - read)
            page = await client.store.runs_page(filters, True, after, size)
            if not page:
                break
            read += len(page)
            after = (page[-1].created_at, page[-1].id)
            journals: list[tuple[RunRow, list[StepRow]]] = []
            for row in page:
                if row.activations > 0:
                    journals.append((row, await client.store.list_steps(row.id)))
            check_runs(registry, journals, report)
            progress.update(f"replaying journals: {read} runs read, {len(report.divergences)} diverge")
            if len(page) < size:
                break
    if as_json:
        echo_json(_report_json(report))
    else:
        for d in report.divergences:
            click.echo(f"run {d.run_id} ({d.workflow}) diverges at {_where(d.step)}")
            click.echo(f"  recorded: {d.recorded}")
            click.echo(f"  new:      {d.new}")
        skipped = f", {len(report.skipped)} skipped" if report.skipped else ""
        click.echo(
            f"cairn replay: {len(report.replayed)} runs replayed{skipped}, {len(report.divergences)} diverge", err=True
        )
    if not as_json and limit is not None and read == limit:
        click.echo(f"note: only the {limit} most recent runs were read (--limit)", err=True)
    return 0 if report.ok else 1


def _where(step: int | None) -> str:
    return f"step {step}" if step is not None else "its end"


def _report_json(report: Any) -> dict[str, Any]:
    return {
        "replayed": report.replayed,
        "skipped": report.skipped,
        "divergences": [
            {"run": d.run_id, "workflow": d.workflow, "step": d.step, "recorded": d.recorded, "new": d.new}
            for d in report.divergences
        ],
    }
