"""Imported beside a workflow module by a worker under test: leaves an idle non-daemon thread (a
thread pool's, as the store's are for a moment after the worker stops), which is no action."""

from __future__ import annotations

import concurrent.futures

POOL = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="idle")
POOL.submit(lambda: None).result()  # its thread now waits for work until the interpreter exits
