"""What a handler gets to work with: the platform's clients and the check settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.clients.kube import KubeClient
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
    # Free-form check settings from config (expected node count, LB IP...), by SOP id.
    checks: dict[str, Any] = field(default_factory=dict)

    def require_kube(self) -> "KubeClient":
        """The cluster client, or SourceError: run_sop reports it as an "unknown" finding."""
        if self.kube is None:
            from bot.clients.errors import SourceError

            raise SourceError("kubernetes", "no Kubernetes access configured")
        return self.kube

    async def close(self) -> None:
        for kube in (self.kube, self.kube_mgmt):
            if kube is not None:
                await kube.close()
        if self.prometheus is not None:
            await self.prometheus.close()
