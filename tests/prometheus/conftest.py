"""A real Prometheus (CI installs the Debian package ``prometheus``) scraping a small loopback
exporter every half second: three etcd members, a kubelet's volume stats and kube-state-metrics.

One Prometheus and one exporter for the package (a start costs 1–2 s); tests change the exporter's
state and wait, bounded, until Prometheus has scraped the change (``Platform.settle``)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from bot.clients.prometheus import PrometheusClient
from bot.context import HandlerContext
from bot.engine import run_sop
from bot.models import Report, Status
from bot.registry import REGISTRY
from sandbox.ports import free_port  # noqa: F401  (also imported from here by tests)
from sandbox.prometheus import PrometheusUnavailable, run_prometheus, stop_process

GIB = 1024 ** 3
# etcd's own bucket layouts (server/storage/wal/metrics.go, rafthttp/metrics.go).
FSYNC_BUCKETS = [0.001 * 2 ** i for i in range(14)]
RTT_BUCKETS = [0.0001 * 2 ** i for i in range(16)]
SCRAPE_INTERVAL_S = 0.5
# The etcd SOP's rate window in these tests (production: 5m); 4 scrapes fit in it.
RATE_WINDOW = "2s"


@dataclass
class Histogram:
    buckets: list[float]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def observe(self, value: float, n: int) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)
        for i, le in enumerate(self.buckets):
            if value <= le:
                self.counts[i] += n
        self.total += value * n
        self.count += n

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out = [f'{name}_bucket{{{labels}{sep}le="{le:g}"}} {c}'
               for le, c in zip(self.buckets, self.counts or [0] * len(self.buckets))]
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {self.total}")
        out.append(f"{name}_count{suffix} {self.count}")
        return out


@dataclass
class EtcdMember:
    """One member's /metrics (RKE2 serves them on :2381). Each scrape records 100 WAL fsyncs and
    100 peer round trips at the current latencies, so rates reflect the current state."""

    name: str
    port: int = field(default_factory=free_port)
    up: bool = True
    has_leader: bool = True
    fsync_s: float = 0.002
    rtt_s: float = 0.004
    leader: bool = False
    leader_changes: int = 1
    db_bytes: int = 40 * 2 ** 20
    quota_bytes: int = 2 * GIB
    scrapes: int = 0
    fsync: Histogram = field(default_factory=lambda: Histogram(FSYNC_BUCKETS))
    rtt: Histogram = field(default_factory=lambda: Histogram(RTT_BUCKETS))

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"

    def healthy(self) -> None:
        self.up, self.has_leader, self.fsync_s, self.rtt_s = True, True, 0.002, 0.004
        self.db_bytes = 40 * 2 ** 20

    async def metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        if not self.up:
            return web.Response(status=503, text="etcd is not running")
        self.fsync.observe(self.fsync_s, 100)
        self.rtt.observe(self.rtt_s, 100)
        lines = ["# HELP etcd_server_has_leader Whether or not a leader exists. 1 is existence, 0 is not.",
                 "# TYPE etcd_server_has_leader gauge",
                 f"etcd_server_has_leader {1 if self.has_leader else 0}",
                 "# TYPE etcd_server_is_leader gauge", f"etcd_server_is_leader {1 if self.leader else 0}",
                 "# TYPE etcd_server_leader_changes_seen_total counter",
                 f"etcd_server_leader_changes_seen_total {self.leader_changes}",
                 "# TYPE etcd_mvcc_db_total_size_in_bytes gauge", f"etcd_mvcc_db_total_size_in_bytes {self.db_bytes}",
                 "# TYPE etcd_server_quota_backend_bytes gauge", f"etcd_server_quota_backend_bytes {self.quota_bytes}",
                 "# TYPE etcd_disk_wal_fsync_duration_seconds histogram",
                 *self.fsync.lines("etcd_disk_wal_fsync_duration_seconds"),
                 "# TYPE etcd_network_peer_round_trip_time_seconds histogram",
                 *self.rtt.lines("etcd_network_peer_round_trip_time_seconds", 'To="8e9e05c52164694d"')]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


@dataclass
class Kubelet:
    """The kubelet's volume stats for Prometheus's PVC, and kube-state-metrics' last termination
    reason of the Prometheus container (one app, two paths)."""

    port: int = field(default_factory=free_port)
    capacity: int = 100 * GIB  # the runbook's 100Gi PVC (11.4)
    available: int = 70 * GIB
    oom_killed: bool = False
    scrapes: int = 0

    async def metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        labels = 'namespace="monitoring",persistentvolumeclaim="prometheus-prometheus-0"'
        text = ("# TYPE kubelet_volume_stats_available_bytes gauge\n"
                f"kubelet_volume_stats_available_bytes{{{labels}}} {self.available}\n"
                "# TYPE kubelet_volume_stats_capacity_bytes gauge\n"
                f"kubelet_volume_stats_capacity_bytes{{{labels}}} {self.capacity}\n")
        return web.Response(text=text, content_type="text/plain")

    async def ksm(self, request: web.Request) -> web.Response:
        labels = 'namespace="monitoring",pod="prometheus-0",container="prometheus"'
        text = "# TYPE kube_pod_container_status_last_terminated_reason gauge\n" + "".join(
            f'kube_pod_container_status_last_terminated_reason{{{labels},reason="{r}"}} '
            f"{1 if (r == 'OOMKilled') == self.oom_killed else 0}\n" for r in ("OOMKilled", "Completed"))
        return web.Response(text=text, content_type="text/plain")


@dataclass
class Cnpg:
    """The CNPG instances' exporter (one target here, with a pod label per series as the
    PodMonitor's relabelling gives): replication lag, backends and max_connections."""

    port: int = field(default_factory=free_port)
    lag_s: dict[str, float] = field(default_factory=dict)  # pod -> seconds (replicas only)
    backends: dict[str, int] = field(default_factory=dict)
    max_connections: int = 100
    scrapes: int = 0

    def healthy(self) -> None:
        self.lag_s = {"keycloak-pg-2": 0.4, "keycloak-pg-3": 0.6}
        self.backends = {"keycloak-pg-1": 23, "keycloak-pg-2": 4, "keycloak-pg-3": 4}
        self.max_connections = 100

    async def metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        base = 'namespace="database",cluster="keycloak-pg"'
        lines = ["# TYPE cnpg_pg_replication_lag gauge",
                 *(f'cnpg_pg_replication_lag{{{base},pod="{p}"}} {v}' for p, v in self.lag_s.items()),
                 "# TYPE cnpg_backends_total gauge",
                 *(f'cnpg_backends_total{{{base},pod="{p}",datname="keycloak",usename="app",state="active"}} {n}'
                   for p, n in self.backends.items()),
                 "# TYPE cnpg_pg_settings_setting gauge",
                 *(f'cnpg_pg_settings_setting{{{base},pod="{p}",name="max_connections"}} {self.max_connections}'
                   for p in self.backends)]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")


