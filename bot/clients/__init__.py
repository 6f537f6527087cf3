"""Clients of the platform's APIs. Every call has a timeout; failures become ``SourceError``."""

from bot.clients.errors import SourceError

__all__ = ["SourceError"]
