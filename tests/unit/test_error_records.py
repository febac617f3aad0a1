"""An action's exception as its workflow gets it back: re-created from its record (type, message,
arguments, attributes), as the SPEC promises, for the shapes of exception classes people write."""

from __future__ import annotations

import pickle
import subprocess

import pydantic
import pytest

import cairn
from cairn.serialization import MAX_ATTRIBUTE_CHARS, error_from_json, error_to_json
from cairn.types import Json


class PaymentFailed(Exception):
    """A constructor that makes its message from a field: it came back as "payment failed with code
    payment failed with code 402" (called again with its message), its code that text."""

    def __init__(self, code: int) -> None:
        super().__init__(f"payment failed with code {code}")
        self.code = code


class CardError(Exception):
    """A field besides the message, with a default: it came back as the default."""

    def __init__(self, message: str, code: str | None = None, status: int = 500) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Pair(Exception):
    """Arguments passed on as they came: re-created by calling the class, as pickle does."""

    def __init__(self, left: str, right: int) -> None:
        super().__init__(left, right)
        self.total = len(left) + right


def again(exc: BaseException) -> BaseException:
    return error_from_json(error_to_json(exc))


def test_a_message_made_from_a_field_comes_back_once_with_its_field() -> None:
    back = again(PaymentFailed(402))
    assert type(back) is PaymentFailed and str(back) == "payment failed with code 402"
    assert back.code == 402  # type: ignore[attr-defined]
    assert str(again(back)) == "payment failed with code 402"  # and again at the next hop


def test_fields_besides_the_message_come_back_not_as_their_defaults() -> None:
    back = again(CardError("card declined", code="card_declined", status=404))
    assert type(back) is CardError and str(back) == "card declined"
    assert (back.code, back.status) == ("card_declined", 404)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "exc",
    [
        Pair("ab", 3),
        KeyError("missing"),
        OSError(2, "No such file or directory"),
        ValueError("plain"),
        cairn.TransientError("try again"),
    ],
    ids=repr,
)
def test_exceptions_made_by_their_arguments_come_back_equal(exc: BaseException) -> None:
    back = again(exc)
    assert type(back) is type(exc) and back.args == exc.args and str(back) == str(exc)
    assert {k: v for k, v in vars(back).items() if not k.startswith("_")} == {
        k: v for k, v in vars(exc).items() if not k.startswith("_")
    }


class Refused(Exception):
    """A `__reduce__` of its own, as pickle-friendly exceptions with a made message have (Cairn's
    RunIdConflict is one): it came back saying its constructor's arguments as a bare tuple."""

    def __init__(self, who: str, why: str) -> None:
        super().__init__(f"{who} was refused: {why}")
        self.who, self.why = who, why

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.who, self.why))


@pytest.mark.parametrize(
    "exc", [Refused("ada", "no card"), cairn.RunIdConflict("order-1", "shop.refund", "shop.checkout")], ids=repr
)
def test_an_exception_with_a_reduce_of_its_own_comes_back_with_its_message(exc: BaseException) -> None:
    back = again(exc)
    assert type(back) is type(exc) and str(back) == str(exc) and back.args == exc.args
    assert str(again(back)) == str(exc)


class NeedsArguments(Exception):
    """A `__new__` of its own that takes arguments the record does not hold (as pydantic's
    ValidationError's does): re-creating it raised TypeError, which failed the run instead."""

    def __new__(cls, title: str, errors: list[str]) -> NeedsArguments:
        made = super().__new__(cls, f"{title}: {len(errors)} errors")
        made.errors = errors  # type: ignore[attr-defined]
        return made

    def __init__(self, title: str, errors: list[str]) -> None:
        super().__init__(f"{title}: {len(errors)} errors")


def test_an_exception_that_cannot_be_made_again_comes_back_as_a_catchable_action_error() -> None:
    back = again(NeedsArguments("order", ["a", "b"]))
    assert isinstance(back, cairn.ActionError) and isinstance(back, Exception)
    assert str(back) == "order: 2 errors" and back.type_name == "NeedsArguments"
    assert type(back).__name__ == "NeedsArguments"


def test_a_validation_error_comes_back_as_a_value_error() -> None:
    class Order(pydantic.BaseModel):
        quantity: int

    with pytest.raises(pydantic.ValidationError) as raised:
        Order(quantity="many")  # type: ignore[arg-type]
    back = again(raised.value)
    assert isinstance(back, ValueError) and isinstance(back, cairn.ActionError)
    assert str(back) == str(raised.value)


def test_an_exception_group_comes_back_as_a_group_of_its_members() -> None:
    back = again(BaseExceptionGroup("several", [ValueError("a"), KeyError("b"), SystemExit(3)]))
    assert isinstance(back, ExceptionGroup) and str(back) == "several (3 sub-exceptions)"
    first, second, third = back.exceptions
    assert (type(first), first.args) == (ValueError, ("a",)) and (type(second), second.args) == (KeyError, ("b",))
    assert isinstance(third, cairn.ActionError) and str(third) == "SystemExit: 3"  # never a SystemExit


