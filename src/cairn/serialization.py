"""JSON in and out for arguments, results and errors, through pydantic; never pickle.

Values are validated against the function's type hints on the way in (so a pydantic model
argument comes back as that model), and dumped to compact JSON on the way out. A dict keeps its
keys in its own order, as Python does, so that what a step returns (or a run is given) comes back
as it went in. A replayed call is compared to the recorded one as text first, and only when the
texts differ as values (`same_json`): journals written before keys kept their order have them
sorted, and code may build the same dict in another order (from a set, whose order of strings
changes with each process's hash seed).
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import inspect
import json
import math
import os
import re
import sys
import traceback
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pydantic
import pydantic_core

from cairn.errors import ActionError, ArgumentsMismatch, PayloadTooLarge, SerializationError
from cairn.names import importable_module, loaded_module
from cairn.types import Json

DEFAULT_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024


@functools.cache
def max_payload_bytes() -> int:
    """The limit, from the environment when first needed: read once per process (every payload
    is checked against it, and reading the environment costs more than the check)."""
    text = os.environ.get("CAIRN_MAX_PAYLOAD_BYTES")
    if text is None:
        return DEFAULT_MAX_PAYLOAD_BYTES
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if limit < 1:  # 0 or less refused every payload; "abc" failed every activation, naming nothing
        raise ValueError(
            f"CAIRN_MAX_PAYLOAD_BYTES must be a whole number of bytes above 0, got {text!r}; "
            f"leave it unset for the default, {DEFAULT_MAX_PAYLOAD_BYTES}"
        )
    return limit


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
"""Made once: `json.dumps` with any option set builds a new encoder on every call."""
_UNESCAPED = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""The same JSON as UTF-8 would carry it: what a payload's size is measured on."""
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
"""One text per value, whatever order its dicts' keys are in: what `same_json` compares."""


MAX_NESTING = 128
"""How deeply a payload's arrays and objects may nest. Every reader of a stored payload must get
through it with the levels Cairn wraps around it (the arguments object, HTTP answers): pydantic
parses JSON 200 levels deep and serializes 254, Python's JSON decoder about 900; 128 leaves room."""


def too_deep(what: str) -> SerializationError:
    return SerializationError(
        f"{what} is nested more than {MAX_NESTING} levels deep, over Cairn's nesting limit of "
        f"{MAX_NESTING}; flatten it, or store it elsewhere and pass a reference."
    )


def to_jsonable(value: Any, what: str) -> Json:
    """Turn a value into plain JSON data, or raise SerializationError naming `what`."""
    try:
        data = pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError as exc:
        raise SerializationError(
            f"{what} is not JSON-serializable ({type(value).__name__}): {exc}. Use JSON types, "
            "dataclasses or pydantic models."
        ) from None
    except (ValueError, RecursionError) as exc:  # pydantic's own depth limit (255), or a cycle
        if isinstance(exc, RecursionError) or "depth" in str(exc):
            raise too_deep(what) from None
        hint = (
            "bytes are stored as UTF-8 text; encode binary data as base64 text first"
            if isinstance(exc, UnicodeDecodeError)
            else "Use JSON types, dataclasses or pydantic models"
        )
        raise SerializationError(f"{what} is not JSON-serializable ({type(value).__name__}): {exc}. {hint}.") from None
    _check_plain(data, what)
    if type(value) not in _SCALARS:  # on every payload: the scalars and their lists cost a type check
        _settle(value, data, what)
    return data


_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = (list, dict, tuple, set, frozenset)


def _settle(value: Any, data: Json, what: str) -> None:
    """Walk a value beside the JSON pydantic made of it: sort what came of a set, refuse a masked secret.

    A set's JSON is its elements in iteration order, which for strings changes with each process's
    hash seed: a set of strings passed to an action was recorded in one order and replayed by
    another process in another, a divergence. Sorted, it is one text everywhere. A `SecretStr`
    comes out as its mask, "**********", and would come back as a secret of ten stars: refused.
    Only shapes pydantic kept are followed (a custom serializer's output is its own)."""
    if type(value) in _SCALARS:
        return
    kind = type(value)
    if kind in _CONTAINERS or isinstance(value, _CONTAINERS):
        is_dict = isinstance(value, dict)
        if type(data) is not (dict if is_dict else list) or len(data) != len(value):
            return
        _settle_all(value.values() if is_dict else value, data.values() if is_dict else data, what)  # type: ignore[union-attr]
        if isinstance(value, set | frozenset):
            data.sort(key=_set_order)  # type: ignore[union-attr]
    elif isinstance(value, pydantic.SecretStr | pydantic.SecretBytes):
        if data == "**********" and value.get_secret_value() not in ("", b""):  # pydantic's mask
            raise SerializationError(
                f"{what} holds a {type(value).__name__}, which pydantic writes out as its mask {data!r}: it would "
                "come back as that mask, not the secret. Pass a reference (the secret's name in your vault or "
                "environment) and read the secret in the action, or pass secret.get_secret_value() if it may "
                "be stored in the journal in clear."
            )
    elif type(data) is dict:
        for name in _field_names(value):
            if name in data:
                _settle(getattr(value, name, None), data[name], what)