@dataclass
class Target:
    """A service's own /metrics (Loki, one Alloy per node): ``up`` false answers 503, so
    Prometheus records up == 0 as for a dead pod."""

    name: str
    port: int = field(default_factory=free_port)
    up: bool = True
    scrapes: int = 0

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        if not self.up:
            return web.Response(status=503, text="not ready")
        return web.Response(text=f'# TYPE build_info gauge\nbuild_info{{service="{self.name}"}} 1\n',
                            content_type="text/plain")


class Exporter:
    """The targets, served by aiohttp on an event loop of their own in a thread."""

    def __init__(self) -> None:
        self.members = [EtcdMember(f"cp-{i}") for i in range(1, 4)]
        self.kubelet = Kubelet()
        self.cnpg = Cnpg()
        self.cnpg.healthy()
        self.loki = Target("loki")
        self.alloy = [Target(f"alloy-{i}") for i in range(3)]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="exporter", daemon=True)
        self._runners: list[web.AppRunner] = []

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(timeout=10)

    async def _serve(self) -> None:
        for member in self.members:
            app = web.Application()
            app.router.add_get("/metrics", member.metrics)
            await self._site(app, member.port)
        app = web.Application()
        app.router.add_get("/metrics", self.kubelet.metrics)
        app.router.add_get("/ksm", self.kubelet.ksm)
        await self._site(app, self.kubelet.port)
        for target in (self.cnpg, self.loki, *self.alloy):
            app = web.Application()
            app.router.add_get("/metrics", target.metrics)
            await self._site(app, target.port)

    async def _site(self, app: web.Application, port: int) -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self._runners.append(runner)

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class PrometheusServer:
    def __init__(self, workdir: Path, exporter: Exporter):
        self.workdir = workdir
        self.exporter = exporter
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "prometheus.log"

    def config(self) -> dict:
        k = self.exporter.kubelet.port
        return {
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S * 1000:.0f}ms", "scrape_timeout": "400ms"},
            "scrape_configs": [
                {"job_name": "etcd", "static_configs": [{"targets": [m.instance for m in self.exporter.members]}]},
                {"job_name": "kubelet", "static_configs": [{"targets": [f"127.0.0.1:{k}"]}]},
                {"job_name": "kube-state-metrics", "metrics_path": "/ksm",
                 "static_configs": [{"targets": [f"127.0.0.1:{k}"]}]},
                {"job_name": "cnpg", "static_configs": [{"targets": [f"127.0.0.1:{self.exporter.cnpg.port}"]}]},
                {"job_name": "loki", "static_configs": [{"targets": [self.exporter.loki.instance]}]},
                {"job_name": "alloy", "static_configs": [{"targets": [a.instance for a in self.exporter.alloy]}]},
            ],
        }

    def start(self) -> None:
        try:
            self.proc = run_prometheus(self.config(), self.workdir, self.port)
        except PrometheusUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)

    def stop(self) -> None:
        stop_process(self.proc)


