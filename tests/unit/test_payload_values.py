"""Values that pydantic writes out but that would not come back as they went in: a secret's mask
(refused, naming it) and a set's order (sorted, so one text in every process)."""

from __future__ import annotations

import dataclasses

import pydantic
import pytest

from cairn.errors import SerializationError
from cairn.serialization import Signature, dumps


class Login(pydantic.BaseModel):
    user: str
    password: pydantic.SecretStr


class Revealed(pydantic.BaseModel):
    password: pydantic.SecretStr

    @pydantic.field_serializer("password", when_used="json")
    def _clear(self, value: pydantic.SecretStr) -> str:
        return value.get_secret_value()


@dataclasses.dataclass
class Keyed:
    key: pydantic.SecretBytes


@pytest.mark.parametrize(
    "value",
    [
        pydantic.SecretStr("hunter2"),
        {"login": Login(user="ada", password=pydantic.SecretStr("hunter2"))},
        [Keyed(pydantic.SecretBytes(b"k3y"))],
    ],
)
def test_a_secret_that_would_come_back_as_its_mask_is_refused_naming_it(value: object) -> None:
    with pytest.raises(SerializationError, match=r"argument 'x' holds a Secret\w+.*mask '\*{10}'"):
        dumps(value, "argument 'x'")


def test_a_secret_written_out_by_its_own_serializer_or_empty_is_kept() -> None:
    assert dumps(Revealed(password=pydantic.SecretStr("hunter2"))) == '{"password":"hunter2"}'
    assert dumps(pydantic.SecretStr("")) == '""'


def test_an_action_call_with_a_secret_in_its_model_fails_at_the_call() -> None:
    def log_in(login: Login) -> None: ...

    signature = Signature.of(log_in, "auth.log_in")
    with pytest.raises(SerializationError, match=r"argument 'login' of auth\.log_in holds a SecretStr"):
        signature.encode_args([Login(user="ada", password=pydantic.SecretStr("hunter2"))], {})


def test_sets_are_written_sorted_wherever_they_are() -> None:
    class Tagged(pydantic.BaseModel):
        tags: set[str]
        groups: list[frozenset[int]]

    @dataclasses.dataclass
    class Box:
        inside: set[str]

    value = {
        "strings": {"pear", "apple", "fig"},
        "numbers": frozenset({10, 2, -1, 3.5}),
        "mixed": {"b", 2, None, True, ("t", 1)},
        "model": Tagged(tags={"z", "a"}, groups=[frozenset({9, 8})]),
        "box": [Box({"y", "x"})],
    }
    assert dumps(value) == (
        '{"strings":["apple","fig","pear"],"numbers":[-1,2,3.5,10],"mixed":[2,"b",["t",1],null,true],'
        '"model":{"tags":["a","z"],"groups":[[8,9]]},"box":[{"inside":["x","y"]}]}'
    )
