"""``POST /mattermost/command``: the form Mattermost sends for a slash command."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from pydantic import ValidationError

from bot.commands import MAX_TEXT, Invocation
from bot.logs import correlate, new_id
from bot.service import Bot

log = logging.getLogger(__name__)


class SlashCommandForm(Invocation):
    """Mattermost's slash-command request (form-encoded): the invocation plus the fields the bot
    only checks or logs."""

    token: str
    team_domain: str = ""
    channel_name: str = ""
    command: str = ""


def token_ok(given: str, tokens: list[str]) -> bool:
    # Compare against every token so timing does not tell which one was close.
    ok = False
    for expected in tokens:
        ok |= hmac.compare_digest(given.encode(), expected.encode())
    return ok and bool(given)


def slash_handler(bot: Bot, tokens: list[str]):
    async def handle(request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > 64 * 1024:
            return web.json_response({"text": "request too large"}, status=413)
        form = await request.post()
        if not token_ok(str(form.get("token", "")), tokens):
            log.warning("slash command with a bad or missing token from %s", request.remote)
            return web.json_response({"text": "invalid slash command token"}, status=401)
        try:
            data = SlashCommandForm.model_validate({k: str(v) for k, v in form.items()})
        except ValidationError as exc:
            fields = ", ".join(".".join(map(str, e["loc"])) for e in exc.errors())
            return web.json_response({"text": f"malformed slash command request: {fields}"}, status=400)
        if len(data.text) > MAX_TEXT:
            return web.json_response({"response_type": "ephemeral",
                                      "text": f"Command text is too long ({len(data.text)} characters)."})
        # The token stays here: nothing past the endpoint needs it.
        inv = Invocation.model_validate(data.model_dump(include=set(Invocation.model_fields)))
        with correlate(new_id("cmd")):
            # Argument values stay out of the log: someone may paste a secret by mistake.
            words = data.text.split()
            head = words[0].lower() if words else ""
            known = head in bot.registry.sops or head in bot.subcommands or head in ("help", "list", "search")
            log.info("/%s %s %s by @%s", data.command.lstrip("/") or "sop", head if known else "(unknown)",
                     " ".join(w.partition("=")[0] + "=…" for w in words[1:] if "=" in w), data.user_name)
            reply = await bot.command(inv)  # background work started here inherits the id
        return web.json_response(reply.model_dump())

    return handle