class Platform:
    """What the tests drive: the exporter's state and the Prometheus scraping it."""

    def __init__(self, exporter: Exporter, prometheus: PrometheusServer):
        self.exporter = exporter
        self.prometheus = prometheus
        self.members = exporter.members
        self.kubelet = exporter.kubelet
        self.cnpg = exporter.cnpg
        self.loki = exporter.loki
        self.alloy = exporter.alloy

    @property
    def url(self) -> str:
        return self.prometheus.url

    def healthy(self) -> None:
        for m in self.members:
            m.healthy()
        self.kubelet.available, self.kubelet.oom_killed = 70 * GIB, False
        self.cnpg.healthy()
        for t in (self.loki, *self.alloy):
            t.up = True

    async def settle(self, scrapes: int = 5, timeout_s: float = 30.0) -> None:
        """Wait until every target has been scraped ``scrapes`` more times: the state set before
        is then in Prometheus, and fills the tests' rate window (RATE_WINDOW)."""
        targets = [*self.members, self.kubelet, self.cnpg, self.loki, *self.alloy]
        want = [t.scrapes + scrapes for t in targets]
        deadline = time.monotonic() + timeout_s
        while any(t.scrapes < w for t, w in zip(targets, want)):
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus did not scrape the exporter {scrapes} times in {timeout_s:g}s:\n"
                                     f"{self.prometheus.log.read_text()[-2000:]}")
            await asyncio.sleep(0.1)


async def diagnose(platform: Platform, sop_id: str, checks: dict | None = None) -> Report:
    """Run the SOP ``sop_id`` (handlers loaded) on this package's Prometheus."""
    ctx = HandlerContext(prometheus=PrometheusClient(platform.url, timeout_s=5), checks=checks or {})
    try:
        return await run_sop(REGISTRY.get(sop_id), ctx)
    finally:
        await ctx.close()


def problems(report: Report) -> dict[str, tuple[Status, str]]:
    return {f.target: (f.status, f.summary) for f in report.findings if f.status is not Status.ok}


@pytest.fixture(scope="package")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    exporter = Exporter()
    exporter.start()
    prometheus = PrometheusServer(tmp_path_factory.mktemp("prometheus"), exporter)
    try:
        prometheus.start()
        yield Platform(exporter, prometheus)
    finally:
        prometheus.stop()
        exporter.stop()