def _field_names(value: Any) -> Iterable[str]:
    """The fields pydantic wrote out of a model or a dataclass by their names."""
    if isinstance(value, pydantic.BaseModel):
        return type(value).model_fields
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [field.name for field in dataclasses.fields(value)]
    return ()


def _settle_all(values: Iterable[Any], data: Iterable[Json], what: str) -> None:
    if _SCALARS.issuperset(map(type, values)):  # the usual case, told apart in C: nothing to walk
        return
    for v, d in zip(values, data, strict=False):
        if type(v) not in _SCALARS:
            _settle(v, d, what)


def _set_order(element: Json) -> tuple[int, Any]:
    """Numbers by value, then strings, then anything else by its canonical JSON: one order in every
    process (small ints keep the order a set of them iterates in)."""
    kind = type(element)
    if kind is int or kind is float:
        return (0, element)
    if kind is str:
        return (1, element)
    return (2, _CANONICAL.encode(element))


def dumps(value: Any, what: str = "value") -> str:
    """Compact JSON text of `value`; over the payload limit is a PayloadTooLarge naming `what`."""
    kind = type(value)
    text = _plain_text(value) if kind is dict or kind is list else None  # a scalar is as fast the other way
    return text_of(to_jsonable(value, what), what) if text is None else text


_LEAVES = frozenset({str, int, float, bool, type(None)})
_WORDS = frozenset({str, bool, type(None)})
_KEYS = frozenset({str})
_DIGITS = bytes.maketrans(b"0123456789", b"0000000000")
_SHORT_EXPONENT = re.compile(rb"e-[0-9](?![0-9])")


def _plain_text(value: Any) -> str | None:
    """The text `text_of(to_jsonable(value))` gives, for plain JSON data (dicts with string keys, lists,
    and str, int, float, bool and None, of exactly those types, nested no deeper than MAX_NESTING)
    within the payload limit; None for anything else, which takes that path. A result of a few
    megabytes spent most of its step in that path's walks and in the stdlib encoder: pydantic-core
    writes the same text in one pass, four times as fast, except where its output says otherwise.

    Stored text is compared on replay, so this must be that text byte for byte: pydantic-core differs
    only on non-ASCII and DEL (stored escaped), floats under 1e-4 (written `0.00001` and `1e-7` where
    Python writes `1e-05` and `1e-07`), NaN and infinities (refused), and ints of more digits than
    Python converts (refused, with ValueError). Each is looked for in its output (the numbers' only
    when there are numbers): found, or a string that looks like one, the stdlib encoder writes the
    text, or the full path refuses the value."""
    numbers = _plain_members((value,), 0)
    if numbers < 0:
        return None
    try:
        raw = pydantic_core.to_json(value, inf_nan_mode="constants")
    except (pydantic_core.PydanticSerializationError, ValueError, RecursionError):  # a lone surrogate
        return None
    if len(raw) > max_payload_bytes():
        return None
    if raw.isascii() and b"\x7f" not in raw:
        if not numbers:
            return raw.decode("ascii")
        if b"NaN" in raw or b"Infinity" in raw:
            return None
        digits = sys.get_int_max_str_digits()
        if digits and len(raw) > digits and b"0" * (digits + 1) in raw.translate(_DIGITS):
            return None
        if b".0000" not in raw and not _SHORT_EXPONENT.search(raw):
            return raw.decode("ascii")
    try:
        text: str = _ENCODER.encode(value)
    except ValueError:  # NaN, infinities, an int too long to write: refused by the full path, with its message
        return None
    return text if len(text) <= max_payload_bytes() else None


def _plain_members(values: Iterable[Any], depth: int) -> int:
    """Whether values held at `depth` (and what they hold) are plain JSON data (`_plain_text`): -1 if
    not, else 1 if there are numbers among them, 0 if not. Lists and dicts of scalars, the usual
    case, are told apart in C."""
    numbers = 0
    for v in values:
        kind = type(v)
        if kind is list or kind is dict:
            if depth >= MAX_NESTING:
                return -1
            if kind is dict:
                if not _KEYS.issuperset(map(type, v)):
                    return -1
                v = v.values()
            if numbers:  # told already: only whether they are scalars
                if _LEAVES.issuperset(map(type, v)):
                    continue
            elif _WORDS.issuperset(map(type, v)):
                continue
            elif _LEAVES.issuperset(map(type, v)):
                numbers = 1
                continue
            found = _plain_members(v, depth + 1)
            if found < 0:
                return -1
            numbers |= found
        elif kind not in _WORDS:
            if kind is not int and kind is not float:
                return -1
            numbers = 1
    return numbers


