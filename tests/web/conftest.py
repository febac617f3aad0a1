"""An in-process HTTP client on the web app, over the shared `client` fixture (both backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

import cairn
from cairn.web import create_app

TOKEN = "test-token-0123456789"


@pytest.fixture
async def http(client: cairn.Client) -> AsyncIterator[httpx.AsyncClient]:
    """The app without a token, as `cairn dashboard` serves it on 127.0.0.1."""
    transport = httpx.ASGITransport(app=create_app(client))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8700") as h:
        yield h


@pytest.fixture
async def authed(client: cairn.Client) -> AsyncIterator[httpx.AsyncClient]:
    """The app with a token, and no credentials sent unless a test adds them."""
    transport = httpx.ASGITransport(app=create_app(client, token=TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://dash.example:8700") as h:
        yield h
