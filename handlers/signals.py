"""The signals behind four runbook alerts, read where the alert reads them (Prometheus): CNPG
replication lag (6.2, ``ReplicationLag``) and connection use (6.6, ``HighConnections``) from the
CNPG exporter; Loki and Alloy scrape health (7.4, ``LokiDown``/``AlloyDown``), with Alloy's
DaemonSet coverage from the cluster when it is readable."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Finding, HandlerContext, NoParams, Sample, Severity, SourceError, Status, check_settings,
                     promql_string, sop)

LAG_STEP = ("6.2: is the replica catching up (pg_last_wal_replay_lsn)? if the lag grows, check the replica "
            "node's disk I/O and the PVC, then the replica's resources (kubectl top pod -n {ns} {pod})")
CONN_STEP = ("6.6: connections near max_connections: enable the CNPG PgBouncer Pooler or raise "
             "spec.postgresql.parameters.max_connections (kubectl edit cluster -n {ns} <cluster>)")
LOKI_STEP = "7.4 Loki ingestion errors: kubectl get pods -n monitoring -l app=loki and its logs; restart the statefulset"
ALLOY_STEP = ("7.4 Alloy collection gaps: kubectl get daemonset -n monitoring alloy -o wide; an Alloy pod "
              "missing on a node is a toleration or disk problem")
NO_PROMETHEUS = "set prometheus.url: this signal is a Prometheus metric"


class DatabaseSignals(BaseModel):
    """``checks.cnpg-signals`` in the config: the runbook's thresholds."""

    model_config = ConfigDict(extra="forbid")
    lag_warn_s: float = Field(30, gt=0, description="cnpg_pg_replication_lag above this: warn (6.2)")
    lag_crit_s: float = Field(300, gt=0, description="…above this (the runbook's 5 minutes): critical")
    connections_ratio: float = Field(0.8, gt=0, le=1, description="backends / max_connections above this: warn (6.6)")
    growth_window: str = Field("5m", pattern=r"^\d+[smh]$", description="window for 'is the lag growing'")
    namespace: str = "database"


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


@sop("cnpg-signals", title="CNPG replication lag and connection use (Prometheus)", sections=("6.2", "6.6"),
     severity=Severity.P3, alerts=("ReplicationLag", "HighConnections"),
     causes=("replica lagging (growing or catching up)", "connections near max_connections"))
async def cnpg_signals(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Each CNPG instance's replication lag (``cnpg_pg_replication_lag``, and whether it grows)
    and its backends against ``max_connections`` (runbook 6.2, 6.6)."""
    cfg = check_settings(ctx, "cnpg-signals", DatabaseSignals)
    ns = promql_string(cfg.namespace)
    lag, growth, conns = await asyncio.gather(
        _query(ctx, f"max by (namespace, pod) (cnpg_pg_replication_lag{{namespace={ns}}})"),
        _query(ctx, f"max by (namespace, pod) (deriv(cnpg_pg_replication_lag{{namespace={ns}}}[{cfg.growth_window}]))"),
        _query(ctx, f"sum by (namespace, pod) (cnpg_backends_total{{namespace={ns}}}) / on (namespace, pod) "
                    f"max by (namespace, pod) (cnpg_pg_settings_setting{{namespace={ns},name=\"max_connections\"}})"))
    rising = {(s.labels.get("namespace"), s.labels.get("pod")): s.value for s in growth}
    findings: list[Finding] = []
    for s in sorted(lag, key=lambda s: -s.value):
        key = (s.labels.get("namespace", ""), s.labels.get("pod", ""))
        if s.is_nan or s.value <= cfg.lag_warn_s:
            continue
        trend = rising.get(key, 0.0)
        how = "and growing" if trend > 0 else "catching up" if trend < 0 else "steady"
        findings.append(Finding(
            status=Status.crit if s.value > cfg.lag_crit_s else Status.warn, target=f"pod/{key[0]}/{key[1]}",
            summary=f"replication lag {s.value:.0f} s ({how}; ReplicationLag threshold {cfg.lag_warn_s:g} s)",
            next_step=LAG_STEP.format(ns=key[0], pod=key[1])))
    for s in sorted(conns, key=lambda s: -s.value):
        if s.is_nan or s.value <= cfg.connections_ratio:
            continue
        pod = s.labels.get("pod", "")
        findings.append(Finding(status=Status.warn, target=f"pod/{s.labels.get('namespace', '')}/{pod}",
                                summary=f"{s.value:.0%} of max_connections in use (HighConnections above "
                                        f"{cfg.connections_ratio:.0%})",
                                next_step=CONN_STEP.format(ns=s.labels.get("namespace", ""))))
    if not lag and not conns:
        return [Finding(status=Status.unknown, target="cnpg exporter",
                        summary=f"no cnpg_* metrics for namespace {cfg.namespace} in Prometheus: is the "
                                "CNPG PodMonitor scraped?")]
    worst_lag = max((s.value for s in lag if not s.is_nan), default=0.0)
    findings.insert(0, Finding(status=Status.ok, target="cnpg signals",
                               summary=f"{len(lag)} instance(s): max replication lag {worst_lag:.0f} s, "
                                       f"max connection use {max((s.value for s in conns), default=0.0):.0%}"))
    return findings


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
