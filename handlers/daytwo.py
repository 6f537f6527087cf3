"""Runbook chapter 11: day-2 operations. 11.1's daily health check is a composition of the
chapters' checks (``compose("daily", ...)``); the pod check of its script lives here."""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Finding, HandlerContext, HealthCheck, LogPattern, NoParams, Severity, Status,
                     check_settings, compose, condition, parse_time, sop)

# Where the runbook covers a namespace's workloads (chapter 7 per service, 5 Vault, ...).
NAMESPACE_SECTION = {
    "harbor": "7.1", "keycloak": "7.2", "argocd": "7.3", "monitoring": "7.4", "mattermost": "7.5",
    "kasm": "7.6", "uptime-kuma": "7.7", "librenms": "7.8", "argo-rollouts": "7.9",
    "vault": "5.1", "cert-manager": "4.2", "database": "6.1", "cnpg-system": "6.1",
    "node-labeler": "2.6", "storage-autoscaler": "8.3", "minio": "8.5",
}
SERVICE_STEP = "{section}: the {ns} SOP; first kubectl logs -n {ns} <pod> --previous and kubectl describe pod"
STEPS = {
    "CrashLoopBackOff": "1 (flowchart): kubectl logs -n {ns} <pod> --previous for the exit reason; then {section}",
    "OOMKilled": "1 (flowchart): the container exceeds its memory limit: raise the limit or find the leak; then {section}",
    "ImagePullBackOff": "7.1 Harbor image pull failures: is the image in Harbor, is Harbor up; then {section}",
    "ErrImagePull": "7.1 Harbor image pull failures: is the image in Harbor, is Harbor up; then {section}",
    "Error": "1 (flowchart): kubectl describe pod -n {ns} <pod> and its logs; then {section}",
}
PENDING_PVC = "8.1: the pod waits for an unbound PersistentVolumeClaim (kubectl get pvc -n {ns})"
PENDING_SELECTOR = "2.6: no node matches the pod's node selector: nodes missing workload-type?"
PENDING_RESOURCES = "2.5: insufficient resources and no scale-up: check the cluster autoscaler"
PENDING_OTHER = "1 (flowchart): kubectl describe pod -n {ns} <pod> (Events) for why it does not start"
_COUNT = re.compile(r"^\d+\s+")


class PodChecks(BaseModel):
    """``checks.pod-health`` in the config."""

    model_config = ConfigDict(extra="forbid")
    # Namespaces whose broken pods take the platform down with them: critical, not a warning.
    critical_namespaces: list[str] = Field(
        default_factory=lambda: ["kube-system", "vault", "cert-manager", "cnpg-system"])
    pending_grace_minutes: float = Field(5, ge=0, description="younger Pending pods are starting up")
    max_listed: int = Field(20, ge=1, description="pods listed per group in the details")


@dataclass
class _Group:
    pods: list[str] = field(default_factory=list)
    restarts: int = 0
    causes: dict[str, int] = field(default_factory=dict)


@sop("pod-health", title="Pods not Running/Succeeded, by namespace and reason",
     sections=("11.1", "1", "2.5", "3.6", "7.1/image", "7.6/session"),
     severity=Severity.P3, alerts=("KubePodCrashLooping", "KubePodNotReady"))
