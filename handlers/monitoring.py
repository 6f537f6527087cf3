"""Runbook 7.4: monitoring — what Alertmanager says is firing right now."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from bot.context import HandlerContext
from bot.health import check_settings
from bot.models import Finding, Severity, Status
from bot.registry import NoParams, sop

ALERTS_STEP = "7.4: open each firing alert's thread (or /sop search <alertname>) and follow its SOP"
NO_SOURCE_STEP = "7.4: set alertmanager.url so the bot can read firing alerts"


class AlertChecks(BaseModel):
    """``checks.firing-alerts`` in the config: alert severity label → report status."""

    model_config = ConfigDict(extra="forbid")
    critical: list[str] = Field(default_factory=lambda: ["critical", "P1"])
    ignore: list[str] = Field(default_factory=lambda: ["Watchdog", "InfoInhibitor"],
                              description="alertnames that always fire by design")


@sop("firing-alerts", title="Firing alerts by severity", section="7.4", severity=Severity.P3,
     alerts=("PrometheusStorageAlmostFull", "LokiDown", "AlloyDown"))
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
