"""The signals behind runbook alerts, read where the alert reads them (Prometheus): Loki and
Alloy scrape health (7.4, ``LokiDown``/``AlloyDown``), with Alloy's DaemonSet coverage from the
cluster when it is readable. (CNPG's ReplicationLag and HighConnections are answered by
``cnpg-replica-lag`` and ``cnpg-connections`` in handlers/database.py.)"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict

from bot.sdk import (Finding, HandlerContext, NoParams, Sample, Severity, SourceError, Status, check_settings,
                     promql_string, sop)

LOKI_STEP = "7.4 Loki ingestion errors: kubectl get pods -n monitoring -l app=loki and its logs; restart the statefulset"
ALLOY_STEP = ("7.4 Alloy collection gaps: kubectl get daemonset -n monitoring alloy -o wide; an Alloy pod "
              "missing on a node is a toleration or disk problem")
NO_PROMETHEUS = "set prometheus.url: this signal is a Prometheus metric"


class LoggingSignals(BaseModel):
    """``checks.logging-signals`` in the config: the scrape jobs of Loki and Alloy."""

    model_config = ConfigDict(extra="forbid")
    loki_job: str = "loki"
    alloy_job: str = "alloy"
    namespace: str = "monitoring"
    alloy_daemonset: str = "alloy"


async def _query(ctx: HandlerContext, promql: str) -> list[Sample]:
    if ctx.prometheus is None:
        raise SourceError("prometheus", NO_PROMETHEUS)
    return await ctx.prometheus.query(promql)


@sop("logging-signals", title="Loki and Alloy up (LokiDown, AlloyDown)", sections=("7.4/loki", "7.4/alloy"),
     severity=Severity.P3, alerts=("LokiDown", "AlloyDown"),
     causes=("Loki down (scrape failing)", "Alloy down on some nodes", "Alloy DaemonSet not on every node"))
async def logging_signals(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Loki and every Alloy instance answer Prometheus's scrape (``up``, what LokiDown and
    AlloyDown alert on), and Alloy's DaemonSet runs on every node it should (runbook 7.4)."""
    cfg = check_settings(ctx, "logging-signals", LoggingSignals)
    loki, alloy = await asyncio.gather(_query(ctx, f"up{{job={promql_string(cfg.loki_job)}}}"),
                                       _query(ctx, f"up{{job={promql_string(cfg.alloy_job)}}}"))
    findings: list[Finding] = []
    for job, samples, step, alert in ((cfg.loki_job, loki, LOKI_STEP, "LokiDown"),
                                      (cfg.alloy_job, alloy, ALLOY_STEP, "AlloyDown")):
        down = sorted(s.labels.get("instance", "?") for s in samples if s.value < 1)
        if not samples:
            findings.append(Finding(status=Status.warn, target=f"job/{job}",
                                    summary=f"no scrape target for job {job} in Prometheus ({alert} cannot fire)",
                                    next_step=step))
        elif down:
            findings.append(Finding(status=Status.crit if len(down) == len(samples) else Status.warn,
                                    target=f"job/{job}",
                                    summary=f"{alert}: {len(down)} of {len(samples)} target(s) down: {', '.join(down)}",
                                    next_step=step))
        else:
            findings.append(Finding(status=Status.ok, target=f"job/{job}", summary=f"{len(samples)} target(s) up"))
    if ctx.kube is not None:
        ds, failed = await ctx.attempt(ctx.kube.get("apps/v1", "daemonsets", cfg.alloy_daemonset, cfg.namespace),
                                       f"daemonset/{cfg.namespace}/{cfg.alloy_daemonset}")
        if failed is not None:
            findings.append(failed)
        elif ds is not None:
            st = ds.get("status") or {}
            want, ready = int(st.get("desiredNumberScheduled") or 0), int(st.get("numberReady") or 0)
            if ready < want:
                findings.append(Finding(status=Status.warn, target=f"daemonset/{cfg.namespace}/{cfg.alloy_daemonset}",
                                        summary=f"{ready}/{want} Alloy pods ready", next_step=ALLOY_STEP))
    return findings
