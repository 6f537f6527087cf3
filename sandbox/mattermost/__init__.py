"""Loopback Mattermost server that the real mattermostautodriver talks to unmodified.

`MattermostState` holds the team, channels, users (`sop-bot`, `alice`, `bob`) with tokens,
posts, reactions, files, the `/sop` slash command and dialogs; `make_app(state)` serves it.
"""

from sandbox.mattermost.errors import AppError
from sandbox.mattermost.models import Post, Reaction
from sandbox.mattermost.server import STATE_KEY, make_app
from sandbox.mattermost.state import MattermostState, OpenedDialog, RateLimit

__all__ = ["STATE_KEY", "AppError", "MattermostState", "OpenedDialog", "Post", "RateLimit", "Reaction", "make_app"]
