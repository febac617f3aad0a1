"""JSON given on the command line (`cairn start --input`, `cairn signal --payload`): inline, from a
file (`@FILE`) or from standard input (`-`), since a large input does not fit in a command line;
malformed or too deeply nested JSON is a usage error naming the option (and the argument), never a
traceback. Light on purpose: imported by `cairn --help`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def read_json_text(value: str, option: str) -> str:
    """The JSON an option gives: `-` reads standard input, `@FILE` reads FILE, anything else is the
    JSON itself (a large input does not fit in a command line)."""
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        path = value[1:]
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise click.BadParameter(f"cannot read {path!r}: {reason}", param_hint=option) from None
    return value


def parse_json(text: str, option: str, *, arguments: bool = False) -> Any:
    """`text` decoded; a clear BadParameter naming `option` (and, for `arguments`, which argument)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})", param_hint=option
        ) from None
    except RecursionError:  # Python's decoder gives up near 1,000 levels, long past Cairn's limit
        from cairn.serialization import MAX_NESTING

        where = _deepest_argument(text) if arguments else "the value"
        raise click.BadParameter(
            f"{where} is nested more than {MAX_NESTING} levels deep, over Cairn's nesting limit of "
            f"{MAX_NESTING}; flatten it, or store it elsewhere and pass a reference",
            param_hint=option,
        ) from None


def _deepest_argument(text: str) -> str:
    """Which top-level element of a JSON array or object nests deepest: `argument 'key'` or
    `argument 1` (positional), found by a scan that cannot recurse; `the value` otherwise."""
    depth, index, key, deepest, where = 0, 0, None, 0, "the value"
    in_string, escaped, start = False, False, 0
    is_object = text.lstrip().startswith("{")
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if depth == 1 and is_object and text[i + 1 : i + 64].lstrip().startswith(":"):
                    key = text[start + 1 : i]
            continue
        if ch == '"':
            in_string, start = True, i
        elif ch in "[{":
            depth += 1
            if depth > deepest and depth > 1:
                deepest = depth
                where = f"argument {key!r}" if is_object else f"argument {index + 1} (positional)"
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 1:
            index += 1
    return where
