"""A start by name checked against the workflow's registered JSON schema, as its code would check it.

Where the code is not imported (`cairn dashboard` beside a separate worker), the schema is all
there is. Checked by the JSON Schema rules alone, it let through what pydantic refuses at the
worker: a `"not a date"` for a `datetime`, `1e19` for an `int`. The run was written, then failed
at once. Here a format pydantic writes in a schema is checked by pydantic's own parser, and an
integer given as a float only within the range pydantic takes.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import ipaddress
import json
import uuid
from typing import Any

from pydantic import AnyUrl, TypeAdapter, ValidationError

from cairn.errors import SerializationError
from cairn.redaction import is_secret_key, redact
from cairn.registry import KEY_FORMATS

_FORMATS: dict[str, Any] = {
    "date-time": datetime.datetime,
    "date": datetime.date,
    "time": datetime.time,
    "duration": datetime.timedelta,
    "uuid": uuid.UUID,
    "ipv4": ipaddress.IPv4Address,
    "ipv6": ipaddress.IPv6Address,
    "uri": AnyUrl,
    KEY_FORMATS["decimal"]: decimal.Decimal,
    KEY_FORMATS["int"]: int,
    KEY_FORMATS["float"]: float,
    KEY_FORMATS["bool"]: bool,
}
"""The formats pydantic writes for these types (and those Cairn adds where it writes none:
`registry.KEY_FORMATS`), each checked by the parser the worker will use."""

_INT_RANGE = 2.0**63
"""pydantic takes a float for an `int` when it is whole and below this in magnitude."""


def _is_integer(_checker: Any, instance: Any) -> bool:
    if isinstance(instance, bool):
        return False
    if isinstance(instance, int):
        return True
    return isinstance(instance, float) and instance.is_integer() and abs(instance) < _INT_RANGE


@functools.lru_cache(maxsize=1)
def _validator_class() -> tuple[Any, Any]:
    """(the validator class, its format checker): made once, on the first start by name."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    integer = base.TYPE_CHECKER.redefine("integer", _is_integer)
    cls = jsonschema.validators.extend(base, type_checker=integer)  # type: ignore[no-untyped-call]
    formats = jsonschema.FormatChecker(formats=())
    for name, kind in _FORMATS.items():
        formats.checks(name, raises=ValidationError)(functools.partial(_parses, TypeAdapter(kind)))
    return cls, formats


def _parses(adapter: TypeAdapter[Any], instance: Any) -> bool:
    if isinstance(instance, str):  # a format says nothing of other types (the type check does)
        adapter.validate_python(instance)
    return True


@functools.lru_cache(maxsize=256)
def schema_of(text: str) -> tuple[dict[str, Any], Any]:
    """A registered input schema, parsed, and its validator: made once per schema, not at every
    start by name."""
    cls, formats = _validator_class()
    schema = json.loads(text)
    return schema, cls(schema, format_checker=formats)


def check_against(validator: Any, data: dict[str, Any], workflow: str) -> None:
    """The arguments checked against the registered JSON schema, naming the first bad one."""
    import jsonschema

    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    except jsonschema.exceptions.SchemaError:
        return  # a schema we cannot read checks nothing; the worker validates against the code
    if error is None:
        return
    where = next(iter(error.absolute_path), None)
    what = f"argument {where!r}" if where is not None else "the arguments"
    raise SerializationError(f"{what} of {workflow} does not match its schema: {_shown(error)}")


def _shown(error: Any) -> str:
    """The schema's complaint, which quotes the value, with secret-looking fields' values masked
    (a `{"password": ...}` given for a string said the password in the error, the page and the CLI)."""
    if any(isinstance(part, str) and is_secret_key(part) for part in error.absolute_path):
        return f"the value given fails its {error.validator!r} check"  # the value is the secret itself
    given, message = repr(error.instance), str(error.message)
    shown = repr(redact(error.instance))
    if len(shown) > 200:  # a 3 MB string given for a number: said in full, the error was 3 MB too
        shown = f"{shown[:200]}... ({len(given)} characters)"
    if shown == given:
        return message
    if given not in message:
        return f"the value given fails its {error.validator!r} check"
    return message.replace(given, shown)
