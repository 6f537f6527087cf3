"""Mattermost adapter: REST calls through one ordered, rate-limited write queue, and a websocket
supervisor for reactions and posts. Knows nothing of SOPs.

    chat = MattermostChat(settings.mattermost)          # WriteQueue(rate_limit_per_s) inside
    await chat.start()                                  # users/me + team; ChatError if refused
    ref = await chat.post(await chat.channel_id("sop-alerts"), text)
    await chat.post(ref.channel_id, "details", root_id=ref.thread_id)
    events = EventSupervisor.for_chat(chat, on_reaction=..., on_posted=..., on_reconnect=...)
    task = asyncio.create_task(events.run())
    ...
    await events.stop(); await task; await chat.close()

Metrics: ``chat.queue.depth / sent / rate_limited / retries / failed / waited_s /
rate_limited_wait_s`` and ``events.reconnects / drops / events / connected``.
"""

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
