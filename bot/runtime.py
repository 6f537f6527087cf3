"""Wiring: settings → clients, chat, bot, web server. ``serve`` is ``sopbot run``."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from aiohttp import web

from bot.flowchart import flowcharts, problems as flowchart_problems
from bot.triage import Triage, alert_words, triage_markdown
from bot.alerts.service import AlertService
from bot.authz import Authorizer
from bot.alerts.threads import ReportHook
from bot.approvals.service import ApprovalService, start_approvals
from bot.backlog import Backlog
from bot.backoff import Backoff
from bot.chat import ChatError, EventSupervisor, MattermostChat, ReactionEvent
from bot.chat.outbox import DurableChat, Outbox
from bot.clients.alertmanager import AlertmanagerClient
from bot.clients.errors import SourceError
from bot.clients.kube import KubeClient
from bot.clients.probe import Prober
from bot.clients.prometheus import PrometheusClient
from bot.clients.vault import VaultPool
from bot import logs
from bot.claims import Claims, replica_identity
from bot.config import Settings, secret_values
from bot.context import HandlerContext
from bot.engine import run_sop
from bot.health import HealthService, lease_namespace, start_health
from bot.metrics import DISCARD, Metrics
from bot.models import Report
from bot.ratelimit import CommandLimiter
from bot.registry import SOP, SOPParams, load_handlers
from bot.runbook import Runbook
from bot.schedule import LeaseElector, Leadership
from bot.service import Bot
from bot.store import Store, check_store, open_store
from bot.web.app import make_web_app
from bot.web.starting import starting_app

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
        prometheus=PrometheusClient(p.url, timeout_s=p.timeout_s) if (p := settings.prometheus).url else None,
        probe=Prober(pr.allowed_cidrs, pr.address_map, timeout_s=pr.timeout_s, max_body_bytes=pr.max_body_bytes)
        if (pr := settings.probe).allowed_cidrs else None,
        checks=settings.checks,
    )


async def check_connections(settings: Settings) -> dict[str, str | None]:
    """Each source → None when it answers, else why not."""
    results: dict[str, str | None] = {}
    book = load_runbook(settings)  # its flowcharts drive /sop triage: a bad one is reported here
    if book is not None:
        results["runbook"] = "; ".join(flowchart_problems(book)) or None
    results["store"] = await check_store(settings.store)  # PostgreSQL: connects and commits
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
        # Optional sources: only checked when configured.
        if settings.kubernetes.mgmt_kubeconfig is not None:  # the Harvester management cluster
            if ctx.kube_mgmt is None:
                results["harvester"] = f"{settings.kubernetes.mgmt_kubeconfig}: not a usable kubeconfig"
            else:
                try:
                    await ctx.kube_mgmt.request("GET", "/version")
                    results["harvester"] = None
                except SourceError as exc:
                    results["harvester"] = exc.reason
        if ctx.prometheus is not None:
            try:
                await ctx.prometheus.query("vector(1)")
                results["prometheus"] = None
            except SourceError as exc:
                results["prometheus"] = exc.reason
        if settings.alertmanager.url:
            am = AlertmanagerClient(settings.alertmanager.url)
            try:
                await am.status()
                results["alertmanager"] = None
            except SourceError as exc:
                results["alertmanager"] = exc.reason
            finally:
                await am.close()
        if ctx.probe is not None:  # every mapped address must lie inside the ranges probes may reach
            bad = []
            for key in settings.probe.address_map:
                host, _, port = key.rpartition(":")
                try:
                    await ctx.probe.resolve(host, int(port))
                except SourceError as exc:
                    bad.append(exc.reason)
            results["probe"] = "; ".join(bad) or None
    finally:
        await ctx.close()
    return results


class Runtime:
    """The running bot: start() brings everything up, stop() shuts it down gracefully."""

    def __init__(self, settings: Settings, chat: MattermostChat | None = None):
        self.settings = settings
        self.ctx: HandlerContext | None = None
        self.bot: Bot | None = None
        self.chat = chat
        self.runner: web.AppRunner | None = None
        self.url = ""
        self._background: list[asyncio.Task[None]] = []
        self.on_stop: list[Callable[[], Awaitable[None]]] = []
        # Features subscribe to chat events here (approvals, alert acks); called in order.
        self.on_reaction: list[Callable[[ReactionEvent], Awaitable[None]]] = []
        self.on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self.events: EventSupervisor | None = None
        self.store: Store | None = None
        self.alerts: AlertService | None = None
        self.health: HealthService | None = None
        self.approvals: ApprovalService | None = None
        self.leadership: Leadership | None = None  # one replica reconciles and escalates alerts
        self.outbox: Outbox | None = None  # posts the bot promised, delivered after an outage
        self.backlog: Backlog | None = None  # what /readyz and the metrics show of both
        self.metrics = Metrics()  # served at /metrics; one registry per runtime
        self._starting: web.AppRunner | None = None  # /healthz, /readyz until the bot is up
        self.starting_reason = "starting"

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # release what was opened before the failure
            raise

    async def _start(self) -> None:
        s = self.settings
        port = await self._serve_starting()
        registry = load_handlers()
        self.ctx = await build_context(s)
        self.chat = self.chat or MattermostChat(s.mattermost)
        await self._connect_chat(self.chat)
        self.bot = Bot(registry=registry, chat=self.chat, ctx=self.ctx, runbook=load_runbook(s),
                       trigger=s.slash.trigger, limiter=CommandLimiter(s.slash.rate_limit),
                       permalink=lambda pid: f"{s.mattermost.url}/{s.mattermost.team}/pl/{pid}")
        self.bot.on_report.append(self._observe_report)
        if hasattr(self.chat, "channel_id"):  # who may run what where (authorization config)
            self.bot.authorize = Authorizer(
                s, self.chat.channel_id,
                lambda head: head in registry.sops or head in self.bot.subcommands).check  # type: ignore[union-attr]
        self.metrics.watch(self)
        tokens = [t.get_secret_value() for t in s.slash.tokens]
        if not tokens:
            log.warning("no slash command tokens configured (slash.tokens): every /sop is refused")
        self.store = await open_store(s.store)  # SQLite, or PostgreSQL with store.url
        self.outbox = Outbox(self.store, self.chat, backoff=Backoff.from_config(s.mattermost),
                             claims=Claims(self.store, replica_identity(), lease_s=15.0) if self.store.shared else None)
        await self.outbox.start()
        # Slash-command threads, reports, health reports, proposals and action outcomes go
        # through the outbox; alerts have their own durable inbox and post directly.
        durable = DurableChat(self.chat, self.outbox)
        self.bot.chat = durable
        bot = self.bot
        self.alerts = await start_alerts(
            s, self.store, self.chat, bot, self.metrics,
            leader=lambda: self.leadership is not None and self.leadership.may_act(),
            # alert runs are counted by start_alerts' run(); the rest (proposals) as for /sop
            on_report=lambda: [h for h in bot.on_report if h != self._observe_report])
        self.on_reaction.append(self.alerts.on_reaction)  # acknowledgements
        # /sop health and the scheduled daily health check (runbook 11.1)
        self.health = await start_health(s, self.store, durable, self.bot, self.metrics)
        self.leadership = leadership(s, self.bot, self.health)
        # /sop triage: the runbook's flowcharts, answered by the handlers' @decision evaluators
        self.bot.subcommands["triage"] = Triage(self.bot).subcommand()
        self.leadership.start()
        # remediation proposals approved by reaction (/sop fix, audit, share; SOP suggestions)
        self.approvals = await start_approvals(s, self.store, durable, self.bot, alerts=self.alerts,  # type: ignore[arg-type]
                                               metrics=self.metrics)
        self.on_reaction.append(self.approvals.on_reaction)
        self.on_reconnect.append(self.approvals.resync)  # reactions made while disconnected
        self.on_stop.append(self.approvals.stop)
        self.on_stop.append(self.outbox.stop)  # after everything that posts, before chat.close
        self.backlog = Backlog(inbox=self.alerts.inbox, outbox=self.outbox)
        app = make_web_app(self.bot, tokens, ready=self._ready, alertmanager=self.alerts.handler(),
                           metrics=self.metrics, store=self.store, backlog=self.backlog.snapshot)
        app.router.add_post("/mattermost/dialog", self.approvals.dialog_handler())  # unseal shares
        self.runner = web.AppRunner(app, handle_signals=False)
        await self.runner.setup()
        await self._stop_starting()
        site = web.TCPSite(self.runner, s.server.host, port)  # the port the probes already use
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        log.info("sopbot listening on %s", self.url)
        if s.mattermost.websocket:
            self.events = EventSupervisor.for_chat(self.chat, on_reaction=self._reaction,
                                                   on_reconnect=self._reconnected)
            self._background.append(asyncio.create_task(self.events.run(), name="websocket"))

    async def _serve_starting(self) -> int:
        """Listen at once with /healthz alive and /readyz not ready; returns the bound port."""
        s = self.settings.server
        self._starting = web.AppRunner(starting_app(lambda: self.starting_reason), handle_signals=False)
        await self._starting.setup()
        site = web.TCPSite(self._starting, s.host, s.port)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def _stop_starting(self) -> None:
        if self._starting is not None:
            runner, self._starting = self._starting, None
            await runner.cleanup()

    async def _connect_chat(self, chat: MattermostChat, max_wait_s: float = 60.0) -> None:
        """Wait out a Mattermost outage at start (it restarts too); a wrong token or team is a
        configuration error and stops the bot at once."""
        delay = 1.0
        if self.settings.mattermost.token is None:  # nothing to wait for: a config error
            raise ChatError("log in with the bot token", "mattermost.token is not set")
        while True:
            self.starting_reason = "connecting to Mattermost"
            try:
                await chat.start()
                return
            except ChatError as exc:
                if exc.status is not None and exc.status < 500 and exc.status != 429:
                    raise
                self.starting_reason = f"waiting for Mattermost ({exc.reason})"
                log.warning("Mattermost unavailable (%s); retrying in %.0fs", exc.reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_wait_s)

    async def _observe_report(self, report: Report, *_: object) -> None:
        self.metrics.observe_report(report)  # slash-command SOP runs

    async def _reaction(self, event: ReactionEvent) -> None:
        for listener in self.on_reaction:
            try:  # one feature's failure must not keep the event from the others
                await listener(event)
            except Exception:
                log.exception("reaction listener %r failed", listener)

    async def _reconnected(self) -> None:
        for listener in self.on_reconnect:
            await listener()

    async def _ready(self) -> str | None:
        return None if self.bot is not None else "starting"

    async def stop(self) -> None:
        await self._stop_starting()
        if self.runner is not None:
            await self.runner.cleanup()  # stop accepting first
        if self.events is not None:
            await self.events.stop()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.health is not None and self.health.scheduler is not None:
            await self.health.scheduler.stop()
        if self.alerts is not None:
            await self.alerts.stop()
        if self.leadership is not None:
            await self.leadership.stop()
        if self.outbox is not None:
            self.outbox.stopping()  # SOP runs do not wait on a Mattermost that is down
        if self.bot is not None:
            await self._drain_bot()
        for hook in self.on_stop:
            await hook()
        if self.chat is not None:
            await self.chat.close()
        if self.ctx is not None:
            await self.ctx.close()
        if self.store is not None:
            await self.store.close()

    async def _drain_bot(self) -> None:
        """Acknowledged SOP runs get their full handler timeout plus time to post; work they
        start (a report's proposals, an approved fix) is waited for too."""
        assert self.bot is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.bot.handler_timeout_s + 30.0
        while self.bot.busy and loop.time() < deadline:
            await self.bot.drain(timeout_s=deadline - loop.time())
        if self.bot.busy:
            log.warning("stopped with %d SOP runs unfinished: their threads stay incomplete", self.bot.busy)


def leadership(s: Settings, bot: Bot, health: HealthService | None) -> Leadership:
    """The health scheduler's Lease when it runs one (same leader for both), else one of its own."""
    scheduler = health.scheduler if health is not None else None
    if scheduler is not None and scheduler.elector is not None:
        return Leadership(scheduler.elector, renew=False)
    if bot.ctx.kube is None:
        return Leadership(None)
    identity = os.environ.get("HOSTNAME") or f"{socket.gethostname()}-{os.getpid()}"
    return Leadership(LeaseElector(bot.ctx.kube, lease_namespace(s.health), s.health.lease_name, identity,
                                   duration_s=s.health.lease_duration_s), renew_s=s.health.lease_renew_s)


async def start_alerts(s: Settings, store: Store, chat: MattermostChat, bot: Bot,
                       metrics: Metrics = DISCARD, *, leader: Callable[[], bool] = lambda: True,
                       on_report: Callable[[], Iterable[ReportHook]] = lambda: ()) -> AlertService:
    """The Alertmanager pipeline; replays notifications accepted but unfinished by a previous run."""
    client = AlertmanagerClient(s.alertmanager.url) if s.alertmanager.url else None
    if client is not None and bot.ctx.alertmanager is None:
        bot.ctx.alertmanager = client
    base = f"{s.mattermost.url}/{s.mattermost.team}/pl/"

    async def run(sop: SOP, params: SOPParams) -> Report:
        report = await run_sop(sop, bot.ctx, params, timeout_s=bot.handler_timeout_s)
        metrics.alerts_routed.labels(sop.id).inc()
        metrics.observe_report(report)
        return report

    async def triage(labels: dict[str, str], annotations: dict[str, str]) -> str:
        # An alert no SOP handles gets the runbook's flowchart walked from where its words point.
        charts = flowcharts(bot.runbook) if bot.runbook is not None else []
        return await triage_markdown(charts, alert_words(labels, annotations), bot.ctx, bot.registry,
                                     bot.runbook, trigger=bot.trigger, timeout_s=bot.handler_timeout_s)

    service = AlertService(s.alertmanager, store=store, chat=chat, registry=bot.registry, run=run,
                           channel_id=chat.channel_id, default_channel=s.mattermost.channel,
                           runbook=bot.runbook, client=client, permalink=lambda pid: base + pid,
                           leader=leader, on_report=on_report,
                           backoff=Backoff.from_config(s.mattermost), triage=triage,
                           # This replica, as the owner of the alert groups it applies (bot.alerts.inbox.GroupClaims).
                           claims_owner=replica_identity())
    await service.start()
    return service


async def serve(settings: Settings) -> int:
    logs.setup(settings.logging.level, settings.logging.json_format, secret_values(settings))
    runtime = Runtime(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before start: a signal while starting still stops cleanly
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(runtime.start(), name="start")
    stopping = asyncio.create_task(stop.wait(), name="signal")
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # a signal while waiting for Mattermost: nothing is in flight yet
        log.info("stopping before start-up finished (%s)", runtime.starting_reason)
        starting.cancel()  # Runtime.start releases what it opened
        await asyncio.gather(starting, return_exceptions=True)
        return 0
    try:
        starting.result()
    except ChatError as exc:  # a wrong token or team: retrying cannot help
        stopping.cancel()
        log.error("cannot start: %s", exc)
        return 78  # EX_CONFIG
    await stopping
    log.info("stopping: no new requests; finishing %d in-flight SOP runs",
             runtime.bot.busy if runtime.bot is not None else 0)
    await runtime.stop()
    log.info("stopped")
    return 0
