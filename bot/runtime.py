"""Wiring: settings → clients, chat, bot, web server. ``serve`` is ``sopbot run``."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from bot.clients.errors import SourceError
from bot.clients.kube import KubeClient
from bot.clients.vault import VaultPool
from bot.config import Settings
from bot.context import HandlerContext
from bot.registry import load_handlers
from bot.runbook import Runbook
from bot.service import Bot
from bot.web.app import make_web_app

log = logging.getLogger("sopbot")


def load_runbook(settings: Settings) -> Runbook | None:
    path = settings.runbook.path
    if path is None:
        return None
    try:
        return Runbook.load(path, url=settings.runbook.url)
    except OSError as exc:
        log.warning("runbook %s unreadable (%s); help and search work without it", path, exc)
        return None


async def _kube(path: Path | None, context: str | None, source: str, timeout_s: float,
                required: bool) -> KubeClient | None:
    if path is None and not required:
        return None
    try:
        return await KubeClient.connect(path, context, source=source, timeout_s=timeout_s)
    except Exception as exc:  # no kubeconfig / bad file: handlers report "unknown"
        log.warning("%s: no usable Kubernetes config (%s)", source, exc)
        return None


async def build_context(settings: Settings) -> HandlerContext:
    k = settings.kubernetes
    vault = None
    if settings.vault.addrs:
        vault = VaultPool(settings.vault.addrs,
                          token=settings.vault.token.get_secret_value() if settings.vault.token else None,
                          timeout_s=settings.vault.timeout_s, verify=settings.vault.verify,
                          names=settings.vault.names or None)
    return HandlerContext(
        kube=await _kube(k.kubeconfig, k.context, "kubernetes", k.timeout_s, required=True),
        kube_mgmt=await _kube(k.mgmt_kubeconfig, None, "harvester", k.timeout_s, required=False),
        vault=vault,
        checks=settings.checks,
    )


async def check_connections(settings: Settings) -> dict[str, str | None]:
    """Each source → None when it answers, else why not."""
    from bot.chat.mattermost import MattermostChat

    results: dict[str, str | None] = {}
    chat = MattermostChat(settings.mattermost)
    try:
        await chat.start()
        results["mattermost"] = None
    except Exception as exc:
        results["mattermost"] = f"{exc.__class__.__name__}: {exc}"
    finally:
        await chat.close()
    ctx = await build_context(settings)
    try:
        if ctx.kube is None:
            results["kubernetes"] = "no kubeconfig and not running in a cluster"
        else:
            try:
                await ctx.kube.request("GET", "/version")
                results["kubernetes"] = None
            except SourceError as exc:
                results["kubernetes"] = exc.reason
        if ctx.vault is None:
            results["vault"] = "no replica addresses (vault.addrs)"
        else:
            problems = []
            for addr in ctx.vault.addrs:
                try:
                    await ctx.vault.seal_status(addr)
                except SourceError as exc:
                    problems.append(str(exc))
            results["vault"] = "; ".join(problems) or None
    finally:
        await ctx.close()
    return results


class Runtime:
    """The running bot: start() brings everything up, stop() shuts it down gracefully."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ctx: HandlerContext | None = None
        self.bot: Bot | None = None
        self.chat = None
        self.runner: web.AppRunner | None = None
        self.url = ""
        self._background: list[asyncio.Task[None]] = []
        self.on_stop: list[Callable[[], Awaitable[None]]] = []

    async def start(self) -> None:
        from bot.chat.mattermost import MattermostChat

        s = self.settings
        registry = load_handlers()
        self.ctx = await build_context(s)
        self.chat = MattermostChat(s.mattermost)
        await self.chat.start()
        self.bot = Bot(registry=registry, chat=self.chat, ctx=self.ctx, runbook=load_runbook(s),
                       trigger=s.slash.trigger)
        tokens = [t.get_secret_value() for t in s.slash.tokens]
        if not tokens:
            log.warning("no slash command tokens configured (slash.tokens): every /sop is refused")
        app = make_web_app(self.bot, tokens, ready=self._ready)
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, s.server.host, s.server.port)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        log.info("sopbot listening on %s", self.url)

    async def _ready(self) -> str | None:
        return None if self.bot is not None else "starting"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()  # stop accepting first
        if self.bot is not None:
            await self.bot.drain()
        for hook in self.on_stop:
            await hook()
        if self.chat is not None:
            await self.chat.close()
        if self.ctx is not None:
            await self.ctx.close()


async def serve(settings: Settings) -> int:
    logging.basicConfig(level=settings.logging.level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    runtime = Runtime(settings)
    await runtime.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: finishing in-flight work")
    await runtime.stop()
    return 0
