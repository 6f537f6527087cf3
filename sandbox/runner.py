"""Stand the sandbox up on 127.0.0.1: Kubernetes API, three Vault listeners, Mattermost.

``Sandbox`` is an async context manager used by tests (in-process, well under a second) and by
``sopbot sandbox`` / ``sopbot demo``. It writes into its work dir: ``kubeconfig``, ``sopbot.yaml``
(a bot config pointing at the sandbox) and ``env`` (shell exports), ``env`` last so its presence
means "ready".
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import shutil
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiohttp import web

from sandbox.alertmanager.app import AlertmanagerState
from sandbox.alertmanager.app import make_app as make_alertmanager_app
from sandbox.kube.server import make_app as make_kube_app
from sandbox.kube.server import write_kubeconfig
from sandbox.kube.tls import create_server_tls
from sandbox.mattermost.server import make_app as make_mattermost_app
from sandbox.mattermost.state import MattermostState
from sandbox.exporter import VERSION_METRIC, Exporter
from sandbox.platform import LB_IP, Platform
from sandbox.ports import free_port
from sandbox.prometheus import PrometheusUnavailable, SharedPrometheus, shared_prometheus
from sandbox.scenarios import SCENARIOS, apply_scenarios
from sandbox.tls_endpoints import TraefikTLS
from sandbox.vault.server import make_app as make_vault_app
from sandbox.world import build_platform, refresh_autoscaler_status

HOST = "127.0.0.1"
RUNBOOK = Path(__file__).with_name("runbook.md")


def loop_time() -> float:
    return asyncio.get_running_loop().time()


async def _stored(http: httpx.AsyncClient, query: str, version: int) -> bool:
    """Prometheus holds a scrape of the exporter at ``version`` or later (queryable now)."""
    try:
        resp = await http.get("/api/v1/query", params={"query": query})
        result = resp.json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError):
        return False
    return bool(result) and float(result[0]["value"][1]) >= version


def make_metrics_app(metrics: Exporter) -> web.Application:
    """The exporters' /metrics, in the text exposition format Prometheus scrapes."""
    async def serve(request: web.Request) -> web.Response:
        return web.Response(text=metrics.text(), content_type="text/plain", charset="utf-8",
                            headers={"X-Content-Type-Options": "nosniff"})

    app = web.Application()
    app.router.add_get("/metrics", serve)
    return app


class _Listener:
    """One aiohttp app on a fixed loopback port that can be stopped and started again (a Vault
    replica going down refuses connections, as a dead pod does)."""

    def __init__(self, app: web.Application, port: int = 0):
        self.app = app
        self.port = port
        self.runner: web.AppRunner | None = None
        self.ssl_context: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{HOST}:{self.port}"

    @property
    def up(self) -> bool:
        return self.runner is not None

    async def start(self) -> None:
        if self.runner is None:
            self.runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
            await self.runner.setup()
            site = web.TCPSite(self.runner, HOST, self.port, reuse_address=True,
                               ssl_context=self.ssl_context)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


