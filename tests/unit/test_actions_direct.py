"""Actions called outside any workflow run directly, with Depends resolved; the registry's rules."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import pytest

import cairn
from cairn import action, registry
from cairn.names import importable_module
from tests import flows


def test_sync_action_called_directly_returns_value() -> None:
    assert flows.double(4) == 8


async def test_async_action_called_directly_resolves_depends() -> None:
    before = len(flows.CLEANUPS)
    assert await flows.greet("bob") == "hello bob"
    assert flows.CLEANUPS[before:] == ["greeter"]


def test_async_action_with_depends_from_sync_code() -> None:
    assert asyncio.run(flows.greet("eve")) == "hello eve"


def test_context_outside_action_is_a_clear_error() -> None:
    with pytest.raises(cairn.NotInWorkflow, match=r"only available inside an action"):
        cairn.context()


def test_memory_outside_workflow_is_a_clear_error() -> None:
    with pytest.raises(cairn.NotInWorkflow, match=r"handle.memory"):
        cairn.memory.get("x")


def test_registry_lists_and_rejects_duplicate_ids() -> None:
    assert "tests.flows.add_one" in registry.names()
    assert registry.get("tests.flows.add_one") is flows.add_one.defn
    assert flows.add_one.defn in registry.entries()
    with pytest.raises(ValueError, match=r"already registered"):

        @action(id="tests.flows.add_one")
        async def impostor(x: int) -> int:
            return x


def test_two_functions_of_one_name_under_one_id_are_refused_and_the_same_one_again_is_not() -> None:
    """The registry told definitions apart by module and qualified name only: a second lambda
    registered as `billing.charge`, or a second `notify` in one scope under one id, replaced the
    first without a word (the first one's runs then ran the second)."""
    registry.register("tests.unit.billing", "charge", lambda: "first")
    with pytest.raises(ValueError, match=r"action id 'tests.unit.billing.charge' is already registered"):
        registry.register("tests.unit.billing", "charge", lambda: "second")
    assert registry.get("tests.unit.billing.charge").fn() == "first"  # type: ignore[union-attr]

    def declare() -> Any:
        @action(id="tests.unit.notify")
        async def notify() -> str:
            return "email"

        return notify

    declare()
    declare()  # the same definition made again (as a module imported again would): it replaces it
    with pytest.raises(ValueError, match=r"already registered by .*notify \(.*test_actions_direct.py:\d+\)"):

        @action(id="tests.unit.notify")
        async def notify() -> str:
            return "sms"


def test_action_options_are_kept() -> None:
    @action(id="tests.unit.options", name="Options", description="Shows options", timeout=3, queue="q1")
    async def options_action(x: int) -> int:
        return x

    d = options_action.defn
    assert (d.id, d.name, d.description, d.timeout, d.queue) == (
        "tests.unit.options",
        "Options",
        "Shows options",
        3.0,
        "q1",
    )
    assert cairn.Action is cairn.action


def test_registry_reset_clears_and_restores() -> None:
    saved = registry.entries()
    try:
        registry.reset()
        assert registry.names() == []
    finally:
        for d in saved:
            registry.register(d)
    assert "tests.flows.add_one" in registry.names()


def test_a_timeout_on_a_plain_def_action_on_a_thread_warns_and_names_isolate() -> None:
    with pytest.warns(cairn.ThreadTimeoutWarning, match=r"tests\.unit\.on_thread .*timeout=2s.*isolate=True") as seen:

        @action(id="tests.unit.on_thread", timeout=2)
        def on_thread() -> None:
            return None

    assert issubclass(seen[0].category, UserWarning)
    assert seen[0].filename == __file__  # points at the user's declaration


def test_no_warning_where_the_timeout_can_stop_the_attempt() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @action(id="tests.unit.async_timeout", timeout=2)
        async def stoppable() -> None:
            return None

        @action(id="tests.unit.isolated_timeout", timeout=2, isolate=True)
        def isolated() -> None:
            return None

        @action(id="tests.unit.no_timeout")
        def untimed() -> None:
            return None


def test_a_notebook_cell_edited_and_run_again_replaces_its_definitions() -> None:
    """Jupyter compiles each cell as a file of its own: an edited cell run again defined its action
    again from another file, which raised "already registered", and the next cell ran the old code.
    A script's `__main__` is one file: two definitions of one name there are still refused."""

    def cell(source: str, filename: str) -> Any:
        namespace: dict[str, Any] = {"__name__": "__main__", "action": action}
        exec(compile(source, filename, "exec"), namespace)
        return namespace["shout"]

    first = cell("@action\nasync def shout(s: str) -> str:\n    return s.upper()\n", "/tmp/ipykernel_1/11.py")
    edited = cell("@action\nasync def shout(s: str) -> str:\n    return s.upper() + '!'\n", "/tmp/ipykernel_1/22.py")
    assert registry.get(first.defn.id) is edited.defn
    with pytest.raises(ValueError, match=r"already registered"):
        cell("@action\nasync def shout(s: str) -> str:\n    return s\n\n\n" * 2, "/tmp/ipykernel_1/22.py")
    # `python -m shop`: shop/__main__.py's `checkout` has the id of shop/__init__.py's (the script
    # is imported as `shop`): two definitions, one of them a module's, and refused as before.
    script = importable_module("__main__")
    yell = "@action\nasync def yell(s: str) -> str:\n    return s\n"
    exec(compile(yell, "/app/shop/__init__.py", "exec"), {"__name__": script, "action": action})
    with pytest.raises(ValueError, match=r"already registered"):
        exec(compile(yell, "/app/shop/__main__.py", "exec"), {"__name__": "__main__", "action": action})