def _not_loaded(record: Json) -> Json:
    """The record as a process that has not loaded the type's module reads it."""
    assert isinstance(record, dict)
    return {**record, "module": "not_loaded_here_" + str(record["module"])}


@pytest.mark.parametrize("exc", [CardError("card declined", code="card_declined"), PaymentFailed(402)], ids=repr)
def test_a_type_not_loaded_says_what_the_loaded_type_says(exc: Exception) -> None:
    """A replay in a process without the type's module loaded got `ActionError("CardError: card
    declined")`: workflow code that said the error diverged from its own journal."""
    record = error_to_json(exc)
    loaded, unloaded = error_from_json(record), error_from_json(_not_loaded(record))
    assert str(unloaded) == str(loaded) == str(exc)
    assert type(unloaded).__name__ == type(loaded).__name__ and type(unloaded).__qualname__ == type(loaded).__qualname__
    assert unloaded.code == loaded.code  # type: ignore[attr-defined]
    assert isinstance(unloaded, cairn.ActionError) and unloaded.type_name == type(exc).__qualname__
    again_recorded = error_to_json(unloaded)
    assert (again_recorded["type"], again_recorded["message"]) == (record["type"], record["message"])


class OwnBaseError(BaseException):
    pass


def test_a_base_exception_comes_back_the_same_loaded_or_not() -> None:
    record = error_to_json(OwnBaseError("not an Exception"))
    for back in (error_from_json(record), error_from_json(_not_loaded(record))):
        assert type(back) is cairn.ActionError and str(back) == "OwnBaseError: not an Exception"


def test_bytes_and_long_texts_of_an_exception_are_kept() -> None:
    """A CalledProcessError's `stderr` (bytes, or text over 1,000 characters) came back None."""
    command = ["tool", "--check"]
    back = again(subprocess.CalledProcessError(2, command, output=b"", stderr=b"fatal: bad config\n"))
    assert isinstance(back, subprocess.CalledProcessError)
    assert (back.returncode, back.cmd, back.output, back.stderr) == (2, command, b"", b"fatal: bad config\n")
    long = "error line\n" * 2000
    back = again(subprocess.CalledProcessError(2, command, stderr=long))
    assert isinstance(back, subprocess.CalledProcessError)
    assert back.stderr.startswith(long[:MAX_ATTRIBUTE_CHARS]) and "more characters cut" in back.stderr


def test_an_exception_whose_arguments_it_does_not_say_comes_back_saying_its_message() -> None:
    """A UnicodeDecodeError's bytes did not survive the record: it came back saying ''."""
    with pytest.raises(UnicodeDecodeError) as raised:
        b"\xff\xfe".decode("utf-8")
    back = again(raised.value)
    assert isinstance(back, UnicodeDecodeError) and str(back) == str(raised.value)
    assert (back.encoding, back.start, back.end, back.reason) == ("utf-8", 0, 1, "invalid start byte")


def test_a_long_text_an_exception_was_made_with_comes_back_whole() -> None:
    """The cut copy kept among its attributes was written over the whole one its arguments gave."""
    stderr = "E" * (2 * MAX_ATTRIBUTE_CHARS)
    back = error_from_json(error_to_json(subprocess.CalledProcessError(2, ["tool"], "out", stderr)))
    assert isinstance(back, subprocess.CalledProcessError) and back.stderr == stderr


def test_what_stands_in_for_a_type_not_loaded_can_be_pickled_to_another_process() -> None:
    """A class made here cannot be imported by the process that unpickles it (a pool's worker)."""
    record: Json = {"type": "LibError", "module": "somelib.errors", "message": "boom", "traceback": "tb", "v": 2}
    raised = error_from_json(record, cairn.WorkflowFailed)
    back = pickle.loads(pickle.dumps(raised))
    assert isinstance(back, cairn.WorkflowFailed) and str(back) == "boom"
    assert (back.type_name, back.remote_traceback) == ("LibError", "tb")


def test_a_record_written_before_stand_ins_comes_back_as_it_did_then() -> None:
    """A run in flight across the upgrade replays the errors it saw: a type not loaded as
    `ActionError("Type: message")`, a str() as it came out (a UnicodeDecodeError's said nothing)."""
    record: Json = {"type": "LibError", "module": "somelib.errors", "message": "boom", "traceback": "tb"}
    back = error_from_json(record)
    assert type(back) is cairn.ActionError and str(back) == "LibError: boom"
    decode: Json = {"type": "UnicodeDecodeError", "module": "builtins", "message": "'utf-8' codec ...", "traceback": ""}
    assert str(error_from_json(decode)) == ""
    assert str(error_from_json({**decode, "v": 2})) == "'utf-8' codec ..."
