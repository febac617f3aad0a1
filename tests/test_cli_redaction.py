"""The CLI's tables show a run's data as the dashboard does: values of secret-looking fields masked
(SPEC: fields named like secrets never appear in pages); `--json` gives the data as stored."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import cairn
from cairn.cli.main import cli
from tests.web import webflows

SECRETS = ("in-pw", "pw-prop", "mem-key", "mem-nested", "step-tok", "res-tok")


@pytest.fixture
async def secret_run(client: cairn.Client) -> str:
    async with cairn.Worker(client):
        await client.run(webflows.KeepsSecrets, {"user": "ann", "password": "in-pw"}, id="keeps", timeout=30)
    return "keeps"


def test_show_masks_every_secret_looking_field(secret_run: str, db_url: str) -> None:
    args = ["show", secret_run, "--db", db_url]
    for extra in ([], ["--memory"], ["--properties"], ["--events"]):
        shown = CliRunner().invoke(cli, [*args, *extra], terminal_width=400)
        assert shown.exit_code == 0, shown.output
        assert "***" in shown.output
        assert "ann" in shown.output or extra  # the rest is shown as it is
        leaked = [s for s in SECRETS if s in shown.output]
        assert not leaked, f"cairn show {' '.join(extra)} printed {leaked}"


def test_json_output_gives_the_data_as_stored(secret_run: str, db_url: str) -> None:
    shown = CliRunner().invoke(cli, ["show", secret_run, "--db", db_url, "--json", "--memory"])
    assert shown.exit_code == 0, shown.output
    text = json.dumps(json.loads(shown.output))
    assert all(s in text for s in ("in-pw", "pw-prop", "res-tok", "step-tok")), text
