"""A module (or one of its attributes) imported on first use, so that `cairn --help` stays fast."""

from __future__ import annotations

import importlib
from typing import Any


class Lazy:
    """Stands for `module` (or `module.attr`) and imports it when an attribute is first read."""

    def __init__(self, module: str, attr: str | None = None) -> None:
        self._module = module
        self._attr = attr
        self._target: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._target is None:
            target = importlib.import_module(self._module)
            self._target = getattr(target, self._attr) if self._attr else target
        return getattr(self._target, name)
