"""What the engine needs from a chat system. ``bot.chat.MattermostChat`` provides it."""

from __future__ import annotations

from typing import Any, Protocol


class PostRefLike(Protocol):
    id: str


class Chat(Protocol):
    async def post(self, channel_id: str, message: str, *, root_id: str | None = None,
                   props: dict[str, Any] | None = None, urgent: bool = False) -> PostRefLike:
        """``urgent``: ahead of the other queued writes (thread roots that replies wait for)."""
        ...

    async def edit(self, post_id: str, message: str) -> None: ...

    async def find_post(self, channel_id: str, key: str, *, since_ms: int,
                        root_id: str | None = None) -> PostRefLike | None:
        """The bot's own post carrying ``props.sopbot_key == key``, created since ``since_ms``
        (epoch ms), in thread ``root_id`` when given, else anywhere in the channel; or None."""
        ...
