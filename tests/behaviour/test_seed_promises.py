"""Promises of the seed systems' documents (../shared/seeds) that Cairn broke, found by writing the
code their users write: Zenaton's `id()` on a start by name, Waymark's registry lookup by module,
Oryonix's failures reaching the caller as they were raised, and payloads that cannot be JSON."""

from __future__ import annotations

import pytest

import cairn
from tests import seed_promise_flows
from tests.seed_promise_flows import (
    CardError,
    OnboardByEmail,
    UpstreamError,
    WelcomeByEmail,
    bytes_in,
    bytes_out,
    charge_and_catch,
    charge_uncaught,
    refund,
    store_blob,
    upstream_and_catch,
)


async def test_zenaton_id_is_derived_from_json_input_of_a_start_by_name(
    client: cairn.Client, worker: cairn.Worker
) -> None:
    # Started by name (CLI, HTTP, a caller without the code's types): the model arrives as JSON,
    # and `id()` sees it as the run will, a User.
    user = {"email": "ada@example.com", "slack_id": "U1"}
    handle = await client.start("tests.seed_promise_flows.WelcomeByEmail", user)
    assert handle.id == "welcome-ada@example.com"
    assert await handle.result(timeout=30) == "hello ada@example.com"
    again = await client.start("tests.seed_promise_flows.WelcomeByEmail", user=user)
    assert again.id == handle.id and again.created is False  # one instance per id, as Zenaton's

    onboard = await client.start("tests.seed_promise_flows.OnboardByEmail", user)
    assert onboard.id == "onboard-ada@example.com"
    assert await onboard.result(timeout=30) == "hello ada@example.com"
    typed = await client.start(OnboardByEmail, seed_promise_flows.User(email="bob@example.com", slack_id="U2"))
    assert typed.id == "onboard-bob@example.com"
    assert (await client.start(WelcomeByEmail, user=seed_promise_flows.User(**user))).id == handle.id


def test_waymark_registry_get_takes_the_module_and_the_actions_name() -> None:
    # "get: Look up an action by module and name. module: The Python module containing the action.
    # name: The action name (from @action decorator)."
    assert cairn.registry.get(seed_promise_flows, "refund") is refund.defn
    assert cairn.registry.get("tests.seed_promise_flows", "refund") is refund.defn
    assert cairn.registry.get(seed_promise_flows, "refund_card") is refund.defn
    assert cairn.registry.get("tests.seed_promise_flows", "refund_card") is refund.defn
    assert cairn.registry.get(seed_promise_flows, "no_such_action") is None
    assert cairn.registry.get(seed_promise_flows) is None  # a module is not an id


async def test_an_exception_made_with_keyword_arguments_reaches_the_workflow_whole(
    client: cairn.Client, worker: cairn.Worker
) -> None:
    # The workflow catches the action's own type and reads its fields, as the caller of a plain call would.
    assert await client.run(charge_and_catch, 5, timeout=30) == ["CardError", "E42", "[E42] card declined for 5"]
    # Uncaught, it fails the run with that error, not with the AttributeError of a half-made copy.
    handle = await client.start(charge_uncaught, 6)
    with pytest.raises(CardError) as caught:
        await handle.result(timeout=30)
    assert str(caught.value) == "[E42] card declined for 6" and caught.value.code == "E42"
    assert await handle.status() == cairn.RunStatus.FAILED
    # A message made from what no record can carry still reads as it was recorded, with its type.
    assert await client.run(upstream_and_catch, "/v1/x", timeout=30) == [
        UpstreamError.__name__,
        "GET /v1/x failed (status 503)",
    ]


async def test_bytes_that_are_not_utf8_are_a_serialization_error_naming_the_action(
    client: cairn.Client, worker: cairn.Worker
) -> None:
    assert await client.run(bytes_out, True, timeout=30) == "ok"
    out = await client.run(bytes_out, False, timeout=30)
    assert out.startswith("SerializationError: result of tests.seed_promise_flows.raw_bytes") and "bytes" in out
    into = await client.run(bytes_in, timeout=30)
    assert into.startswith("SerializationError: argument 'data' of tests.seed_promise_flows.takes_bytes")
    with pytest.raises(cairn.SerializationError, match=r"argument 'data' of tests\.seed_promise_flows\.store_blob"):
        await client.start(store_blob, b"\xff", id="blob")
    with pytest.raises(cairn.RunNotFound):
        await client.get("blob").status()  # refused before anything was written
    assert await client.run(store_blob, b"text", timeout=30) == 4
