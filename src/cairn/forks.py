"""Which process made by `os.fork` this is: a client's connections and threads belong to the process
that opened them. A child of a fork inherits their sockets (shared with its parent's sessions) but
none of their threads, and a client used there waited for ever on a loop thread that did not exist.
Counting forks lets a client tell, at no cost per call, that it is in a child and say so instead."""

from __future__ import annotations

import os

_generation = 0


def generation() -> int:
    """How many forks made this process from the one that imported Cairn (0 there)."""
    return _generation


def _forked() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_forked)


def refuse(what: str) -> RuntimeError:
    return RuntimeError(
        f"{what} was opened in the process this one was forked from: a forked process cannot use its "
        "parent's database connections (they are the parent's sessions, and their threads are not here). "
        "Make a new client in this process (cairn.connect(url) or cairn.connect_sync(url) gives one), or "
        "start it with the 'spawn' start method of multiprocessing"
    )
