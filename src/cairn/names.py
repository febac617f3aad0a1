"""Names that go into the database as text (run ids, signal names, memory keys, queue names, ids of
actions and workflows): checked where they enter, so that a value a database cannot store (a NUL
byte, which PostgreSQL's text refuses) is a clear error at the door, never a failed commit."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

MAX_NAME = 255


def check_name(value: Any, what: str, limit: int = MAX_NAME) -> str:
    """`value` if it is a usable name, else ValueError saying which rule it broke."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    if value.isspace():  # a blank field (`id=form["order"]`), not a name
        raise ValueError(f"{what} must not be blank, got {value!r}: give it a name with a visible character")
    if "\x00" in value:
        raise ValueError(f"{what} {value!r} contains a NUL byte, which cannot be stored; remove it")
    if len(value) > limit:
        raise ValueError(f"{what} is {len(value)} characters long; at most {limit} are allowed: {value[:40]!r}...")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate: what os.fsdecode makes of a name that is not UTF-8
            raise ValueError(
                f"{what} {value!r} contains a lone surrogate, which UTF-8 cannot carry and so cannot be stored; "
                "decode the bytes it came from as UTF-8 (errors='replace'), or use another name"
            ) from None
    return value


def storable(value: str) -> bool:
    """Whether a name could have been stored at all: a lookup of one that could not finds nothing."""
    if "\x00" in value:
        return False
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
    return True


def importable_module(module: str) -> str:
    """The name `module` is importable by: itself, except for `__main__`, which becomes the name
    the script would be imported by (`python shop.py` → `shop`, `python -m pkg.app` → `pkg.app`),
    so that what a script defines belongs to the module `cairn worker shop` imports. `__main__`
    is kept where the script is not importable (run from a directory that is not on sys.path).
    `__mp_main__` is the script too, as multiprocessing imports it in a child process (an
    isolate=True action's), so that its actions there have the ids they have in the script."""
    if module not in ("__main__", "__mp_main__"):
        return module
    import os

    main = sys.modules.get(module)  # `__mp_main__` is there while the script runs in a child
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        name = str(spec.name)
        return name.removesuffix(".__main__") if name.endswith(".__main__") else name
    path = getattr(main, "__file__", None)
    if not path:
        return module
    folder, stem = os.path.split(os.path.abspath(path))
    stem = os.path.splitext(stem)[0]
    on_path = {os.path.abspath(p or os.curdir) for p in sys.path}
    return stem if stem.isidentifier() and folder in on_path else module


def loaded_module(name: str) -> ModuleType | None:
    """The module loaded here that `importable_module` calls `name`: that module, or the script
    (`__main__`) when `name` is what the script is imported by elsewhere (a worker running
    `cairn worker shop` records `shop.CardDeclined`, which the script `python shop.py` has as
    `__main__.CardDeclined`). Never imports anything."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    for alias in ("__main__", "__mp_main__"):
        if alias in sys.modules and importable_module(alias) == name:
            return sys.modules[alias]
    return None
