"""The HTTP doors: the Inngest-compatible Event API and the JSON API."""

from tidings.server.app import create_app

__all__ = ["create_app"]
