"""An isolate=True action whose module is slow to import in its child process (a heavy library
loading): the import is not the action's time, which its timeout bounds."""

from __future__ import annotations

import multiprocessing
import time

import cairn

IMPORT_SECONDS = 1.5

if multiprocessing.parent_process() is not None:  # in the action's child process only
    time.sleep(IMPORT_SECONDS)


@cairn.action(isolate=True, timeout=1.0)
def quick(x: int) -> int:
    return x * 2


@cairn.workflow
async def uses_quick(x: int) -> int:
    return await quick(x)
