"""`await cairn.send_signal(...)` in a workflow delivers the signal, or raises where it is awaited
when it cannot be: RunNotFound for a run that never was, IllegalTransition for one that has
finished (as `handle.signal` does outside a workflow). A signal is never dropped unseen. Both
backends, async and plain `def` workflows."""

from __future__ import annotations

import pytest

import cairn
from cairn import RunStatus, StepKind, StepStatus
from tests import signal_send_flows as sf

pytestmark = [pytest.mark.usefixtures("worker"), pytest.mark.timeout(60)]


async def test_a_signal_sent_from_a_workflow_reaches_a_waiting_run(client: cairn.Client) -> None:
    target = await client.start(sf.receiver, id="rx-1")
    assert await (await client.start(sf.sender, "rx-1")).result(timeout=15) == "sent"
    assert await target.result(timeout=15) == {"from": "sender"}


async def test_a_signal_to_a_run_that_does_not_exist_is_run_not_found_in_the_workflow(client: cairn.Client) -> None:
    handle = await client.start(sf.sender, "nobody")
    assert await handle.result(timeout=15) == "not found: no run with id 'nobody'; the signal 'note' was not sent"
    (send,) = [s for s in await handle.steps() if s.kind == StepKind.SEND_SIGNAL]
    assert send.status == StepStatus.FAILED
    with pytest.raises(cairn.RunNotFound):
        await client.get("nobody").status()  # nothing was created for it


async def test_a_signal_to_a_finished_run_is_refused_in_the_workflow(client: cairn.Client) -> None:
    target = await client.start(sf.receiver, id="rx-2")
    await target.signal("note", "first")
    assert await target.result(timeout=15) == "first"
    result = await (await client.start(sf.sender, "rx-2")).result(timeout=15)
    assert result.startswith("refused: cannot signal run 'rx-2': it is completed")


async def test_an_unhandled_refusal_fails_the_sender_with_it(client: cairn.Client) -> None:
    handle = await client.start(sf.careless_sender, "nobody")
    with pytest.raises(cairn.RunNotFound, match="no run with id 'nobody'"):
        await handle.result(timeout=15)
    assert await handle.status() == RunStatus.FAILED


async def test_a_plain_def_workflow_gets_the_refusal_as_it_sends(client: cairn.Client) -> None:
    assert await (await client.start(sf.plain_sender, "nobody")).result(timeout=15) == "not found"
    target = await client.start(sf.receiver, id="rx-3")
    assert await (await client.start(sf.plain_sender, "rx-3")).result(timeout=15) == "sent"
    assert await target.result(timeout=15) == {"from": "plain"}


async def test_a_send_not_awaited_is_sent_all_the_same(client: cairn.Client) -> None:
    target = await client.start(sf.receiver, id="rx-4")
    assert await (await client.start(sf.fire_and_forget, "rx-4")).result(timeout=15) == "done"
    assert await target.result(timeout=15) == {"from": "forgetful"}


async def test_outside_a_workflow_the_same_refusals(client: cairn.Client) -> None:
    with pytest.raises(cairn.RunNotFound, match="no run with id 'nobody'; the signal 'note' was not sent"):
        await client.get("nobody").signal("note", 1)
    target = await client.start(sf.receiver, id="rx-5")
    await target.signal("note", 1)
    await target.result(timeout=15)
    with pytest.raises(cairn.IllegalTransition, match="a finished run takes no signals"):
        await target.signal("note", 2)
