"""What the engine needs from a chat system. ``bot.chat.MattermostChat`` provides it."""

from __future__ import annotations

from typing import Any, Protocol


class PostRefLike(Protocol):
    id: str


class Chat(Protocol):
    async def post(self, channel_id: str, message: str, *, root_id: str | None = None,
                   props: dict[str, Any] | None = None) -> PostRefLike: ...

    async def edit(self, post_id: str, message: str) -> None: ...