async def pod_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Every pod Running or Succeeded (completed Jobs are fine); the others grouped by namespace
    and reason — CrashLoopBackOff, Pending with its cause, ImagePullBackOff, OOMKilled, Error —
    with their restart counts (runbook 11.1)."""
    cfg = check_settings(ctx, "pod-health", PodChecks)
    kube = ctx.require_kube()
    now = datetime.now(timezone.utc)
    groups: dict[tuple[str, str], _Group] = defaultdict(_Group)
    total = 0
    # Page by page, keeping only the problems: 30,000 pods as dicts would not fit in memory.
    async for page in kube.pages("v1", "pods"):
        total += len(page)
        for pod in page:
            problem = _problem(pod, now, cfg.pending_grace_minutes)
            if problem is None:
                continue
            reason, cause, line, restarts = problem
            meta = pod["metadata"]
            g = groups[(meta.get("namespace", ""), reason)]
            g.pods.append(line)
            g.restarts += restarts
            if cause:
                g.causes[cause] = g.causes.get(cause, 0) + 1
    if not groups:
        return [Finding(status=Status.ok, target="pods", summary=f"all {total} pods Running or Succeeded")]
    findings = []
    for (ns, reason), g in sorted(groups.items()):
        section = NAMESPACE_SECTION.get(ns, "1")
        status = Status.crit if ns in cfg.critical_namespaces else Status.warn
        cause = "; ".join(sorted(g.causes, key=lambda c: -g.causes[c]))
        summary = (f"{len(g.pods)} pod(s) {reason}" + (f" ({cause})" if cause else "")
                   + (f", {g.restarts} restarts" if g.restarts else "") + f": {_short(g.pods)}")
        findings.append(Finding(status=status, target=f"{ns} {reason}", summary=summary,
                                details="\n".join(g.pods[:cfg.max_listed])
                                + (f"\n… and {len(g.pods) - cfg.max_listed} more" if len(g.pods) > cfg.max_listed else ""),
                                next_step=_step(reason, cause, ns, section)))
    findings.extend(await _crash_evidence(ctx, groups))
    bad = sum(len(g.pods) for g in groups.values())
    findings.insert(0, Finding(status=Status.worst([f.status for f in findings]), target="pods",
                               summary=f"{bad} of {total} pods not Running/Succeeded in "
                                       f"{len({ns for ns, _ in groups})} namespace(s)",
                               next_step="11.1: work through the groups below, each names its runbook section"))
    return findings


# What the runbook's "kubectl logs --previous" step looks for; the first match names the cause.
CRASH_PATTERNS = (
    LogPattern(regex=r"s3aws|minio.*(connection refused|no such host|i/o timeout)",
               cause="MinIO backend unavailable (7.1)"),
    LogPattern(regex=r"plugin/loop: Loop .* detected", cause="CoreDNS forwarding loop (3.6)"),
    LogPattern(regex=r"\b(panic|fatal|FATAL|ERROR|level=error)\b", cause=""),
)
MAX_CRASH_LOGS = 3  # log reads per run: only for crash-looping pods, a few at most


async def _crash_evidence(ctx: HandlerContext, groups: dict[tuple[str, str], _Group]) -> list[Finding]:
    """The last error lines of the previous instance of one pod per CrashLoopBackOff group: why
    it died, quoted (redacted), instead of only that it did."""
    picks = [(ns, g.pods[0].split(" ", 1)[0]) for (ns, reason), g in sorted(groups.items())
             if reason.removeprefix("Init:") == "CrashLoopBackOff"][:MAX_CRASH_LOGS]

    async def one(ns: str, pod: str) -> Finding | None:
        hits, failed = await ctx.attempt(ctx.log_hits(ns, pod, CRASH_PATTERNS, previous=True, tail=100, quote=1),
                                         f"pod/{ns}/{pod} log")
        if failed is not None or not hits:
            return failed
        hit = hits[0]
        cause = hit.pattern.cause or "last error before the crash"
        return Finding(status=Status.warn, target=f"pod/{ns}/{pod} log",
                       summary=f"{cause}: {hit.lines[-1]}", details="\n".join(hit.lines),
                       next_step=SERVICE_STEP.format(section=NAMESPACE_SECTION.get(ns, "1"), ns=ns))
    found = await asyncio.gather(*(one(ns, pod) for ns, pod in picks))
    return [f for f in found if f is not None]


def _problem(pod: dict[str, Any], now: datetime, grace_min: float) -> tuple[str, str, str, int] | None:
    """(reason, cause, description, restarts) of a pod that is not fine, else None."""
    status = pod.get("status") or {}
    phase = status.get("phase", "Unknown")
    if phase == "Succeeded":
        return None  # completed Jobs and the like
    containers = status.get("containerStatuses") or []
    inits = status.get("initContainerStatuses") or []
    restarts = sum(int(c.get("restartCount") or 0) for c in (*inits, *containers))
    name = pod["metadata"]["name"]
    reason = cause = ""
    for i, c in enumerate([*inits, *containers]):
        waiting = (c.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "ContainerCreating", "PodInitializing"):
            reason = waiting["reason"]
            last = ((c.get("lastState") or {}).get("terminated") or {})
            if last.get("reason") == "OOMKilled":
                reason = "OOMKilled"
            elif last.get("reason"):
                cause = f"last exit {last.get('exitCode', '?')} {last['reason']}"
            if i < len(inits):  # as kubectl shows it: Init:CrashLoopBackOff
                reason = f"Init:{reason}"
            break
        terminated = (c.get("state") or {}).get("terminated")
        if terminated and phase == "Running" and terminated.get("reason") in ("OOMKilled", "Error"):
            reason = terminated["reason"]
            break
    if not reason:
        if phase == "Running":
            return None
        if phase == "Failed":
            reason = status.get("reason") or "Error"
            cause = (status.get("message") or "")[:120]
        elif phase == "Pending":
            created = parse_time(pod["metadata"].get("creationTimestamp"))
            if created and (now - created).total_seconds() < grace_min * 60:
                return None
            reason = "Pending"
            sched = condition(pod, "PodScheduled")
            if sched is not None and sched.get("status") == "False":
                cause = _scheduling_cause(sched.get("message") or sched.get("reason") or "")
            else:
                cause = "not started"
        else:
            reason = phase
    line = f"{name}" + (f" ({restarts} restarts)" if restarts else "") + (f" — {cause}" if cause else "")
    return reason, cause, line, restarts


def _scheduling_cause(message: str) -> str:
    """'0/6 nodes are available: 3 Insufficient memory, 3 node(s) had untolerated taint
    {node-role.kubernetes.io/control-plane: }. preemption: …' → 'Insufficient memory'."""
    head = message.split(". preemption:", 1)[0]
    head = head.split(": ", 1)[1] if head.startswith("0/") and ": " in head else head
    parts = [_COUNT.sub("", p.strip()).rstrip(".") for p in head.split(", ") if p.strip()]
    # Control-plane taints reject every pod there; they are never the cause worth reading.
    useful = [p for p in parts if "control-plane" not in p] or parts
    return "; ".join(useful)[:160] or "unschedulable"


