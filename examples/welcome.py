"""Zenaton's WelcomeFlow: a run id derived from the input, properties recorded step by step.

`id(self, email, slack_id)` is called with the same arguments as `run`, so starting the flow twice
for the same user finds the first run instead of welcoming them twice. Public attributes of the
workflow object (`self.email`, `self.slack_id`, `self.sent`) are its properties.
"""

from __future__ import annotations

import cairn
from cairn import Workflow, action, workflow
from examples._show import print_steps

OUTBOX: list[str] = []
"""What the actions "sent" (a stand-in for SendGrid and Slack)."""


@action
def send_welcome_email(email: str) -> str:
    """Send the welcome email."""
    OUTBOX.append(f"email to {email}")
    return f"welcome email sent to {email}"


@action
def introduce_through_slack(slack_id: str) -> str:
    """Introduce the new user in the team's Slack channel."""
    OUTBOX.append(f"slack intro of {slack_id}")
    return f"introduced <@{slack_id}> in #general"


@workflow
class WelcomeFlow(Workflow):
    """Welcome a new user by email, then on Slack."""

    def id(self, email: str, slack_id: str) -> str:
        return email

    async def run(self, email: str, slack_id: str) -> str:
        self.email = email
        self.slack_id = slack_id
        self.sent: list[str] = []
        self.sent.append(await send_welcome_email(email))
        self.sent.append(await introduce_through_slack(slack_id))
        return f"{email} welcomed ({len(self.sent)} messages)"


async def demo(client: cairn.Client) -> None:
    email, slack_id = "ada@example.com", "U024BE7LH"
    outbox_before = len(OUTBOX)

    first = await client.start(WelcomeFlow, email, slack_id)
    runs_after_first = len(await client.list_runs(workflow=WelcomeFlow))
    second = await client.start(WelcomeFlow, email, slack_id)
    runs_after_second = len(await client.list_runs(workflow=WelcomeFlow))
    print(f"first start  -> run id {first.id!r}")
    print(f"second start -> run id {second.id!r} (same run: {second == first})")
    print(f"runs of WelcomeFlow after the first start: {runs_after_first}, after the second: {runs_after_second}")
    assert second == first, "the second start should have returned the first run"
    assert runs_after_second == runs_after_first, "the second start should have started nothing"

    found = WelcomeFlow.where_id(email, client)
    print(f"WelcomeFlow.where_id({email!r}, client) -> {found!r}")
    assert found == first

    print(f"result: {await found.result(timeout=30)!r}")
    sent_now = OUTBOX[outbox_before:]
    print(f"messages sent by this demo: {len(sent_now)} {sent_now}")
    print("steps:")
    await print_steps(found)
    print(f"properties now: {await found.properties()}")
    print("properties, step by step:")
    for entry in await found.properties(history=True):
        print(f"  after activation {entry['activation']}: {entry['properties']}")
