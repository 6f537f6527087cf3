"""What a handler gets to work with: the platform's clients and the check settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

T = TypeVar("T")

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable
    from datetime import timedelta

    from bot.clients.events import Event
    from bot.clients.logscan import LogHit, LogPattern
    from bot.clients.resource_metrics import Usage
    from bot.models import Finding
    from bot.clients.kube import KubeClient
    from bot.clients.probe import HttpResult, Prober, TlsResult
    from bot.clients.prometheus import PrometheusClient
    from bot.clients.vault import VaultPool


@dataclass
class HandlerContext:
    kube: "KubeClient | None" = None
    # Second cluster, e.g. the Harvester management cluster (runbook 2.1, 10.x).
    kube_mgmt: "KubeClient | None" = None
    vault: "VaultPool | None" = None
    prometheus: "PrometheusClient | None" = None
    alertmanager: Any = None
    # HTTP/TLS probes of the platform's own endpoints, inside probe.allowed_cidrs (runbook 4.2, 4.5).
    probe: "Prober | None" = None
    # Free-form check settings from config (expected node count, LB IP...), by SOP id.
    checks: dict[str, Any] = field(default_factory=dict)

    def require_kube(self) -> "KubeClient":
        """The cluster client, or SourceError: run_sop reports it as an "unknown" finding."""
        if self.kube is None:
            from bot.clients.errors import SourceError

            raise SourceError("kubernetes", "no Kubernetes access configured")
        return self.kube

    # -- what an SRE reads beyond the objects (runbook "Diagnostic Steps"); each call has the
    # client's timeout and raises SourceError, which ``attempt`` turns into an "unknown" finding.
    async def logs(self, namespace: str, pod: str, container: str | None = None, *, tail: int | None = 200,
                   since: "timedelta | None" = None, previous: bool = False) -> str:
        return await self.require_kube().logs(namespace, pod, container, tail=tail, since=since, previous=previous)

    async def log_hits(self, namespace: str, pod: str, patterns: "Iterable[LogPattern]", container: str | None = None,
                       *, tail: int | None = 200, since: "timedelta | None" = None, previous: bool = False,
                       quote: int = 3) -> "list[LogHit]":
        """The lines of a container's log that match the SOP's runbook patterns, redacted."""
        from bot.clients.logscan import scan

        text = await self.logs(namespace, pod, container, tail=tail, since=since, previous=previous)
        return scan(text, patterns, quote=quote)

    async def events(self, namespace: str | None = None, *, kind: str | None = None, name: str | None = None,
                     window: "timedelta | None" = None, warnings_only: bool = False) -> "list[Event]":
        """Events of one object or a namespace, newest first, one per reason (default: last hour)."""
        from datetime import timedelta

        from bot.clients.events import events

        return await events(self.require_kube(), namespace, kind=kind, name=name,
                            window=window or timedelta(hours=1), warnings_only=warnings_only)

    async def node_usage(self) -> "list[Usage]":
        from bot.clients.resource_metrics import node_usage

        return await node_usage(self.require_kube())

    async def pod_usage(self, namespace: str | None = None, *, label_selector: str | None = None) -> "list[Usage]":
        from bot.clients.resource_metrics import pod_usage

        return await pod_usage(self.require_kube(), namespace, label_selector=label_selector)

    def require_probe(self) -> "Prober":
        if self.probe is None:
            from bot.clients.errors import SourceError

            raise SourceError("probe", "no probes configured (probe.allowed_cidrs)")
        return self.probe

    async def tls_probe(self, host: str, port: int = 443, *, sni: str | None = None,
                        ca_pem: str | None = None) -> "TlsResult":
        """The chain ``host:port`` serves for ``sni``, verified against ``ca_pem`` when given.
        ``host`` must come from a cluster object or the config, never from chat."""
        return await self.require_probe().tls(host, port, sni=sni, ca_pem=ca_pem)

    async def http_probe(self, url: str, *, connect: str | None = None, host_header: str | None = None,
                         sni: str | None = None, ca_pem: str | None = None) -> "HttpResult":
        """``GET url`` with a bounded body; ``connect`` sets the TCP address apart from Host/SNI."""
        return await self.require_probe().http(url, connect=connect, host_header=host_header, sni=sni,
                                               ca_pem=ca_pem)

    @staticmethod
    async def attempt(read: "Awaitable[T]", target: str) -> "tuple[T | None, Finding | None]":
        """``(value, None)``, or ``(None, unknown finding)`` when the source failed: a SOP that
        reads logs or events as extra evidence still reports what it saw elsewhere."""
        from bot.clients.errors import SourceError
        from bot.models import Finding, Status

        try:
            return await read, None
        except SourceError as exc:
            return None, Finding(status=Status.unknown, target=target, summary=f"{exc.source}: {exc.reason}")

    async def close(self) -> None:
        for kube in (self.kube, self.kube_mgmt):
            if kube is not None:
                await kube.close()
        if self.prometheus is not None:
            await self.prometheus.close()