def _step(reason: str, cause: str, ns: str, section: str) -> str:
    if reason == "Pending":
        low = cause.lower()
        if "persistentvolumeclaim" in low:
            return PENDING_PVC.format(ns=ns)
        if "affinity/selector" in low or "node selector" in low:
            return PENDING_SELECTOR
        if "insufficient" in low:
            return PENDING_RESOURCES
        return PENDING_OTHER.format(ns=ns)
    template = STEPS.get(reason.removeprefix("Init:"))
    if template is None:
        return SERVICE_STEP.format(section=section, ns=ns)
    return template.format(ns=ns, section=f"{section} for {ns}")


def _short(lines: list[str], limit: int = 3) -> str:
    names = [line.split(" ", 1)[0] for line in lines]
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


# -- 11.1: the daily health check, one area per line of the runbook's Key Metrics table -----------
DAILY = compose("daily", [
    HealthCheck("Nodes", "node-health"),
    HealthCheck("Node labels", "node-labels"),
    HealthCheck("Pods", "pod-health"),
    HealthCheck("Vault", "vault-status"),
    HealthCheck("Certificates", "cert-health"),
    HealthCheck("CNPG", "cnpg-health"),
    HealthCheck("Gateways", "gateway-health"),
    HealthCheck("HTTPRoutes", "httproute-health"),
    HealthCheck("IngressRoutes", "ingressroute-health"),
    HealthCheck("PVCs", "pvc-health"),
    HealthCheck("Traefik", "traefik-lb"),
    HealthCheck("Alerts", "firing-alerts"),
])
