"""Ziet's memory pattern: one action fetches, later actions read what it stored.

`memory.add(...)` inside an action is committed together with the action's result, scoped to the
run, and visible to every later action of the run (and to the workflow), so the notification
step reads the user instead of fetching it again. `send_notification` also gets a mailer through
`Depends`: a generator provider opens it per invocation and closes it after the action.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import cairn
from cairn import Action, Depends, memory, workflow
from examples._show import print_steps

USERS: dict[str, dict[str, str]] = {"u-42": {"id": "u-42", "name": "Grace Hopper", "email": "grace@example.com"}}
CALLS: dict[str, int] = {"fetch_user": 0, "mailer_opened": 0, "mailer_closed": 0}
"""Counters kept by this process, to show what ran how often."""


class Mailer:
    """A pretend mail client with a connection to open and close."""

    def __init__(self) -> None:
        self.open = True
        self.sent: list[dict[str, Any]] = []

    def send(self, to: str, message: str) -> dict[str, Any]:
        if not self.open:
            raise RuntimeError("mailer is closed")
        receipt = {"to": to, "message": message, "message_id": f"msg-{len(self.sent) + 1}"}
        self.sent.append(receipt)
        return receipt

    def close(self) -> None:
        self.open = False


def get_mailer() -> Iterator[Mailer]:
    """Dependency provider: one mailer per action invocation, closed afterwards."""
    mailer = Mailer()
    CALLS["mailer_opened"] += 1
    try:
        yield mailer
    finally:
        mailer.close()
        CALLS["mailer_closed"] += 1


@Action(id="fetch_user", name="Fetch User", description="Fetch user data from database")
def fetch_user(user_id: str) -> None:
    CALLS["fetch_user"] += 1
    user = USERS[user_id]  # stands in for database.get_user(user_id)
    # Store in memory for other actions
    memory.add(key=f"user_{user_id}", value=user)


@Action(id="send_notification", name="Send Notification", description="Send notification email")
def send_notification(user_id: str, message: str, mailer: Annotated[Mailer, Depends(get_mailer)]) -> None:
    # Retrieve from memory (avoid a redundant database call)
    user = memory.get(f"user_{user_id}")
    if not user:
        fetch_user(user_id)  # inside an action this is a plain call, not a new step
        user = memory.get(f"user_{user_id}")
    cairn.context().logger.info("sending to %s (from memory)", user["email"])
    result = mailer.send(user["email"], message)
    memory.add(key="notification_sent", value=result)


@workflow
async def notify_user(user_id: str, message: str) -> str:
    """Fetch a user once, then notify them using what the fetch stored in memory."""
    await fetch_user(user_id)
    await send_notification(user_id, message)
    receipt = memory.get("notification_sent")  # the workflow sees the actions' memory too
    return f"notified {receipt['to']} ({receipt['message_id']})"


async def demo(client: cairn.Client) -> None:
    before = dict(CALLS)
    handle = await client.start(notify_user, "u-42", "Your report is ready")
    print(f"run {handle.id}: {await handle.result(timeout=30)!r}")
    print("steps:")
    await print_steps(handle)
    print(f"memory: {await handle.memory()}")
    delta = {key: CALLS[key] - before[key] for key in CALLS}
    print(
        f"fetch_user ran {delta['fetch_user']} time(s); "
        f"mailer opened {delta['mailer_opened']} and closed {delta['mailer_closed']} time(s)"
    )
    assert delta["fetch_user"] == 1, "send_notification should have read the user from memory"
    assert delta["mailer_opened"] == delta["mailer_closed"] == 1, "the mailer should be opened and closed once"
