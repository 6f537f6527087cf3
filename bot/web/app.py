"""The bot's HTTP surface (aiohttp): slash commands, Alertmanager webhooks, health and readiness."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bot.service import Bot
from bot.web.slash import slash_handler

ReadyCheck = Callable[[], Awaitable[str | None]]  # None when ready, else the reason


def make_web_app(bot: Bot, slash_tokens: list[str], ready: ReadyCheck | None = None,
                 alertmanager: Callable[[web.Request], Any] | None = None) -> web.Application:
    app = web.Application(client_max_size=2 * 1024 * 1024)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        reason = await ready() if ready else None
        if reason:
            return web.json_response({"status": "not ready", "reason": reason}, status=503)
        return web.json_response({"status": "ready"})

    app.router.add_post("/mattermost/command", slash_handler(bot, slash_tokens))
    if alertmanager is not None:  # bot.alerts.service.AlertService.handler()
        app.router.add_post("/alertmanager", alertmanager)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app["bot"] = bot
    return app
