"""The alerts a real Prometheus would fire for the sandbox platform's current state, named as the
runbook's alert rules (kube-prometheus-stack, cert-manager and Vault mixins). Evaluated on every
read, so an alert resolves when a fix (or a scenario) changes the state, as it would for real.
The thresholds are the ones the bot's own checks use, so a platform the bot calls healthy fires
only the always-on ``Watchdog``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sandbox.platform import CERT_MANAGER, CNPG, CORE, Platform

RUNBOOK = "https://runbooks.prometheus-operator.dev/runbooks"
CNPG_HEALTHY = "Cluster in healthy state"


@dataclass(frozen=True)
class Firing:
    labels: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return cond
    return None


def _alert(name: str, severity: str, summary: str, /, **labels: str) -> Firing:
    return Firing({"alertname": name, "severity": severity, **labels},
                  {"summary": summary, "runbook_url": f"{RUNBOOK}/{name.lower()}"})


def firing(p: Platform, now: datetime | None = None) -> list[Firing]:
    now = now or datetime.now(timezone.utc)
    out = [_alert("Watchdog", "none", "An alert that should always be firing (the pipeline works)")]
    for i, replica in enumerate(p.vault.replicas):
        pod = {"namespace": "vault", "pod": replica.name}
        if not replica.reachable:
            out.append(_alert("VaultDown", "critical", f"Vault {replica.name} is down", **pod))
        elif replica.sealed:
            out.append(_alert("VaultSealed", "critical", f"Vault {replica.name} is sealed", **pod))
    if all(r.reachable and not r.sealed for r in p.vault.replicas) and p.vault.leader is None:
        out.append(_alert("VaultLeaderLost", "critical", "No Vault replica is the Raft leader",
                          namespace="vault"))
    for node in p.kube.list(CORE, "Node"):
        name = node["metadata"]["name"]
        ready = _cond(node, "Ready")
        if ready is None or ready.get("status") != "True":
            out.append(_alert("KubeNodeNotReady", "warning", f"{name} is not Ready", node=name))
        pressure = _cond(node, "DiskPressure")
        if pressure is not None and pressure.get("status") == "True":
            out.append(_alert("NodeDiskPressure", "warning", f"{name} has disk pressure", node=name))
    for pod in p.kube.list(CORE, "Pod"):
        meta = pod["metadata"]
        where = {"namespace": meta["namespace"], "pod": meta["name"]}
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if any(((cs.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"
               for cs in statuses):
            out.append(_alert("KubePodCrashLooping", "warning",
                              f"{meta['namespace']}/{meta['name']} is crash looping", **where))
        elif (pod.get("status") or {}).get("phase") == "Pending":
            out.append(_alert("KubePodNotReady", "warning",
                              f"{meta['namespace']}/{meta['name']} has been Pending", **where))
    for pvc in p.kube.list(CORE, "PersistentVolumeClaim"):
        if (pvc.get("status") or {}).get("phase") == "Pending":
            meta = pvc["metadata"]
            out.append(_alert("KubePersistentVolumeClaimPending", "warning",
                              f"PVC {meta['namespace']}/{meta['name']} is Pending",
                              namespace=meta["namespace"], persistentvolumeclaim=meta["name"]))
    traefik = p.kube.get(CORE, "Service", "rke2-traefik", "kube-system")
    if traefik is not None and not ((traefik.get("status") or {}).get("loadBalancer") or {}).get("ingress"):
        out.append(_alert("TraefikLoadBalancerPending", "critical",
                          "rke2-traefik has no external IP", namespace="kube-system", service="rke2-traefik"))
    for issuer in p.kube.list(CERT_MANAGER, "ClusterIssuer"):
        ready = _cond(issuer, "Ready")
        if ready is None or ready.get("status") != "True":
            out.append(_alert("ClusterIssuerNotReady", "critical",
                              f"ClusterIssuer {issuer['metadata']['name']} is not Ready",
                              issuer=issuer["metadata"]["name"]))
    for cert in p.kube.list(CERT_MANAGER, "Certificate"):
        meta, status = cert["metadata"], cert.get("status") or {}
        where = {"namespace": meta["namespace"], "name": meta["name"]}
        ready = _cond(cert, "Ready")
        if ready is None or ready.get("status") != "True":
            out.append(_alert("CertManagerCertNotReady", "critical",
                              f"certificate {meta['namespace']}/{meta['name']} is not Ready", **where))
        not_after, renewal = _time(status.get("notAfter")), _time(status.get("renewalTime"))
        # Expiring soon AND not renewed when due (leaf certificates always expire within 30 days).
        if (not_after is not None and not_after - now < timedelta(days=30)
                and renewal is not None and renewal <= now):
            out.append(_alert("CertManagerCertExpirySoon", "warning",
                              f"certificate {meta['namespace']}/{meta['name']} expires soon", **where))
    for cluster in p.kube.list(CNPG, "Cluster"):
        meta = cluster["metadata"]
        if (cluster.get("status") or {}).get("phase") != CNPG_HEALTHY:
            out.append(_alert("CNPGClusterNotHealthy", "warning",
                              f"CNPG cluster {meta['namespace']}/{meta['name']} is not healthy",
                              namespace=meta["namespace"], cluster=meta["name"]))
    return out
