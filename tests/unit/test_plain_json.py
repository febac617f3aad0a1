"""Plain JSON data is written in one pass by pydantic-core (`_plain_text`), and must come out as the
very text the full path (`to_jsonable`, then the stdlib encoder) writes: replay compares stored text,
and journals written before must still match. Thousands of seeded random values, with the cases
where the two encoders differ (non-ASCII, DEL, floats under 1e-4, NaN, huge ints) made common."""

from __future__ import annotations

import math
import random
import struct
from typing import Any

import pytest

from cairn import serialization
from cairn.serialization import MAX_NESTING, dumps, text_of, to_jsonable

_FLOATS = [0.0, -0.0, 0.1, 0.5, 1.0, 100.0, 1e15, 1e16, 1e17, 1e22, 1e-4, 1.5e-4, 9.99e-5, 1e-5, 1.5e-5]
_FLOATS += [1e-6, 1.234e-7, 1e-9, 1e-10, 1e-100, 5e-324, 2.2e-308, 1.7976931348623157e308, 9007199254740993.0]
_FLOATS += [123456789012345680.0, 100000.00001, -2.5e-8, math.nan, math.inf, -math.inf]
_INTS = [0, 1, -1, 2**31, 2**53 + 1, 2**63, 2**64, -(2**64) - 1, 10**30, -(10**300), 10**4300, 10**4301]
_STRINGS = ["", "a", "NaN", "Infinity", "e-5", "1e-7", "0.00001", "x.0000y", '"\\/', "\x00\x1f\b\f\n\r\t", "\x7f"]
_STRINGS += ["é", "ß€", "\u2028\u2029", "😀", "\ud800", "\udfff x", "\ufeff", "日本語", "0" * 4302]


def _string(rng: random.Random) -> str:
    if rng.random() < 0.4:
        return rng.choice(_STRINGS)
    pools = ((0x20, 0x7E), (0, 0x7F), (0x80, 0x7FF), (0x800, 0xFFFF), (0x10000, 0x10FFFF))
    low, high = rng.choice(pools)
    return "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(0, 12)))


def _float(rng: random.Random) -> float:
    pick = rng.random()
    if pick < 0.3:
        return rng.choice(_FLOATS)
    if pick < 0.6:
        return float(struct.unpack("d", rng.getrandbits(64).to_bytes(8, "little"))[0])
    return round(rng.uniform(-1e6, 1e6), rng.randint(0, 12)) * 10.0 ** rng.randint(-30, 30)


def _value(rng: random.Random, depth: int) -> Any:
    pick = rng.random()
    if depth > 0 and pick < 0.35:
        return [_value(rng, depth - 1) for _ in range(rng.randint(0, 5))]
    if depth > 0 and pick < 0.6:
        return {_string(rng): _value(rng, depth - 1) for _ in range(rng.randint(0, 5))}
    leaf = rng.random()
    if leaf < 0.25:
        return _string(rng)
    if leaf < 0.5:
        return _float(rng)
    if leaf < 0.7:
        return rng.choice(_INTS) if rng.random() < 0.3 else rng.randint(-(2**70), 2**70)
    if leaf < 0.98:
        return rng.choice([True, False, None, [], {}, [[]], {"": {}}])
    return rng.choice([(1, "a"), {3, 1, 2}, b"bytes", {1: "int key"}])  # not plain: the full path's


def _outcome(write: Any, value: Any) -> tuple[str, ...]:
    try:
        return ("text", write(value))
    except Exception as exc:
        return ("error", type(exc).__name__, str(exc))


def _full_path(value: Any) -> str:
    return text_of(to_jsonable(value, "value"), "value")


def _nested(depth: int) -> Any:
    value: Any = [1.5]
    for i in range(depth - 1):
        value = {"k": value} if i % 2 else [value]
    return value


@pytest.mark.parametrize("limit", [None, 300])
def test_plain_values_are_written_as_the_full_path_writes_them(
    monkeypatch: pytest.MonkeyPatch, limit: int | None
) -> None:
    if limit is not None:  # the payload limit's refusal, and its UTF-8 measure, are the full path's
        monkeypatch.setattr(serialization, "max_payload_bytes", lambda: limit)
    rng = random.Random(20261207)
    values: list[Any] = [_value(rng, rng.randint(0, 4)) for _ in range(6000)]
    values += [[v] for v in _FLOATS + _INTS + _STRINGS] + [{"k": v} for v in _FLOATS + _STRINGS]
    values += [_nested(MAX_NESTING - 1), _nested(MAX_NESTING), _nested(MAX_NESTING + 1), _nested(MAX_NESTING + 5)]
    for value in values:
        assert _outcome(dumps, value) == _outcome(_full_path, value), value


def test_a_big_plain_result_skips_the_stdlib_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """0.6 MB of plain data took 25 ms in the full path, 7 in one pass: kept off the slow path."""

    class Refuse:
        def encode(self, *args: Any) -> str:
            raise AssertionError("written by the stdlib encoder")

    value = {f"k{j}": [j, str(j), j * 0.5] for j in range(20_000)}
    expected = dumps(value)
    monkeypatch.setattr(serialization, "_ENCODER", Refuse())
    monkeypatch.setattr(serialization, "to_jsonable", Refuse().encode)
    assert dumps(value) == expected
