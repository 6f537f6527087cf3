"""Mattermost adapter: REST calls through one ordered, rate-limited write queue, and a websocket
supervisor for reactions and posts. Knows nothing of SOPs."""

from bot.chat.errors import ChatError
from bot.chat.events import EventSupervisor
from bot.chat.long_messages import MAX_POST_RUNES
from bot.chat.mattermost import MattermostChat
from bot.chat.models import Post, PostedEvent, PostRef, Reaction, ReactionEvent
from bot.chat.queue import WriteQueue

__all__ = [
    "ChatError", "EventSupervisor", "MAX_POST_RUNES", "MattermostChat", "Post", "PostRef",
    "PostedEvent", "Reaction", "ReactionEvent", "WriteQueue",
]
