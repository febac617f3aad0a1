"""An action's exception as its workflow gets it back: re-created from its record (type, message,
arguments, attributes), as the SPEC promises, for the shapes of exception classes people write."""

from __future__ import annotations

import pytest

import cairn
from cairn.serialization import error_from_json, error_to_json


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
