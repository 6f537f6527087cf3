from __future__ import annotations


class ChatError(Exception):
    """A Mattermost call failed for good (after the retries the queue allows).

    ``what`` names the operation ("create post", "add reaction"...), ``status`` is the HTTP status
    when the server answered, ``reason`` a short sentence safe to log or post (never a token).
    """

    def __init__(self, what: str, reason: str, status: int | None = None):
        super().__init__(f"{what}: {reason}" + (f" (HTTP {status})" if status else ""))
        self.what = what
        self.reason = reason
        self.status = status
