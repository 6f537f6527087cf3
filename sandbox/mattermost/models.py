"""Wire shapes of the Mattermost API v4 objects the fake stores and serves (field names as the
real server's JSON), plus the request bodies it accepts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from sandbox.mattermost.ids import new_id, now_ms

MAX_POST_RUNES = 16383  # model.PostMessageMaxRunesV2


class _Entity(BaseModel):
    """The id and timestamps (ms) users, teams and channels carry, in the real field names."""

    id: str = Field(default_factory=new_id)
    create_at: int = Field(default_factory=now_ms)
    update_at: int = Field(default_factory=now_ms)
    delete_at: int = 0


class User(_Entity):
    username: str
    auth_data: str = ""
    auth_service: str = ""
    email: str = ""
    email_verified: bool = True
    nickname: str = ""
    first_name: str = ""
    last_name: str = ""
    position: str = ""
    roles: str = "system_user"
    locale: str = "en"
    is_bot: bool = False
    bot_description: str = ""
    props: dict[str, Any] = Field(default_factory=dict)
    notify_props: dict[str, str] = Field(default_factory=dict)
    timezone: dict[str, str] = Field(
        default_factory=lambda: {"automaticTimezone": "", "manualTimezone": "", "useAutomaticTimezone": "true"}
    )
    mfa_active: bool = False


class Team(_Entity):
    display_name: str
    name: str
    description: str = ""
    email: str = ""
    type: str = "O"
    company_name: str = ""
    allowed_domains: str = ""
    invite_id: str = Field(default_factory=new_id)
    allow_open_invite: bool = False


class Channel(_Entity):
    team_id: str
    type: str = "O"
    display_name: str
    name: str
    header: str = ""
    purpose: str = ""
    last_post_at: int = 0
    total_msg_count: int = 0
    extra_update_at: int = 0
    creator_id: str = ""


class ChannelMember(BaseModel):
    channel_id: str
    user_id: str
    roles: str = "channel_user"
    last_viewed_at: int = 0
    msg_count: int = 0
    mention_count: int = 0
    notify_props: dict[str, str] = Field(
        default_factory=lambda: {"desktop": "default", "email": "default", "mark_unread": "all", "push": "default"}
    )
    last_update_at: int = Field(default_factory=now_ms)
    scheme_user: bool = True
    scheme_admin: bool = False


class Reaction(BaseModel):
    user_id: str
    post_id: str
    emoji_name: str
    create_at: int = Field(default_factory=now_ms)


class FileInfo(BaseModel):
    id: str = Field(default_factory=new_id)
    user_id: str
    post_id: str = ""
    channel_id: str = ""
    create_at: int = Field(default_factory=now_ms)
    update_at: int = Field(default_factory=now_ms)
    delete_at: int = 0
    name: str
    extension: str
    size: int
    mime_type: str
    width: int = 0
    height: int = 0
    has_preview_image: bool = False
    mini_preview: str | None = None


class Post(BaseModel):
    id: str = Field(default_factory=new_id)
    create_at: int = Field(default_factory=now_ms)
    update_at: int = 0
    edit_at: int = 0
    delete_at: int = 0
    is_pinned: bool = False
    user_id: str
    channel_id: str
    root_id: str = ""
    original_id: str = ""
    message: str = ""
    type: str = ""
    props: dict[str, Any] = Field(default_factory=dict)
    hashtags: str = ""
    file_ids: list[str] = Field(default_factory=list)
    pending_post_id: str = ""
    reply_count: int = 0
    last_reply_at: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)


class SlashCommand(BaseModel):
    id: str = Field(default_factory=new_id)
    token: str = Field(default_factory=new_id)
    create_at: int = Field(default_factory=now_ms)
    update_at: int = Field(default_factory=now_ms)
    delete_at: int = 0
    creator_id: str = ""
    team_id: str
    trigger: str
    method: str = "P"
    username: str = ""
    icon_url: str = ""
    auto_complete: bool = True
    auto_complete_desc: str = ""
    auto_complete_hint: str = ""
    display_name: str = ""
    description: str = ""
    url: str


# -- request bodies ----------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CreatePostBody(_Body):
    channel_id: str
    message: str = ""
    root_id: str = ""
    file_ids: list[str] = Field(default_factory=list)
    props: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    pending_post_id: str = ""


class EphemeralPostBody(_Body):
    user_id: str
    post: CreatePostBody


class PatchPostBody(_Body):
    message: str | None = None
    props: dict[str, Any] | None = None
    file_ids: list[str] | None = None
    is_pinned: bool | None = None


class UpdatePostBody(_Body):
    id: str
    message: str = ""
    props: dict[str, Any] | None = None
    file_ids: list[str] | None = None
    is_pinned: bool | None = None


class ReactionBody(_Body):
    user_id: str
    post_id: str
    emoji_name: str


class ExecuteCommandBody(_Body):
    channel_id: str
    command: str
    team_id: str = ""
    root_id: str = ""


class CommandResponse(_Body):
    """What an integration answers a slash command (or a response_url follow-up) with."""

    response_type: str = ""
    text: str = ""
    username: str = ""
    channel_id: str = ""
    icon_url: str = ""
    type: str = ""
    props: dict[str, Any] = Field(default_factory=dict)
    goto_location: str = ""
    trigger_id: str = ""
    skip_slack_parsing: bool = False
    attachments: list[dict[str, Any]] | None = None
    extra_responses: list[CommandResponse] | None = None


class Dialog(_Body):
    callback_id: str = ""
    title: str
    introduction_text: str = ""
    icon_url: str = ""
    elements: list[dict[str, Any]] = Field(default_factory=list)
    submit_label: str = ""
    notify_on_cancel: bool = False
    state: str = ""


class OpenDialogBody(_Body):
    trigger_id: str
    url: str
    dialog: Dialog


class SubmitDialogBody(_Body):
    url: str
    callback_id: str = ""
    state: str = ""
    channel_id: str
    team_id: str = ""
    submission: dict[str, Any] = Field(default_factory=dict)
    cancelled: bool = False