class Sandbox:
    def __init__(self, scenarios: list[str] | tuple[str, ...] = (), *, size: int = 1,
                 workdir: Path | None = None, bot_port: int | None = None,
                 platform: Platform | None = None, prometheus: bool = False):
        unknown = [s for s in scenarios if s not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
        self.scenarios = list(scenarios)
        self.workdir = workdir
        self._own_workdir = False
        self.platform = platform or build_platform(size=size)
        self.kube_token = secrets.token_hex(16)
        self.alertmanager_token = secrets.token_hex(16)
        self.bot_port = bot_port or free_port()
        self.bot_url = f"http://{HOST}:{self.bot_port}"
        self.mattermost = MattermostState(command_url=f"{self.bot_url}/mattermost/command")
        self._kube = _Listener(make_kube_app(self.platform.kube, self.kube_token))
        # The Harvester management cluster: a second API server with its own token and CA.
        self.kube_mgmt_token = secrets.token_hex(16)
        self._kube_mgmt = (_Listener(make_kube_app(self.platform.mgmt, self.kube_mgmt_token))
                           if self.platform.mgmt is not None else None)
        self._mm = _Listener(make_mattermost_app(self.mattermost))
        self.alertmanager = AlertmanagerState(self.platform)  # fires what the state implies
        self._am = _Listener(make_alertmanager_app(self.alertmanager))
        self._vault = [_Listener(make_vault_app(self.platform.vault, i))
                       for i in range(len(self.platform.vault.replicas))]
        # Exporter metrics at /metrics; with prometheus=True a real Prometheus scrapes them.
        self._metrics = _Listener(make_metrics_app(self.platform.metrics))
        self.prometheus = prometheus
        self._prometheus: SharedPrometheus | None = None
        self._ticking: asyncio.Task[None] | None = None
        self._settled_version = -1

    # -- addresses -------------------------------------------------------------------------
    @property
    def kube_faults(self):  # -> sandbox.kube.server.KubeFaults
        """The API server's fault injection (503s, answers slower than a timeout)."""
        from sandbox.kube.server import FAULTS_KEY
        return self._kube.app[FAULTS_KEY]

    @property
    def kube_url(self) -> str:
        return self._kube.url

    @property
    def mattermost_url(self) -> str:
        return self._mm.url

    @property
    def alertmanager_url(self) -> str:
        return self._am.url

    @property
    def vault_addrs(self) -> list[str]:
        return [v.url for v in self._vault]

    @property
    def kubeconfig(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "kubeconfig"

    @property
    def mgmt_kubeconfig(self) -> Path | None:
        """The runbook's cluster/kubeconfig-harvester.yaml; None without a management cluster."""
        assert self.workdir is not None
        return self.workdir / "kubeconfig-harvester" if self._kube_mgmt is not None else None

    @property
    def kube_mgmt_url(self) -> str | None:
        return self._kube_mgmt.url if self._kube_mgmt is not None else None

    @property
    def team_id(self) -> str:
        return self.mattermost.team.id

    @property
    def channel_id(self) -> str:
        return self.mattermost.channel("sop-alerts").id

    # -- life cycle ------------------------------------------------------------------------
    async def __aenter__(self) -> "Sandbox":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self.workdir is None:  # its own: holds tokens, a kubeconfig, a database; removed at stop
            import tempfile
            self.workdir = Path(tempfile.mkdtemp(prefix="sopbot-sandbox-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        # kubectl sends a bearer token only over https: the API server gets its own CA.
        self._kube_tls = create_server_tls(self.workdir / "kube-tls")
        self._kube.ssl_context = self._kube_tls.ssl_context()
        await self._kube.start()
        if self._kube_mgmt is not None:
            self._kube_mgmt_tls = create_server_tls(self.workdir / "kube-mgmt-tls")
            self._kube_mgmt.ssl_context = self._kube_mgmt_tls.ssl_context()
            await self._kube_mgmt.start()
        # Traefik's websecure entrypoint behind the LB IP (TLS probes, runbook 4.5).
        self.traefik = TraefikTLS(self.platform, self.workdir / "traefik-tls")
        await self.traefik.start()
        await self._mm.start()
        await self._am.start()
        self.mattermost.site_url = self.mattermost_url
        for listener in self._vault:
            await listener.start()
        await self._metrics.start()
        if self.prometheus:
            try:
                self._prometheus = shared_prometheus()
            except PrometheusUnavailable:
                await self.stop()  # nothing left listening
                raise
            self._prometheus.add(self.platform.metrics)
        if self.scenarios:
            await self.apply(*self.scenarios)
        await self.settle()
        self._write_files()
        self._ticking = asyncio.create_task(self._tick(), name="sandbox-controllers")

    async def _tick(self, every_s: float = 10.0) -> None:
        """What the platform's own controllers keep doing while nobody breaks anything: the
        autoscaler rewrites its status every scan (a sandbox left running stays healthy)."""
        from datetime import datetime, timezone
        while True:
            await asyncio.sleep(every_s)
            refresh_autoscaler_status(self.platform.kube, datetime.now(timezone.utc))

    async def stop(self) -> None:
        if self._ticking is not None:
            self._ticking.cancel()
            self._ticking = None
        await self.mattermost.hub.close_all()
        if self._prometheus is not None:
            self._prometheus.remove(self.platform.metrics)
        for listener in [self._kube, *([self._kube_mgmt] if self._kube_mgmt else []), self._mm, self._am, *self._vault, self._metrics]:
            await listener.stop()
        if getattr(self, "traefik", None) is not None:
            await self.traefik.stop()
        close = getattr(self.mattermost, "aclose", None)
        if close is not None:
            await close()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    async def apply(self, *names: str) -> None:
        """Break the running platform further (scenarios compose)."""
        apply_scenarios(self.platform, list(names))
        await self.sync_vault_listeners()
        await self.settle()

    @property
    def metrics_address(self) -> str:
        return f"{HOST}:{self._metrics.port}"

    async def settle(self, timeout_s: float = 30.0) -> None:
        """With a Prometheus: wait until it has scraped the exporter twice since its last change
        (the second scrape starts after the first was stored), bounded."""
        metrics = self.platform.metrics
        if self._prometheus is None or metrics.version == self._settled_version:
            return
        version, want = metrics.version, metrics.scrapes + 2
        deadline = loop_time() + timeout_s
        query = f'{VERSION_METRIC}{{exporter="{metrics.id}"}}'
        async with httpx.AsyncClient(base_url=self._prometheus.url, timeout=5) as http:
            while metrics.scrapes < want or not await _stored(http, query, version):
                if loop_time() > deadline:
                    raise TimeoutError(f"Prometheus did not store a scrape of the sandbox exporter in "
                                       f"{timeout_s:g}s:\n{self._prometheus.log_tail()}")
                await asyncio.sleep(0.05)
        self._settled_version = version

    async def sync_vault_listeners(self) -> None:
        """A replica marked unreachable stops listening; a reachable one listens again."""
        for replica, listener in zip(self.platform.vault.replicas, self._vault):
            if getattr(replica, "reachable", True):
                await listener.start()
            else:
                await listener.stop()

    # -- files for people and tools --------------------------------------------------------
    def bot_config(self) -> dict[str, Any]:
        """The bot's config (as YAML data) pointing at this sandbox, everything it can exercise on."""
        return {
            "mattermost": {"url": self.mattermost_url, "token": self.mattermost.tokens["sop-bot"],
                           "team": self.mattermost.team.name, "channel": "sop-alerts"},
            "slash": {"tokens": [self.mattermost.slash_token]},
            "server": {"host": HOST, "port": self.bot_port, "public_url": self.bot_url},
            "kubernetes": {"kubeconfig": str(self.kubeconfig),
                           **({"mgmt_kubeconfig": str(self.mgmt_kubeconfig)} if self.mgmt_kubeconfig else {})},
            "vault": {"addrs": self.vault_addrs, "names": self.platform.vault_names(),
                      "token": self.platform.vault.root_token},
            "alertmanager": {"url": self.alertmanager_url, "webhook_token": self.alertmanager_token},
            "runbook": {"path": str(RUNBOOK)},
            "store": {"path": str(self.workdir / "sopbot.db")},  # type: ignore[operator]
            "remediation": {"enabled": True, "approvers": ["alice"]},
            # Probes reach the LB IP and the in-cluster Vault Service through the sandbox's listeners.
            "probe": self.probe_config(),
            "checks": {"cert-issuer": {"login_test": True},
                       # The weekly Raft snapshot CronJob of the sandbox world (runbook 10.4, 11.5).
                       "vault-dr": {"snapshot_cronjob": "vault/vault-raft-snapshot"},
                       "tls-handshake": {"tlsstore": {"secret": "wildcard-example-com-tls"}},
                       # The runbook's 3.2 objects, so create-l2-policy/create-lb-pool/expand-lb-pool are offered.
                       "l2-announcements": {"policy": {"name": "default-l2-policy", "interfaces": ["^eth[0-9]+"]},
                                            "pool": {"name": "default-pool", "blocks": ["203.0.113.200/29"]}},
                       "traefik-lb": {"expand_block": "203.0.113.208/29"}},
            **({"prometheus": {"url": self._prometheus.url, "timeout_s": 5}} if self._prometheus else {}),
        }

    def _cp_ips(self) -> list[str]:
        return [a["address"] for n in self.platform.kube.list("v1", "Node")
                if "node-role.kubernetes.io/control-plane" in n["metadata"].get("labels", {})
                for a in n["status"].get("addresses", []) if a.get("type") == "InternalIP"]

    def probe_config(self) -> dict[str, Any]:
        vault = self._vault[0].url.split("://", 1)[1]
        return {"allowed_cidrs": ["203.0.113.0/24", "10.43.0.0/16", f"{HOST}/32"],
                "address_map": {f"{LB_IP}:443": self.traefik.address,
                                "vault.vault.svc.cluster.local:8200": vault,
                                # each control-plane node's API server (2.4): the sandbox API server
                                **{f"{ip}:6443": self.kube_url.split("://", 1)[1] for ip in self._cp_ips()}},
                "timeout_s": 3.0}

    def settings(self, **overrides: Any):  # -> bot.config.Settings
        """A bot ``Settings`` for this sandbox; ``overrides`` replace whole sections."""
        from bot.config import Settings

        data = self.bot_config()
        data.update(overrides)
        return Settings.model_validate(data)

    def env(self) -> dict[str, str]:
        return {
            "KUBECONFIG": str(self.kubeconfig),
            **({"HARVESTER_KUBECONFIG": str(self.mgmt_kubeconfig)} if self.mgmt_kubeconfig else {}),
            "VAULT_ADDRS": ",".join(self.vault_addrs),
            "MATTERMOST_URL": self.mattermost_url,
            "MM_TEAM_ID": self.team_id,
            "MM_CHANNEL_ID": self.channel_id,
            "MM_TOKEN_BOT": self.mattermost.tokens["sop-bot"],
            "MM_TOKEN_ALICE": self.mattermost.tokens["alice"],
            "MM_TOKEN_BOB": self.mattermost.tokens["bob"],
            "SLASH_TOKEN": self.mattermost.slash_token,
            "BOT_URL": self.bot_url,
            "ALERTMANAGER_TOKEN": self.alertmanager_token,
            "ALERTMANAGER_URL": self.alertmanager_url,
        }

    def _write_files(self) -> None:
        assert self.workdir is not None
        write_kubeconfig(self.kubeconfig, self.kube_url, self.kube_token,
                         ca_file=self._kube_tls.ca_file)
        if self._kube_mgmt is not None and self.mgmt_kubeconfig is not None:
            write_kubeconfig(self.mgmt_kubeconfig, self._kube_mgmt.url, self.kube_mgmt_token,
                             context="harvester", ca_file=self._kube_mgmt_tls.ca_file)
        (self.workdir / "sopbot.yaml").write_text(yaml.safe_dump(self.bot_config(), sort_keys=False))
        env = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env().items())
        tmp = self.workdir / "env.tmp"
        tmp.write_text(env)
        tmp.replace(self.workdir / "env")  # atomic: "env" exists only once complete

    def howto(self) -> str:
        w = self.workdir
        return "\n".join([
            f"SOP Bot sandbox is up ({', '.join(self.scenarios) or 'healthy'}).",
            f"  Kubernetes  {self.kube_url}     kubectl --kubeconfig {w}/kubeconfig get nodes",
            *([f"  Harvester   {self.kube_mgmt_url}     kubectl --kubeconfig {w}/kubeconfig-harvester get vm -A"]
              if self.kube_mgmt_url else []),
            f"  Vault       {', '.join(self.vault_addrs)}",
            f"              curl {self.vault_addrs[0]}/v1/sys/seal-status",
            f"  Mattermost  {self.mattermost_url}  (team 'platform', channel 'sop-alerts')",
            f"  Alertmanager {self.alertmanager_url}  curl {self.alertmanager_url}/api/v2/alerts",
            *([f"  Prometheus  {self._prometheus.url}  (scraping the exporter metrics, also at http://{self.metrics_address}/metrics)"]
              if self._prometheus else []),
            f"  Bot config  {w}/sopbot.yaml      sopbot run --config {w}/sopbot.yaml",
            f"  Shell       . {w}/env",
            "  Run /sop as alice once the bot runs:",
            f"    curl -s -H \"Authorization: Bearer $MM_TOKEN_ALICE\" {self.mattermost_url}/api/v4/commands/execute \\",
            "      -d \"{\\\"channel_id\\\":\\\"$MM_CHANNEL_ID\\\",\\\"command\\\":\\\"/sop vault-status\\\"}\"",
            "Ctrl-C stops it.",
        ])


def print_scenarios() -> None:
    width = max(len(n) for n in SCENARIOS)
    for name, scenario in SCENARIOS.items():
        print(f"{name:<{width}}  {scenario.description}")


async def serve_sandbox(scenarios: list[str], *, size: int = 1, workdir: Path | None = None,
                        prometheus: bool = False) -> int:
    try:
        sandbox = Sandbox(scenarios, size=size, workdir=workdir, prometheus=prometheus)
    except ValueError as exc:
        print(f"sopbot sandbox: {exc}", file=sys.stderr)
        return 64
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sandbox.start()
    except PrometheusUnavailable as exc:
        print(f"sopbot sandbox: {exc}", file=sys.stderr)
        return 69  # EX_UNAVAILABLE
    try:
        print(sandbox.howto(), flush=True)
        await stop.wait()
    finally:
        await sandbox.stop()
    print("sandbox stopped", flush=True)
    return 0
