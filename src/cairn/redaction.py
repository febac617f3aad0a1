"""What of a run's data a person is shown: the values of secret-looking fields masked.

Pages (the dashboard) and the CLI's tables show a run's input, result, properties, memory and
steps through `redact`; machine interfaces (the JSON API, `--json`) give the data as stored, to
those allowed to read it. Rejected: masking when storing (a workflow needs its own secrets back).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_SECRET_KEY = re.compile(
    r"password|passwd|token|secret|api[_-]?key|private[_-]?key|credential|authorization"
    r"|(?:^|[_.\-])auth(?:$|[_.\-])",  # `auth`, `basic_auth`, `auth_header`; not `author`
    re.I,
)
"""Keys whose values are shown as `***` (case-insensitive, anywhere in the key, nested too)."""
MASK = "***"


def redact(value: Any) -> Any:
    """A copy of JSON data with the values of secret-looking keys replaced by `***`, at any depth."""
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and is_secret_key(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def step_args(kind: str, name: str, args: Any) -> Any:
    """A step's arguments as a person may see them: a memory write under a secret-looking key
    carries the secret itself (its key is the step's name), masked as in the memory table. Not yet
    redacted within (`redact` does that, once, as far as shown)."""
    return MASK if kind == "memory" and is_secret_key(name) else args


def step_result(kind: str, name: str, result: Any) -> Any:
    """A step's result as a person may see it: the payload of a signal with a secret-looking name
    is masked, like a property or memory entry of that name (not yet redacted within, as above)."""
    return MASK if kind == "signal" and is_secret_key(name) else result


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether `key` looks like a secret's name. Cached: a large value repeats its few keys in every
    item (a list of 10,000 records), and the search, not the copy, was most of `redact`'s time."""
    return bool(_SECRET_KEY.search(key))
