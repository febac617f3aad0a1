"""`cairn dev`'s reloader: the command runs in a child process, restarted when a .py file changes.

Not `watchfiles.run_process`: it stops its child with one SIGINT and kills it 5 s later on exit,
whatever the worker's grace (a `def` action of 20 s was killed mid-way, its run left to a lease),
and the child shared the terminal's process group, so a Ctrl-C reached it twice (from the
terminal, then passed on), which a worker takes for "stop at once".
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from types import FrameType

import click

STOP_MARGIN = 5.0
"""Seconds a stopping child has beyond its grace (its store to close, its dashboard to stop)."""


LOOK_EVERY_MS = 500
"""How often, with no change, the reloader looks whether its child has ended on its own."""


def reload_on_change(
    command: list[str], grace: float, announce: Callable[[list[str]], None], ended: Callable[[int], None]
) -> None:
    """Run `command`, restart it whenever a Python file under the current directory changes (each
    stop graceful, as one Ctrl-C to a worker), until Ctrl-C or SIGTERM: a second one while the
    child stops is passed on, so that it stops at once. A child that ends on its own (its port
    taken, an error in the code) is reported to `ended` with its exit code, once; the next change
    starts it again."""
    import watchfiles

    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop is a Ctrl-C here
    within = grace + STOP_MARGIN
    child = _start(command)
    told = False
    try:
        for changes in watchfiles.watch(
            os.getcwd(),
            watch_filter=watchfiles.PythonFilter(),
            raise_interrupt=False,
            rust_timeout=LOOK_EVERY_MS,
            yield_on_timeout=True,
        ):
            if not changes:
                code = child.poll()
                if code is not None and not told:
                    told = True
                    ended(code)
                continue
            announce(sorted({os.path.relpath(path) for _, path in changes}))
            _stop(child, within)
            child, told = _start(command), False
    finally:
        _stop(child, within)


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    # Its own process group: the terminal's Ctrl-C reaches only this process, which passes it on once.
    return subprocess.Popen(command, process_group=0)


def _stop(child: subprocess.Popen[bytes], within: float) -> None:
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGINT)
    while True:
        try:
            child.wait(timeout=within)
            return
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)  # a second Ctrl-C: the worker stops at once
        except subprocess.TimeoutExpired:
            click.echo(f"cairn dev: the worker did not stop within {within:g}s; killing it", err=True)
            child.kill()
            child.wait()
            return


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