def text_of(data: Json, what: str) -> str:
    """Compact JSON text of data already made plain (`to_jsonable`), within the payload limit."""
    text = _ENCODER.encode(data)
    limit = max_payload_bytes()
    if len(text) > limit:
        # Stored with non-ASCII escaped (an emoji is 12 characters), which is never shorter than the
        # UTF-8 JSON the caller sent and measures: 0.8 MB of emoji was refused as 2.4 MB.
        size = len(_UNESCAPED.encode(data).encode("utf-8", "surrogatepass"))
        if size > limit:
            raise PayloadTooLarge(
                f"{what} is {size} bytes of JSON, over the {limit}-byte payload limit "
                "(CAIRN_MAX_PAYLOAD_BYTES); store large data elsewhere and pass a reference."
            )
    return text


def loads(text: str | None) -> Json:
    return None if text is None else json.loads(text)


def same_json(a: str | None, b: str | None) -> bool:
    """Whether two stored JSON texts hold the same value, whatever order their objects' keys are in.
    1 and 1.0 stay apart (as their texts were before keys kept their order); text that is not JSON
    is the same only as itself."""
    if a == b:
        return True
    if a is None or b is None:
        return False
    try:
        return _CANONICAL.encode(json.loads(a)) == _CANONICAL.encode(json.loads(b))
    except ValueError:  # not JSON (a row changed behind Cairn's back): not the same, as before
        return False


def _check_plain(data: Json, what: str, depth: int = 1) -> None:
    """Refuse NaN and infinities (JSON cannot carry them) and nesting past MAX_NESTING, in plain
    data (`to_jsonable_python` makes only dicts and lists). Recursive, but never past MAX_NESTING + 1
    frames: it refuses before it descends further. On every payload: written for speed (exact type
    checks, floats checked inline), twice as fast as the isinstance walk it replaced."""
    kind = type(data)
    if kind is dict:
        values: Iterable[Json] = data.values()
    elif kind is list:
        values = data
    else:
        if kind is float and not math.isfinite(data):
            raise _not_finite(data, what)
        return
    if depth > MAX_NESTING:
        raise too_deep(what)
    for v in values:
        kind = type(v)
        if kind is dict or kind is list:
            _check_plain(v, what, depth + 1)
        elif kind is float and not math.isfinite(v):
            raise _not_finite(v, what)


def _check_finite(value: Any, what: str) -> None:
    """Refuse a NaN or an infinity anywhere in a validated value. A value of a type that has no JSON
    form is left alone: the workflow may keep it to itself (`to_jsonable` judges it if it goes out)."""
    try:
        data = pydantic_core.to_jsonable_python(value)
    except (pydantic_core.PydanticSerializationError, ValueError, RecursionError):
        return
    _check_plain(data, what)


def _not_finite(value: Json, what: str) -> SerializationError:
    return SerializationError(f"{what} contains {value!r}, which JSON cannot carry exactly; use None or a string.")


_OTHER_CODE = (
    " (stored by another version of its code: deploy the code they were written for, or one that takes"
    " both, then retry the run)"
)


