"""Shapes the adapter hands to the engine. Mattermost sends "" for "no root"; we use None."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def _none_if_empty(v: Any) -> Any:
    return v or None


class PostRef(_Model):
    id: str
    channel_id: str
    root_id: str | None = None

    _root = field_validator("root_id", mode="before")(_none_if_empty)

    @property
    def thread_id(self) -> str:
        """The id to pass as ``root_id`` to reply in this post's thread."""
        return self.root_id or self.id


class Post(_Model):
    id: str
    channel_id: str
    root_id: str | None = None
    user_id: str
    message: str = ""
    create_at: int = 0
    update_at: int = 0
    props: dict[str, Any] = Field(default_factory=dict)
    file_ids: list[str] = Field(default_factory=list)

    _root = field_validator("root_id", mode="before")(_none_if_empty)

    @field_validator("props", "file_ids", mode="before")
    @classmethod
    def _null_is_empty(cls, v: Any, info: Any) -> Any:
        if v is None:
            return {} if info.field_name == "props" else []
        return v

    @property
    def ref(self) -> PostRef:
        return PostRef(id=self.id, channel_id=self.channel_id, root_id=self.root_id)


class Reaction(_Model):
    user_id: str
    post_id: str
    emoji_name: str
    create_at: int = 0


class ReactionEvent(_Model):
    user_id: str
    username: str | None = None
    post_id: str
    emoji_name: str
    added: bool


class PostedEvent(_Model):
    post: Post
    username: str | None = Field(None, description="sender, without the leading @")
    channel_name: str | None = None
    channel_type: str | None = Field(None, description="O open, P private, D direct, G group")
