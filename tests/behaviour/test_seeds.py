"""What users of the seed systems reach for first (SPEC's sources, ../shared/seeds): Zenaton's
input-in-__init__ workflows, Waymark's registry form, result payloads and direct workflow calls."""

from __future__ import annotations

import types

import pytest

import cairn
from cairn.registry import Registry
from cairn.serialization import (
    ActionResultPayload,
    deserialize_result_payload,
    error_from_json,
    serialize_error_payload,
    serialize_result_payload,
)
from tests.conftest import eventually
from tests.helpers import status_is
from tests.seedflows import ParallelMathWorkflow, User, WelcomeFlow


async def test_zenaton_welcome_flow_takes_its_input_in_init(client: cairn.Client, worker: cairn.Worker) -> None:
    user = User(email="ada@example.com", slack_id="U1")
    handle = await client.start(WelcomeFlow, user)
    assert handle.id == "ada@example.com"  # from its id(self), as Zenaton's did
    await eventually(lambda: status_is(handle, cairn.RunStatus.WAITING), what="the flow to wait")
    props = await handle.properties()
    assert props == {"email": "ada@example.com", "slack_id": "U1", "foo": "mail:ada@example.com"}
    # The properties set in __init__ are recorded from the first activation on.
    first = (await handle.properties(history=True))[0]["properties"]
    assert first["email"] == "ada@example.com" and first["slack_id"] == "U1"
    await WelcomeFlow.where_id("ada@example.com", client=client).pause()
    assert await handle.status() == cairn.RunStatus.PAUSED
    await WelcomeFlow.where_id("ada@example.com", client=client).resume()
    await handle.signal("go")
    assert await handle.result(timeout=30) == "slack:U1"
    # Its input schema is __init__'s, so a start by name binds the same way.
    (info,) = [w for w in await client.list_workflows() if w.name == "tests.seedflows.WelcomeFlow"]
    assert '"user"' in info.input_schema


async def test_waymark_workflow_with_run_action_runs_on_a_worker(client: cairn.Client, worker: cairn.Worker) -> None:
    assert await client.run(ParallelMathWorkflow, 5, timeout=30) == "5! = 120, fib(5) = 5"


async def test_waymark_workflow_called_directly_in_a_test_is_a_plain_call() -> None:
    assert await ParallelMathWorkflow().run(6) == "6! = 720, fib(6) = 8"


def test_waymark_registry_register_module_name_func() -> None:
    module = types.ModuleType("billing")

    async def charge(cents: int) -> str:
        return f"ch_{cents}"

    async def other(cents: int) -> str:
        return ""

    defn = cairn.registry.register(module, "charge", charge)
    assert defn.id == "billing.charge" and defn.name == "charge"
    assert cairn.registry.get("billing", "charge") is defn and cairn.registry.get("billing.charge") is defn
    assert "billing.charge" in cairn.registry.names()
    assert defn in cairn.registry.entries()
    assert cairn.registry.register("billing", "charge", charge) is not None  # the same function again: fine
    with pytest.raises(ValueError, match="already registered"):
        cairn.registry.register(module, "charge", other)
    private = Registry()
    private.register("m", "f", charge)
    private.reset()
    assert private.names() == []


def test_result_payloads_round_trip() -> None:
    text = serialize_result_payload(User(email="a@b.c", slack_id="U2"))
    assert deserialize_result_payload(text) == ActionResultPayload({"email": "a@b.c", "slack_id": "U2"}, None)
    assert deserialize_result_payload(text.encode()).result == {"email": "a@b.c", "slack_id": "U2"}
    assert deserialize_result_payload(None) == ActionResultPayload(None, None)

    try:
        raise KeyError("missing")
    except KeyError as exc:
        failed = serialize_error_payload(exc)
        named = serialize_error_payload(exc, "billing.charge")
    error = deserialize_result_payload(failed).error
    assert error["type"] == "KeyError" and "missing" in error["message"] and "Traceback" in error["traceback"]
    assert deserialize_result_payload(named).error["action"] == "billing.charge"
    assert isinstance(error_from_json(error), KeyError)
    with pytest.raises(cairn.SerializationError):
        deserialize_result_payload('{"neither": 1}')