@dataclasses.dataclass(frozen=True)
class Signature:
    """A function's call shape for serialization: what is validated and what Depends supplies."""

    qualname: str
    signature: inspect.Signature
    hints: Mapping[str, Any]
    injected: frozenset[str]

    @classmethod
    def of(cls, fn: Callable[..., Any], qualname: str, skip_first: bool = False) -> Signature:
        sig = inspect.signature(fn)
        params = list(sig.parameters.values())
        if skip_first:
            params = params[1:]
        sig = sig.replace(parameters=params)
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:  # unresolved forward references: validate nothing rather than fail
            hints = {}
        injected = frozenset(
            p.name for p in params if _is_dependency(hints.get(p.name)) or hasattr(p.default, "dependency")
        )
        return cls(qualname, sig, hints, injected)

    @functools.cached_property
    def public(self) -> inspect.Signature:
        """The signature callers see: without the parameters Depends fills in."""
        return self.signature.replace(
            parameters=[p for p in self.signature.parameters.values() if p.name not in self.injected]
        )

    def encode_args(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """Check the call binds to the signature, then dump each argument, naming any bad one."""
        arguments = self._bind_plain(args, kwargs)
        if arguments is None:
            try:
                arguments = self.public.bind(*args, **kwargs).arguments
            except TypeError as exc:
                raise TypeError(f"{self.qualname}: {exc}") from None
        out: dict[str, Json] = {}
        for name, value in arguments.items():
            out[name] = to_jsonable(value, f"argument {name!r} of {self.qualname}")
        return text_of(out, f"arguments of {self.qualname}")

    @functools.cached_property
    def _plain(self) -> tuple[tuple[str, ...], frozenset[str]] | None:
        """(names, required names) when every parameter callers see is an ordinary one (neither
        positional- nor keyword-only, nor * or **): the usual case, bound without `inspect`."""
        params = list(self.public.parameters.values())
        if any(p.kind is not inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params):
            return None
        required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty)
        return tuple(p.name for p in params), required

    def _bind_plain(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any] | None:
        """The arguments of a call that binds plainly; None sends it to `inspect` (which also words
        the error of a call that does not bind)."""
        plain = self._plain
        if plain is None or len(args) > len(plain[0]):
            return None
        names, required = plain
        arguments = dict(zip(names, args, strict=False))
        for name, value in kwargs.items():
            if name in arguments or name not in names:
                return None
            arguments[name] = value
        return arguments if required.issubset(arguments) else None

    def decode_args(self, text: str, finite: bool = False, positional: int = 0) -> tuple[list[Any], dict[str, Any]]:
        """Validate stored arguments against the type hints; rebuild positional/keyword form.
        `finite`: refuse a value that validated into a NaN or an infinity (see `validate_input`).
        Parameters that may be given either way go by name, except the first `positional` (as a
        caller gave them) and all those before values of `*args`, which only they can precede."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise SerializationError(f"arguments of {self.qualname} must be a JSON object, got {text[:80]}")
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        either: list[str] = []  # given positional-or-keyword parameters, in order, still by name
        for name, param in self.public.parameters.items():
            if name not in data:
                continue
            value = self._validate(name, data[name], param.kind)
            if finite:
                _check_finite(value, f"argument {name!r} of {self.qualname}")
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                if value:  # `run(self, a, *rest)` got (1, 2, 3): a=1 by name beside *rest said "multiple values"
                    args.extend(kwargs.pop(n) for n in either)
                    either.clear()
                args.extend(value)
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update(value)
            elif param.kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[name] = value
            elif param.kind is inspect.Parameter.POSITIONAL_ONLY or (len(args) < positional and not either):
                args.append(value)
            else:  # positional or keyword: by name
                either.append(name)
                kwargs[name] = value
        unknown = set(data) - set(self.public.parameters)
        if unknown:
            raise ArgumentsMismatch(f"{self.qualname} got unexpected arguments {sorted(unknown)}{_OTHER_CODE}")
        if self._bind_plain(args, kwargs) is None:  # not a plain signature, or leaves a required one out
            try:
                self.public.bind(*args, **kwargs)
            except TypeError as exc:
                raise ArgumentsMismatch(f"{self.qualname}: {exc}{_OTHER_CODE}") from None
        return args, kwargs

    def with_defaults(self, text: str) -> str:
        """Stored arguments with the defaults of the parameters they leave out written in: a start
        that writes a default out and one that leaves it to the signature give the same input."""
        try:
            data = json.loads(text)
        except ValueError:
            return text
        if not isinstance(data, dict):
            return text
        for name, param in self.public.parameters.items():
            if name in data or param.default is inspect.Parameter.empty:
                continue
            try:
                data[name] = pydantic_core.to_jsonable_python(param.default)
            except Exception:  # a default JSON cannot hold: left out on both sides alike
                continue
        return json.dumps(data)

    def validate_input(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        """Validate JSON-shaped input (from a CLI or HTTP caller) against the hints, then encode."""
        encoded = self.encode_args(args, kwargs)
        # Lax validation makes a float of the string "NaN" or "inf": the run would get a value that
        # no step of it can record (it failed at its first action). Refused here, nothing written.
        self.decode_args(encoded, finite=True)
        return encoded

    def _validate(self, name: str, value: Json, kind: inspect._ParameterKind) -> Any:
        hint = self.hints.get(name)
        if hint is None:
            return value
        if kind is inspect.Parameter.VAR_POSITIONAL:
            hint = list[hint]  # type: ignore[valid-type]
        elif kind is inspect.Parameter.VAR_KEYWORD:
            hint = dict[str, hint]  # type: ignore[valid-type]
        try:
            return _adapter(hint).validate_python(value)
        except pydantic.ValidationError as exc:
            raise SerializationError(
                f"argument {name!r} of {self.qualname} does not match its type {_type_name(hint)}: {_short(exc)}"
            ) from None

    def decode_result(self, value: Json) -> Any:
        hint = self.hints.get("return")
        if hint is None or hint is type(None):
            return value
        try:
            return _adapter(hint).validate_python(value)
        except pydantic.ValidationError as exc:
            raise SerializationError(
                f"result of {self.qualname} does not match its return type {_type_name(hint)}: {_short(exc)}"
            ) from None

    def encode_result(self, value: Any) -> str:
        """Check the value against the return hint (so the step that produced it fails), then dump."""
        hint = self.hints.get("return")
        if hint is not None and hint is not Any:
            try:
                _adapter(hint).validate_python(value, strict=False)
            except pydantic.ValidationError as exc:
                raise SerializationError(
                    f"result of {self.qualname} does not match its return type {_type_name(hint)}: {_short(exc)}"
                ) from None
            except pydantic.PydanticSchemaGenerationError:
                pass
        return dumps(value, f"result of {self.qualname}")


@functools.lru_cache(maxsize=4096)
def _adapter(hint: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(hint)


def _is_dependency(hint: Any) -> bool:
    if typing.get_origin(hint) is not typing.Annotated:
        return False
    return any(hasattr(m, "dependency") for m in hint.__metadata__)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or repr(hint)


def _short(exc: pydantic.ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()[:3])


# --- errors ---------------------------------------------------------------------------------


RECORD_VERSION = 2
"""Of an error record: 2 since stand-ins (`error_from_json`); records without it were written
before, and are made again as they were then, so that a run in flight across the upgrade replays
the errors it saw (a type not loaded as `ActionError("Type: message")`, a str() as it came out)."""


def error_to_json(exc: BaseException) -> Json:
    """What is kept of an exception: its type, message and traceback text, and the arguments it
    was made with when they are not just the message (so that `RunIdConflict` or an exception of
    the user's with fields of its own comes back whole). Besides: which of its arguments and
    attributes were bytes (kept as their UTF-8 text, made bytes again), the builtin exception its
    type derives from when that is not `Exception` (`base`: what stands in for a type that is not
    loaded where it is re-created derives from it too), and an exception group's own message and
    members (`group`)."""
    kind = type(exc)
    data: dict[str, Json] = {
        "type": kind.__qualname__,
        "module": importable_module(kind.__module__),
        "message": error_message(exc),
        "traceback": _format_traceback(exc),
        "v": RECORD_VERSION,
    }
    base = _builtin_base(kind)
    if base is not None:
        data["base"] = base
    constructed = _constructor_args(exc)
    if constructed is not None and constructed != ([data["message"]], []):
        data["args"], bytes_args = constructed
        if bytes_args:
            data["bytes_args"] = list(bytes_args)
    attrs: dict[str, Json] = {}
    bytes_attrs: list[Json] = []
    for name, value in vars(exc).items():
        kept = None if name.startswith("_") else _attribute(value)
        if kept is not None:
            attrs[name] = kept[0]
            if kept[1]:
                bytes_attrs.append(name)
    if attrs:
        data["attrs"] = attrs
    if bytes_attrs:
        data["bytes_attrs"] = bytes_attrs
    if isinstance(exc, BaseExceptionGroup):
        data["group"] = {"message": exc.message, "exceptions": [error_to_json(e) for e in exc.exceptions]}
    return data


def error_message(exc: BaseException) -> str:
    """`str(exc)`, or the arguments it was made with when its own `__str__` fails (an attribute
    missing): an error is always said."""
    try:
        return str(exc)
    except Exception:
        return BaseException.__str__(exc)


def error_summary(error: Json) -> str | None:
    """`Type: message` of a recorded error (`error_to_json`'s shape), or None for a value not of
    that shape (what the CLI, the pages and the worker's log say of a failed step or run)."""
    if not isinstance(error, dict) or ("type" not in error and "message" not in error):
        return None
    kind = str(error.get("type") or "Error")
    message = str(error.get("message") or "")
    return f"{kind}: {message}" if message else kind


def error_text_summary(error: str | None) -> str:
    """`Type: message` of a recorded error's JSON text (the text itself when it is not one): what a
    worker's log and a test environment's stall say of a run's error."""
    try:
        return error_summary(loads(error)) or str(error)
    except ValueError:
        return str(error)


MAX_ATTRIBUTE_CHARS = 10_000
"""How much of a text attribute of an exception is kept (a CalledProcessError's `stderr`): the rest
is cut, with a marker saying so, so that the error record stays light."""


def _attribute(value: Any) -> tuple[Json, bool] | None:
    """An attribute of an exception as it is kept, and whether it was bytes; None when it is not
    kept. JSON scalars (`code` of `CardError(msg, code=...)`, which its positional arguments do not
    carry), texts cut to MAX_ATTRIBUTE_CHARS (dropped, a CalledProcessError's long `stderr` came back
    None), and bytes as their UTF-8 text (dropped, its `stderr=b"..."` came back None): made bytes
    again when re-created, the same bytes when they were UTF-8 (what a tool's output nearly always
    is), with U+FFFD for each byte that was not."""
    if value is None or isinstance(value, bool | int):
        return value, False
    if isinstance(value, float):
        return (value, False) if math.isfinite(value) else None
    if isinstance(value, bytes | bytearray):
        return _cut(_bytes_text(value)), True
    if isinstance(value, str):
        return _cut(value), False
    return None


def _bytes_text(value: bytes | bytearray) -> str:
    return bytes(value).decode("utf-8", "replace")


_CUT_MARK = " more characters cut by Cairn]"


def _cut(text: str) -> str:
    if len(text) <= MAX_ATTRIBUTE_CHARS:
        return text
    return f"{text[:MAX_ATTRIBUTE_CHARS]}... [{len(text) - MAX_ATTRIBUTE_CHARS}{_CUT_MARK}"


def _builtin_base(kind: type[BaseException]) -> str | None:
    """The nearest builtin exception a type that is not builtin derives from, when it is not
    `Exception`: `ValueError` for pydantic's ValidationError, `BaseException` for one that is not
    an Exception (which a workflow never gets as itself)."""
    if kind.__module__ == "builtins":
        return None
    for parent in kind.__mro__[1:]:
        if parent.__module__ == "builtins":
            return None if parent is Exception else parent.__name__
    return None


def _constructor_args(exc: BaseException) -> tuple[list[Json], list[int]] | None:
    """The JSON-plain arguments that re-create `exc` (as pickle would call its type), with the
    positions of those that were bytes (kept as their UTF-8 text, as attributes are), or None."""
    try:
        reduced = exc.__reduce__()
        if not (isinstance(reduced, tuple) and len(reduced) >= 2 and reduced[0] is type(exc)):
            return None
        given = list(reduced[1])
        bytes_at = [i for i, arg in enumerate(given) if isinstance(arg, bytes | bytearray)]
        for i in bytes_at:
            given[i] = _bytes_text(given[i])
        args = pydantic_core.to_jsonable_python(given)
    except Exception:
        return None
    return (args, bytes_at) if isinstance(args, list) else None


def _format_traceback(exc: BaseException) -> str:
    # Python 3.11 parses source lines to draw carets; a concurrent parse in another thread can make
    # that raise SystemError (CPython gh-106905). A record of the error must never fail for that.
    for _ in range(3):
        try:
            return "".join(traceback.format_exception(exc))
        except SystemError:
            continue
    return "".join(traceback.format_exception_only(exc))


def error_text(exc: BaseException) -> str:
    """The error record of `exc` (`error_to_json`) as JSON text that can always be stored, so that a
    failure is recorded however it was raised. A record over the payload limit (a message quoting a
    whole response body) or that JSON cannot carry (a NaN among its arguments) keeps the exception's
    type and the start of its message and traceback: refused, it would leave its step running, to
    be taken and lost again and again, or its run failing to fail."""
    data = error_to_json(exc)
    try:
        return dumps(data, f"the error record of {type(exc).__qualname__}")
    except SerializationError:
        pass
    keep = max(200, max_payload_bytes() // 32)  # escaped, a character takes at most 12 bytes
    short = {"type": data["type"], "module": data["module"], "v": RECORD_VERSION}
    if "base" in data:  # a BaseException's stays one where its type is not loaded
        short["base"] = data["base"]
    for key in ("message", "traceback"):
        text = str(data.get(key, ""))
        if len(text) > keep:
            text = f"{text[:keep]}... [{len(text) - keep} more characters cut: the error was too big to store]"
        short[key] = text
    return _CANONICAL.encode(short)


_NEVER_RECORDED = ("NonDeterminismError", "JournalCorrupted", "LeaseLost", "CompletionLost")
"""Cairn's own errors that no action or child run ends with: a step record naming one is forged."""


def decode_error(text: str | None, fallback: type[ActionError] = ActionError) -> BaseException:
    """The exception a step or run recorded (see `error_from_json`); ValueError saying why, when the
    record is not one Cairn could have written."""
    try:
        data = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON ({exc.msg} at char {exc.pos})") from None
    return error_from_json(data, fallback)


def error_from_json(data: Json, fallback: type[ActionError] = ActionError) -> BaseException:
    """Re-create a recorded exception (`error_to_json`'s record) where this process has its type
    loaded; a record of another shape, or naming something that is not an exception type, is a
    ValueError saying why. Nothing else is ever raised: an exception that cannot be re-created
    comes back as a `fallback` (ActionError in workflow code, WorkflowFailed from `result()`),
    which workflow code can catch. An exception group comes back as a group of its members,
    each re-created so.

    A type that is not loaded here, or that cannot be made again from its record (pydantic's
    ValidationError needs its line errors), comes back as a stand-in: a subclass of `fallback`
    named as the type (same module and qualified name, so it is recorded again as that type), its
    str() the recorded message, its attributes set, and derived from the builtin exception the type
    derives from (`except ValueError` catches a ValidationError either way). A type that is loaded
    and made again whose str() is not the message recorded (UnicodeDecodeError, which says its
    bytes) says the recorded message. So what workflow code sees of an error is the same whether
    or not the process that replays it has the type's module loaded (a library an action imported
    lazily is not, in a worker restarted since). A workflow diverged from its own journal when the
    replaying process made `ActionError("LibError: boom")` of what the first run saw as
    `LibError("boom")`. Only `except LibError` (or a non-builtin base of it) tells them apart, and
    code that names the type has loaded it.

    Only modules already in sys.modules are consulted: stored data never triggers an import. An
    import would run the module's top-level code inside a workflow activation (on the worker's
    event loop, against the deadlock watchdog's clock, where a heavy SDK's import paused the run)
    or in any client reading a result; an exception defined in a script is recorded under the
    script's name, which imported elsewhere runs the script; and a row changed in the database
    could import any module installed.

    A BaseException that is not an Exception (SystemExit, KeyboardInterrupt) is never raised as
    itself in workflow code, where it would end the worker: it is a `fallback` saying
    `Type: message`, loaded or not (a record says its `base`)."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str) or not isinstance(data.get("message"), str):
        raise ValueError("is not an error record (a JSON object with a 'type' and a 'message' string)")
    module_name = str(data.get("module", ""))
    type_name: str = data["type"]
    cls = _loaded_type(module_name, type_name)
    if module_name.startswith("cairn") and type_name in _NEVER_RECORDED:
        raise ValueError(f"names Cairn's own {type_name}, which no action or child run ends with")
    if cls is not None and not (isinstance(cls, type) and issubclass(cls, BaseException)):
        raise ValueError(f"names {module_name}.{type_name}, which is not an exception type")
    message: str = data["message"]
    tb = str(data.get("traceback", ""))
    base = _recorded_base(data.get("base"))
    exc: BaseException | None = None
    earlier = "v" not in data  # written before stand-ins: made again as it was then (RECORD_VERSION)
    if earlier and cls is None:
        exc = fallback(f"{type_name}: {message}", type_name, tb)
    if exc is None and cls is not None and issubclass(cls, BaseExceptionGroup):
        exc = _regrouped(cls, data, fallback)
    if exc is None and cls is not None and issubclass(cls, Exception):
        exc = _remade(cls, data, message, as_said=not earlier)
    if exc is None:
        if (cls is not None and not issubclass(cls, Exception)) or (
            base is not None and not issubclass(base, Exception)
        ):
            exc = fallback(f"{type_name}: {message}", type_name, tb)
        else:
            exc = _stand_in(module_name, type_name, base, fallback)(message, type_name, tb)
            _restore(exc, data)
    if tb:
        exc.add_note(f"Original traceback (recorded by Cairn):\n{tb.rstrip()}")
    return exc


def _loaded_type(module_name: str, type_name: str) -> Any:
    """What the record's type names in a module loaded here, or None."""
    found: Any = loaded_module(module_name)
    for part in type_name.split("."):
        try:
            found = getattr(found, part, None)
        except Exception:  # a module's __getattr__ that fails otherwise than with AttributeError
            return None
        if found is None:
            return None
    return found


def _recorded_base(name: Json) -> type[BaseException] | None:
    """The builtin exception a record says its type derives from, or None."""
    found = getattr(builtins, name, None) if isinstance(name, str) else None
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _remade(cls: type[Exception], data: dict[str, Json], message: str, as_said: bool = True) -> BaseException | None:
    """`cls` made again from its record, saying the recorded message (`as_said`; else only when its
    own str() raises, as records written before RECORD_VERSION 2 were); None when it cannot be made."""
    args = data.get("args")
    recorded = (args, _positions(data.get("bytes_args"), len(args))) if isinstance(args, list) else ([message], [])
    given = tuple(_as_bytes(arg) if i in recorded[1] else arg for i, arg in enumerate(recorded[0]))
    exc = _made(cls, given, recorded)
    if exc is None:
        return None
    _restore(exc, data)
    said = _said(exc)
    if said == message or (said is not None and not as_said):
        return exc
    # Its str() says something else (a UnicodeDecodeError's bytes came back as text, or its __str__
    # needs what the record could not carry): an instance of a subclass that says the recorded message.
    exc = _made(_printable(cls), given, recorded)
    if exc is None:
        return None
    _restore(exc, data)
    vars(exc)["_cairn_message"] = message
    return exc


def _made(cls: type[Exception], given: tuple[Any, ...], recorded: tuple[list[Json], list[int]]) -> BaseException | None:
    """`cls` called with the arguments it was made with, or else made without calling it, with
    those arguments as its args (as pickle would); None when neither can be done (a type whose
    `__new__` needs arguments of its own, as pydantic's ValidationError's does)."""
    try:
        exc = cls(*given)
        # Its constructor takes something else (a code it makes the message of) when the one made
        # would not be made again from the same arguments (as `__reduce__` gives them: its args,
        # or what a type with a `__reduce__` of its own says re-creates it, as RunIdConflict's).
        if _constructor_args(exc) == recorded:
            return exc
    except Exception:
        pass
    try:
        exc = cls.__new__(cls)
        exc.args = given
    except Exception:
        return None
    return exc


def _regrouped(
    cls: type[BaseExceptionGroup[Any]], data: dict[str, Json], fallback: type[ActionError]
) -> BaseException | None:
    """An exception group made again of its members, each re-created (one that is not an Exception
    is a `fallback`, so the group is an ExceptionGroup, which `except Exception` and `except*`
    catch); None for a record without members (a group recorded cut short)."""
    group = data.get("group")
    if not isinstance(group, dict) or not isinstance(group.get("message"), str):
        return None
    recorded = group.get("exceptions")
    if not isinstance(recorded, list) or not recorded:
        return None
    members = [error_from_json(member, fallback) for member in recorded]
    made: BaseException | None = None
    if issubclass(cls, Exception):
        try:
            made = cls(group["message"], members)
        except Exception:
            made = None
    if made is None:
        try:
            made = BaseExceptionGroup(group["message"], members)
        except Exception:
            return None
    _restore(made, data)
    return made


def _positions(value: Json, count: int) -> list[int]:
    return [i for i in value if isinstance(i, int) and 0 <= i < count] if isinstance(value, list) else []


def _as_bytes(value: Json) -> Any:
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value


def _restore(exc: BaseException, data: dict[str, Json]) -> None:
    """Set the attributes recorded of an exception on its re-creation, as pickle would after the call."""
    attrs = data.get("attrs")
    if not isinstance(attrs, dict):
        return
    bytes_attrs = data.get("bytes_attrs")
    as_bytes = {name for name in bytes_attrs if isinstance(name, str)} if isinstance(bytes_attrs, list) else set()
    kept = vars(exc)
    for key, value in attrs.items():
        name = str(key)
        if name.startswith("_"):
            continue
        if isinstance(value, str) and value.endswith(_CUT_MARK) and kept.get(name) is not None:
            continue  # cut in the record, made whole again from the arguments (a long stderr)
        kept[name] = _as_bytes(value) if name in as_bytes else value


def _said(exc: BaseException) -> str | None:
    try:
        return str(exc)
    except Exception:
        return None


def _recorded_str(self: BaseException) -> str:
    message = vars(self).get("_cairn_message")
    return message if isinstance(message, str) else BaseException.__str__(self)


_PRINTABLE: dict[type[Exception], type[Exception]] = {}


def _printable(cls: type[Exception]) -> type[Exception]:
    """`cls` whose str() is the message recorded for it (an instance of `cls`, of the same name)."""
    made = _PRINTABLE.get(cls)
    if made is None:
        namespace = {"__str__": _recorded_str, "__module__": cls.__module__, "__qualname__": cls.__qualname__}
        made = _PRINTABLE[cls] = type(cls.__name__, (cls,), namespace)
    return made


_STAND_INS: dict[tuple[str, str, type[BaseException] | None, type[ActionError]], type[ActionError]] = {}


def _stand_in(
    module: str, qualname: str, base: type[BaseException] | None, fallback: type[ActionError]
) -> type[ActionError]:
    """The `fallback` subclass that stands in for a type that cannot be re-created here: named as
    it, saying its message, and derived from its builtin `base` too where that takes a message."""
    key = (module, qualname, base, fallback)
    made = _STAND_INS.get(key)
    if made is None:
        if len(_STAND_INS) >= 1024:  # bounded: the names come from stored records
            _STAND_INS.clear()
        made = _STAND_INS[key] = _new_stand_in(module, qualname, base, fallback)
    return made


def _new_stand_in(
    module: str, qualname: str, base: type[BaseException] | None, fallback: type[ActionError]
) -> type[ActionError]:
    def reduce(self: ActionError) -> tuple[Any, ...]:
        # Pickled (to another process: a pool's worker, Celery) as what it stands in as: `fallback`
        # with the type's name, its message and traceback. A class made here cannot be imported there.
        return (fallback, (str(self), self.type_name, self.remote_traceback))

    namespace = {"__str__": BaseException.__str__, "__reduce__": reduce, "__module__": module, "__qualname__": qualname}
    name = qualname.rpartition(".")[2] or qualname
    if base is not None and issubclass(base, Exception) and base is not Exception:
        try:
            kind = type(name, (fallback, base), namespace)
            if str(kind("probe")) == "probe":
                return kind
        except Exception:  # a layout that does not mix, or a constructor that wants more than a message
            pass
    try:
        return type(name, (fallback,), namespace)
    except Exception:  # a name no class can have (a NUL in it): the record was not written by Cairn
        return fallback


# --- result payloads (Waymark's helpers: the same names and shapes, JSON instead of protobuf) ---
#
# For tooling that reads persisted results: `serialize_result_payload(value)` and
# `serialize_error_payload(exc)` give the JSON text, `deserialize_result_payload(text)` an
# `ActionResultPayload` with `result` and `error` (the error as Cairn records it: type, module,
# message, traceback). `cairn.serialization.error_from_json(error)` turns such an error back into an
# exception of its original type.


@dataclasses.dataclass(frozen=True)
class ActionResultPayload:
    """What a payload carried: the result of a successful action, or the error it failed with."""

    result: Json | None
    error: Json | None


def serialize_result_payload(value: Any) -> str:
    """JSON text carrying a successful action result (pydantic models and the like made plain)."""
    return dumps({"result": value}, "action result")


def serialize_error_payload(exc: BaseException, action: str | None = None) -> str:
    """JSON text carrying the error an action raised (its type, module, message and traceback);
    `action` names the action in it, when given."""
    error = error_to_json(exc)
    if action is not None:
        error["action"] = action
    return dumps({"error": error}, f"error of {action or type(exc).__name__}")


def deserialize_result_payload(payload: str | bytes | None) -> ActionResultPayload:
    """The inverse of `serialize_result_payload` and `serialize_error_payload`."""
    if payload is None:
        return ActionResultPayload(result=None, error=None)
    data = json.loads(payload)
    if not isinstance(data, dict) or not ({"result", "error"} & set(data)):
        raise SerializationError("payload must be a JSON object with a 'result' or an 'error' key")
    return ActionResultPayload(result=data.get("result"), error=data.get("error"))
