"""Running a handler never crashes the bot: a missing or failing source is an "unknown" finding."""

from bot.context import HandlerContext
from bot.engine import run_sop
from bot.models import Status
from bot.registry import load_handlers


async def test_every_kubernetes_sop_reports_unknown_without_cluster_access():
    registry = load_handlers()
    for sop_id in ("node-health", "pod-health", "cert-health", "cnpg-health", "gateway-health",
                   "httproute-health", "ingressroute-health", "pvc-health", "traefik-lb"):
        report = await run_sop(registry.get(sop_id), HandlerContext())
        assert [(f.status, f.target, f.summary) for f in report.findings] == [
            (Status.unknown, "kubernetes", "no Kubernetes access configured")], sop_id
