"""Slash commands, their response_url hooks, trigger ids and interactive dialogs: the parts where
the sandbox Mattermost calls out to the bot, shaped like the real server's requests."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

import aiohttp

from sandbox.mattermost.errors import AppError, bad_param, forbidden
from sandbox.mattermost.hub import broadcast
from sandbox.mattermost.ids import new_id, now_ms
from sandbox.mattermost.models import CommandResponse, CreatePostBody, Dialog, SubmitDialogBody
from sandbox.mattermost.state import CommandHook, MattermostState, OpenedDialog, Trigger

USER_AGENT = "Mattermost-Bot/1.1"


# -- trigger ids -------------------------------------------------------------------------------
def issue_trigger(state: MattermostState, user_id: str, channel_id: str, team_id: str) -> str:
    """base64("<id>:<user_id>:<millis>:<signature>") like model.GenerateTriggerId (HMAC, not ECDSA)."""
    client_id = new_id()
    data = f"{client_id}:{user_id}:{now_ms()}"
    sig = base64.b64encode(hmac.new(state.signing_key.encode(), data.encode(), hashlib.sha256).digest()).decode()
    trigger_id = base64.b64encode(f"{data}:{sig}".encode()).decode()
    state.triggers[trigger_id] = Trigger(user_id, channel_id, team_id, state.clock())
    return trigger_id


def _trigger_error(kind: str, message: str) -> AppError:
    return AppError("DecodeAndVerifyTriggerId", f"interactive_message.decode_trigger_id.{kind}", message, 400)


def verify_trigger(state: MattermostState, trigger_id: str) -> Trigger:
    try:
        decoded = base64.b64decode(trigger_id, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise _trigger_error("base64_decode_failed", "Failed to decode base64 for trigger ID for interactive dialog.") from None
    parts = decoded.split(":")
    if len(parts) != 4:
        raise _trigger_error("missing_data", "Trigger ID missing required data for interactive dialog.")
    data = ":".join(parts[:3])
    want = base64.b64encode(hmac.new(state.signing_key.encode(), data.encode(), hashlib.sha256).digest()).decode()
    trig = state.triggers.get(trigger_id)
    if not hmac.compare_digest(want, parts[3]) or trig is None:
        raise _trigger_error("verify_signature_failed", "Failed to verify signature of trigger ID for interactive dialog.")
    if state.clock() - trig.issued_at > state.trigger_ttl_s:
        raise _trigger_error(
            "expired",
            f"Trigger ID for interactive dialog is expired. Trigger IDs live for a maximum of {state.trigger_ttl_s:g}s.",
        )
    return trig


# -- slash commands ------------------------------------------------------------------------------
async def execute_command(
    state: MattermostState, user_id: str, channel_id: str, command: str, root_id: str = ""
) -> dict[str, Any]:
    """POST /commands/execute: call the integration, turn its reply into posts, return it."""
    if len(command) <= 1 or not command.startswith("/"):
        raise bad_param("executeCommand", "command")
    ch = state.channels.get(channel_id)
    if ch is None:
        raise bad_param("executeCommand", "channel_id")
    if not state.is_member(ch.id, user_id):
        raise forbidden("executeCommand")
    trigger, _, text = command[1:].partition(" ")
    cmd = next((c for c in state.commands.values() if c.team_id == ch.team_id and c.trigger == trigger and not c.delete_at), None)
    if cmd is None:
        raise AppError(
            "ExecuteCommand",
            "api.command.execute_command.not_found.app_error",
            f"Command with a trigger of '{trigger}' not found. To send a message beginning with \"/\", "
            "try adding an empty space at the beginning of the message.",
            404,
        )
    user = state.users[user_id]
    trigger_id = issue_trigger(state, user_id, ch.id, ch.team_id)
    hook = CommandHook(new_id(), user_id, ch.id, ch.team_id, root_id, cmd.id, state.clock())
    state.hooks[hook.id] = hook
    form = {
        "token": cmd.token,
        "team_id": cmd.team_id,
        "team_domain": state.team.name,
        "channel_id": ch.id,
        "channel_name": ch.name,
        "user_id": user.id,
        "user_name": user.username,
        "command": "/" + trigger,
        "text": text,
        "trigger_id": trigger_id,
        "response_url": f"{state.site_url}/hooks/commands/{hook.id}",
    }
    headers = {"Accept": "application/json", "Authorization": f"Token {cmd.token}", "User-Agent": USER_AGENT}
    failed = AppError(
        "ExecuteCommand", "api.command.execute_command.failed.app_error", f"Command with a trigger of '{trigger}' failed.", 500
    )
    try:
        timeout = aiohttp.ClientTimeout(total=state.command_timeout_s)
        async with state.http().post(cmd.url, data=form, headers=headers, timeout=timeout) as resp:
            body = await resp.read()
            ctype = resp.content_type
            status = resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        raise failed from None
    if status != 200:
        raise AppError(
            "ExecuteCommand",
            "api.command.execute_command.failed_resp.app_error",
            f"Command with a trigger of '{trigger}' returned response {status}.",
            500,
        )
    if ctype == "application/json":
        try:
            reply = CommandResponse.model_validate_json(body)
        except ValueError:
            raise failed from None
    else:
        reply = CommandResponse(text=body.decode(errors="replace"))
    handle_command_response(state, reply, user_id, ch.id, root_id)
    out = reply.model_dump(exclude_none=True)
    out["trigger_id"] = trigger_id
    return out


def handle_command_response(state: MattermostState, reply: CommandResponse, user_id: str, channel_id: str, root_id: str) -> None:
    for r in [reply, *(reply.extra_responses or [])]:
        props: dict[str, Any] = {**r.props, "from_webhook": "true"}
        if r.attachments is not None:
            props["attachments"] = r.attachments
        if r.username:
            props["override_username"] = r.username
        if r.icon_url:
            props["override_icon_url"] = r.icon_url
        target = r.channel_id if r.channel_id and state.is_member(r.channel_id, user_id) else channel_id
        body = CreatePostBody(channel_id=target, message=r.text, root_id=root_id, props=props)
        if r.response_type == "in_channel":
            state.create_post(user_id, body)
        elif r.response_type in ("", "ephemeral") and (r.text or r.attachments):
            body.root_id = root_id
            state.create_ephemeral(user_id, body, sender_id=state.user("sop-bot").id)


def use_command_hook(state: MattermostState, hook_id: str, reply: CommandResponse) -> None:
    """POST /hooks/commands/{id}: the response_url, good for 5 follow-ups within 30 minutes."""
    hook = state.hooks.get(hook_id)
    if hook is None:
        raise AppError("GetCommandWebhook", "app.command_webhook.get.missing", "Unable to find the webhook.", 404)
    expired = state.clock() - hook.created_at > state.hook_ttl_s
    if expired or hook.uses >= state.hook_max_uses:
        raise AppError("TryUse", "app.command_webhook.try_use.invalid", "Invalid webhook.", 400)
    hook.uses += 1
    handle_command_response(state, reply, hook.user_id, hook.channel_id, hook.root_id)


# -- interactive dialogs ------------------------------------------------------------------------
_ELEMENT_TYPES = {"text", "textarea", "select", "bool", "radio", "date", "datetime"}


def dialog_warnings(dialog: Dialog) -> list[str]:
    """Dialog.IsValid() problems. Recent servers log these and still open the dialog (the webapp
    may render it badly), so they are recorded on the dialog instead of rejecting it."""
    problems: list[str] = []
    if not dialog.title or len(dialog.title) > 24:
        problems.append(f"invalid dialog title {dialog.title!r} (1-24 characters)")
    names: set[str] = set()
    for el in dialog.elements:
        name, label, kind = str(el.get("name", "")), str(el.get("display_name", "")), el.get("type")
        if not name or name in names:
            problems.append(f"element name {name!r} is empty or duplicated")
        names.add(name)
        if not label or len(label) > 24:
            problems.append(f"element {name!r}: display_name must be 1-24 characters")
        if kind not in _ELEMENT_TYPES:
            problems.append(f"element {name!r}: unknown type {kind!r}")
    return problems


def open_dialog(state: MattermostState, trigger_id: str, url: str, dialog: Dialog) -> OpenedDialog:
    trig = verify_trigger(state, trigger_id)
    if not url:
        raise bad_param("openDialog", "url")
    opened = OpenedDialog(
        new_id(), trigger_id, trig.user_id, trig.channel_id, trig.team_id, url, dialog.model_dump(), dialog_warnings(dialog)
    )
    state.dialogs[opened.id] = opened
    # The webapp learns about the dialog from this event and shows it to the user.
    state.hub.publish(
        "open_dialog",
        {"dialog": json.dumps({"trigger_id": trigger_id, "url": url, "dialog": opened.dialog})},
        broadcast(user_id=trig.user_id),
        [trig.user_id],
    )
    return opened


async def submit_dialog(state: MattermostState, user_id: str, body: SubmitDialogBody) -> dict[str, Any]:
    """POST /actions/dialogs/submit: forward the submission to the dialog's url, return its answer."""
    ch = state.channels.get(body.channel_id)
    if ch is None or not state.is_member(ch.id, user_id):
        raise forbidden("submitDialog")
    payload = {
        "type": "dialog_submission",
        "callback_id": body.callback_id,
        "state": body.state,
        "user_id": user_id,
        "channel_id": ch.id,
        "team_id": ch.team_id,
        "submission": body.submission,
        "cancelled": body.cancelled,
    }
    failed = AppError("SubmitInteractiveDialog", "app.submit_interactive_dialog.json_error", "Encountered an error decoding JSON for the interactive dialog.", 500)
    try:
        timeout = aiohttp.ClientTimeout(total=state.command_timeout_s)
        async with state.http().post(body.url, json=payload, headers={"User-Agent": USER_AGENT}, timeout=timeout) as resp:
            raw = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        raise AppError("DoActionRequest", "api.post.do_action.action_integration.app_error", "Action integration error.", 400) from None
    if status != 200:
        raise AppError("DoActionRequest", "api.post.do_action.action_integration.app_error", "Action integration error.", 400)
    if not raw.strip():
        return {}
    try:
        answer = json.loads(raw)
    except ValueError:
        raise failed from None
    return answer if isinstance(answer, dict) else {}


async def submit_opened_dialog(
    state: MattermostState, user_id: str, dialog_or_trigger_id: str, submission: dict[str, Any], cancelled: bool
) -> dict[str, Any]:
    opened = state.dialogs.get(dialog_or_trigger_id) or next(
        (d for d in state.dialogs.values() if d.trigger_id == dialog_or_trigger_id), None
    )
    if opened is None:
        raise KeyError(f"no dialog opened for {dialog_or_trigger_id}")
    if opened.user_id != user_id:
        raise KeyError(f"dialog {opened.id} was opened for another user")
    body = SubmitDialogBody(
        url=opened.url,
        callback_id=opened.dialog.get("callback_id", ""),
        state=opened.dialog.get("state", ""),
        channel_id=opened.channel_id,
        team_id=opened.team_id,
        submission=submission,
        cancelled=cancelled,
    )
    return await submit_dialog(state, user_id, body)
