from __future__ import annotations


class SourceError(Exception):
    """A data source failed or timed out. Handlers turn it into an "unknown" finding.

    ``reason`` is a short, human sentence safe to post (never a secret or a request body).
    """

    def __init__(self, source: str, reason: str, status: int | None = None):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.status = status
