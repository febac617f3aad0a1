"""The HTTP API and web dashboard: `create_app(client, token=None)` returns the ASGI app."""

from __future__ import annotations

from cairn.web.app import create_app

__all__ = ["create_app"]
