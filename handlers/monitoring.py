"""Runbook 7.4: monitoring — what Alertmanager says is firing right now, and the space left on
Prometheus's own volume (PrometheusStorageAlmostFull, Prometheus OOM)."""

from __future__ import annotations

import asyncio
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Finding, HandlerContext, NoParams, Sample, Severity, Status, check_settings,
                     promql_string, sop)

ALERTS_STEP = "7.4: open each firing alert's thread (or /sop search <alertname>) and follow its SOP"
NO_SOURCE_STEP = "7.4: set alertmanager.url so the bot can read firing alerts"


class AlertChecks(BaseModel):
    """``checks.firing-alerts`` in the config: alert severity label → report status."""

    model_config = ConfigDict(extra="forbid")
    critical: list[str] = Field(default_factory=lambda: ["critical", "P1"])
    ignore: list[str] = Field(default_factory=lambda: ["Watchdog", "InfoInhibitor"],
                              description="alertnames that always fire by design")


@sop("firing-alerts", title="Firing alerts by severity", section="11.1", severity=Severity.P3)
async def firing_alerts(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Alerts firing in Alertmanager (active, not silenced or inhibited), counted by severity
    (runbook 11.1 "Prometheus Alerts", 7.4)."""
    cfg = check_settings(ctx, "firing-alerts", AlertChecks)
    if ctx.alertmanager is None:
        return [Finding(status=Status.unknown, target="alertmanager",
                        summary="no Alertmanager configured (alertmanager.url)", next_step=NO_SOURCE_STEP)]
    alerts = [a for a in await ctx.alertmanager.alerts(active=True, silenced=False, inhibited=False)
              if a.status.state == "active" and a.labels.get("alertname") not in cfg.ignore]
    if not alerts:
        return [Finding(status=Status.ok, target="alerts", summary="no alerts firing")]
    by_severity = Counter(a.labels.get("severity", "none") for a in alerts)
    findings = []
    for severity, n in sorted(by_severity.items(), key=lambda kv: (kv[0] not in cfg.critical, kv[0])):
        names = Counter(a.labels.get("alertname", "?") for a in alerts if a.labels.get("severity", "none") == severity)
        findings.append(Finding(
            status=Status.crit if severity in cfg.critical else Status.warn, target=f"severity {severity}",
            summary=f"{n} firing: " + ", ".join(f"{name}×{c}" if c > 1 else name for name, c in names.most_common(8)),
            next_step=ALERTS_STEP))
    counts = ", ".join(f"{n} {s}" for s, n in by_severity.most_common())
    findings.insert(0, Finding(status=Status.ok, target="alerts", summary=f"{len(alerts)} firing ({counts})"))
    return findings


# -- 7.4 Prometheus storage (PrometheusStorageAlmostFull) and OOM ----------------------------------
STORAGE_STEP = ("7.4: reduce retention (--storage.tsdb.retention.time=15d, was 30d) or drop high-cardinality "
                "series (metric_relabel_configs); check the TSDB size with kubectl exec -n monitoring "
                "-l app=prometheus -- du -sh /prometheus/")
OOM_STEP = ("7.4 Prometheus OOM: raise resources.limits.memory (4Gi or 8Gi) in the prometheus "
            "StatefulSet, or reduce retention / drop noisy series")
NO_VOLUME_STEP = ("7.4: no volume metrics for Prometheus's PVC: check the kubelet metrics are scraped, "
                  "or the TSDB size with kubectl exec -n monitoring -l app=prometheus -- du -sh /prometheus/")
NO_PROMETHEUS_STEP = "set prometheus.url so the bot can read the metrics"
_GIB = 1024 ** 3


class PrometheusStorageChecks(BaseModel):
    """``checks.prometheus-storage`` in the config: which PVCs hold the TSDB, and the thresholds."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = Field("monitoring", description="namespace of the Prometheus PVC(s)")
    pvc: str = Field("prometheus-.*", description="regex of the Prometheus PVC name(s)")
    warn_used_percent: float = Field(85, gt=0, le=100)
    crit_used_percent: float = Field(95, gt=0, le=100)


@sop("prometheus-storage", title="Prometheus volume space and OOM restarts", section="7.4/prometheus",
     severity=Severity.P2, alerts=("PrometheusStorageAlmostFull",))
async def prometheus_storage(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Used space of Prometheus's volume (kubelet volume stats) against the warn/crit thresholds,
    and a Prometheus container last killed for OOM (runbook 7.4)."""
    cfg = check_settings(ctx, "prometheus-storage", PrometheusStorageChecks)
    if ctx.prometheus is None:
        return [Finding(status=Status.unknown, target="prometheus",
                        summary="no Prometheus configured (prometheus.url)", next_step=NO_PROMETHEUS_STEP)]
    ns = promql_string(cfg.namespace)
    sel = f"namespace={ns}, persistentvolumeclaim=~{promql_string(cfg.pvc)}"
    avail, cap, oom = await asyncio.gather(
        ctx.prometheus.query(f"kubelet_volume_stats_available_bytes{{{sel}}}"),
        ctx.prometheus.query(f"kubelet_volume_stats_capacity_bytes{{{sel}}}"),
        # kube-state-metrics: 1 while the container's last termination was OOMKilled
        ctx.prometheus.query("kube_pod_container_status_last_terminated_reason"
                             f"{{namespace={ns}, container=\"prometheus\", reason=\"OOMKilled\"}} == 1"))
    capacity = {_pvc(s): s.value for s in cap}
    findings: list[Finding] = []
    for s in sorted(avail, key=_pvc):
        total = capacity.get(_pvc(s))
        if not total:
            continue
        used_pct = 100 * (1 - s.value / total)
        status = (Status.crit if used_pct >= cfg.crit_used_percent
                  else Status.warn if used_pct >= cfg.warn_used_percent else Status.ok)
        findings.append(Finding(
            status=status, target=f"pvc/{s.labels.get('persistentvolumeclaim', '?')}",
            summary=f"{used_pct:.0f}% used ({(total - s.value) / _GIB:.1f} of {total / _GIB:.1f} GiB, "
                    f"{s.value / _GIB:.1f} GiB free)",
            next_step="" if status == Status.ok else STORAGE_STEP))
    if not findings:
        findings.append(Finding(status=Status.unknown, target="prometheus volume",
                                summary=f"no kubelet_volume_stats for PVC {cfg.pvc} in {cfg.namespace}",
                                next_step=NO_VOLUME_STEP))
    for s in oom:
        findings.append(Finding(status=Status.warn, target=f"pod/{s.labels.get('pod', '?')}",
                                summary="Prometheus was last restarted OOMKilled", next_step=OOM_STEP))
    return findings


def _pvc(s: Sample) -> tuple[str, str]:
    return s.labels.get("namespace", ""), s.labels.get("persistentvolumeclaim", "")
