"""The bot's HTTP surface (aiohttp): slash commands, Alertmanager webhooks, health, readiness, metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from bot.metrics import DISCARD, Metrics, reject_reason
from bot.service import Bot
from bot.store import Store
from bot.web.guard import guard
from bot.web.slash import slash_handler

ReadyCheck = Callable[[], Awaitable[str | None]]  # None when ready, else the reason


def make_web_app(bot: Bot, slash_tokens: list[str], ready: ReadyCheck | None = None,
                 alertmanager: Callable[[web.Request], Any] | None = None,
                 metrics: Metrics = DISCARD, store: Store | None = None,
                 backlog: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> web.Application:
    app = web.Application(client_max_size=2 * 1024 * 1024, middlewares=[guard])
    slash = slash_handler(bot, slash_tokens)

    async def counted_slash(request: web.Request) -> web.StreamResponse:
        resp = await slash(request)
        if resp.status == 200:  # the form was read and cached by the handler
            words = str((await request.post()).get("text", "")).split()
            metrics.slash_commands.labels(command_label(bot, words[0] if words else "help")).inc()
        else:
            metrics.slash_rejected.labels(reject_reason(resp.status)).inc()
        return resp

    async def counted_alertmanager(request: web.Request) -> web.StreamResponse:
        metrics.webhooks_received.inc()
        resp = await alertmanager(request)  # type: ignore[misc]
        if resp.status >= 300:
            metrics.webhooks_rejected.labels(reject_reason(resp.status)).inc()
        return resp

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        reason = await ready() if ready else None
        if reason is None and store is not None:  # a store that cannot commit answers webhooks 503
            reason = await store.problem()
        # Accepted work Mattermost has not taken yet (bot.backlog): shown, not a reason to be
        # unready, since accepting more webhooks and commands is exactly what still works.
        extra = {"backlog": await backlog()} if backlog is not None else {}
        if reason:
            return web.json_response({"status": "not ready", "reason": reason, **extra}, status=503)
        return web.json_response({"status": "ready", **extra})

    app.router.add_post("/mattermost/command", counted_slash)
    if alertmanager is not None:  # bot.alerts.service.AlertService.handler()
        app.router.add_post("/alertmanager", counted_alertmanager)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    export = make_aiohttp_handler(metrics.registry)

    async def metrics_handler(request: web.Request) -> web.StreamResponse:
        if backlog is not None:
            await backlog()  # refreshes the snapshot the sopbot_backlog_* gauges read
        return await export(request)

    app.router.add_get("/metrics", metrics_handler)
    return app


def command_label(bot: Bot, head: str) -> str:
    """A bounded label for ``/sop <head> …``: never the user's free text."""
    head = head.lower()
    if head in bot.registry.sops or head in bot.subcommands or head in ("help", "list", "search"):
        return head
    return "unknown"
