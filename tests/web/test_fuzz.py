"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis): whatever the
input, the API answers without a 5xx. On SQLite only, a bounded number of examples per operation."""

from __future__ import annotations

import tempfile
from pathlib import Path

import hypothesis
import pytest
import schemathesis

import cairn
from cairn.web import create_app
from tests.web import webflows
from tests.web.conftest import TOKEN

_DIR = tempfile.mkdtemp(prefix="cairn-fuzz-")
_CLIENT = cairn.Client(f"sqlite:///{Path(_DIR) / 'fuzz.db'}")
schema = schemathesis.openapi.from_asgi(
    "/api/openapi.json", create_app(_CLIENT, token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"}
)
assert webflows.quick  # registered, so some generated names exist


@pytest.mark.timeout(300)
@schema.parametrize()
@hypothesis.settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
)
def test_no_input_makes_the_api_fail(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500, (case.as_curl_command(), response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "message"}, body
