"""Runbook chapter 6 (databases) and the CNPG rows of 11.4/11.5: CloudNativePG clusters in the
database namespace (failover, replica lag, backups, connections), LibreNMS's MariaDB Galera and
Harbor's Redis Sentinel.

Where the runbook runs ``psql``, ``mariadb`` or ``redis-cli`` through ``kubectl exec``, these SOPs
read the exporter metric carrying the same fact from Prometheus (no pods/exec): the CNPG
instance exporter, mysqld_exporter, redis_exporter."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Answer, Finding, HandlerContext, LogPattern, NoParams, Sample, Severity, SourceError, Status,
                     SuggestedAction, check_settings, condition, decision, parse_time, promql_string, sop)

CNPG = "postgresql.cnpg.io/v1"
MARIADB = "k8s.mariadb.com/v1alpha1"
NO_PROMETHEUS = "set prometheus.url: this signal is an exporter metric in Prometheus"
FAILOVER_STEP = ("6.1: failover is automatic and takes 1-2 minutes; once {new} serves, restart the apps if "
                 "they still fail (proposed below), then read the old primary's log")
INSTANCES_STEP = "6.1/6.2: kubectl get pods -n {ns} -l cnpg.io/cluster={name}: which instance is not ready?"
ESCALATE_61 = "6.1 escalation: CNPG cannot promote a replica (all replicas down): escalate to the DBA"
# Operator log lines worth quoting (controller-runtime's JSON logs).
OPERATOR_ERRORS = (LogPattern(regex=r'"level":"error"', cause="operator error"),)
# The old primary's own last words (PostgreSQL's PANIC on a full volume).
STORAGE_FULL = (LogPattern(regex=r"No space left on device", cause="storage full"),)


def _age(stamp: str | None, now: datetime) -> timedelta | None:
    t = parse_time(stamp)
    return None if t is None else now - t


def _human(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


async def _query(ctx: HandlerContext, promql: str) -> list[Sample]:
    if ctx.prometheus is None:
        raise SourceError("prometheus", NO_PROMETHEUS)
    return await ctx.prometheus.query(promql)


def _pod_cluster(pod: str) -> str:
    """A CNPG instance pod's cluster (instances are <cluster>-<n>)."""
    return re.sub(r"-\d+$", "", pod)


# -- 6.1 primary failover --------------------------------------------------------------------------
class CNPGChecks(BaseModel):
    """``checks.cnpg-health`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str | None = Field("database", description="null: every namespace")
    expected_instances: int | None = Field(3, ge=1, description="the runbook's 3; null: spec.instances")
    operator_namespace: str = "cnpg-system"
    operator_selector: str = "app.kubernetes.io/name=cloudnative-pg"
    apps: dict[str, list[str]] = Field(default_factory=dict, description=(
        "cluster → the namespace/deployment of the apps using it (6.1 step 3); a cluster not "
        "listed: the Deployments whose env references its Services or Secrets"))


def _phase(st: dict[str, Any]) -> str:
    return st.get("phaseReason") or st.get("phase") or ""


async def _failover_cause(ctx: HandlerContext, ns: str, pod_name: str, pods: dict[str, dict],
                          nodes: dict[str, dict]) -> list[str]:
    """Why an instance (the old primary, a failed one) is out: gone, OOMKilled, its node, a full disk."""
    pod = pods.get(pod_name)
    if pod is None:
        return [f"pod {pod_name} is gone (deleted or evicted)"]
    causes = []
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in (cs.get("state") or {}, cs.get("lastState") or {}):
            term = state.get("terminated") or {}
            if term.get("reason") == "OOMKilled":
                causes.append(f"{pod_name} was OOMKilled (exit code {term.get('exitCode', 137)}, "
                              f"restarts {cs.get('restartCount', 0)})")
                break
    node_name = (pod.get("spec") or {}).get("nodeName", "")
    node = nodes.get(node_name)
    if node is not None:
        ready = condition(node, "Ready")
        if ready is not None and ready.get("status") != "True":
            causes.append(f"node {node_name} NotReady: {ready.get('message') or ready.get('reason', '')}".rstrip(": "))
        elif (node.get("spec") or {}).get("unschedulable"):
            causes.append(f"node {node_name} cordoned (drained for maintenance?)")
    hits, _ = await ctx.attempt(ctx.log_hits(ns, pod_name, STORAGE_FULL, tail=200), f"pod/{ns}/{pod_name} log")
    for hit in hits or []:
        causes.append(f"storage full on {pod_name}: {hit.lines[-1]}")
    return causes


async def app_deployments(ctx: HandlerContext, cfg: CNPGChecks, cluster: str) -> list[str]:
    """namespace/name of the Deployments using ``cluster``: configured, or those whose env names
    its Services (<cluster>-rw/-ro/-r) or Secrets (<cluster>-*)."""
    if cluster in cfg.apps:
        return list(cfg.apps[cluster])
    deployments, _ = await ctx.attempt(ctx.require_kube().list("apps/v1", "deployments"), "deployments")
    ref = re.compile(rf"(^|[^a-z0-9-]){re.escape(cluster)}-(rw|ro|r|app|superuser)([^a-z0-9-]|$)")
    found = []
    for d in deployments or []:
        for c in (((d.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []:
            texts = [e.get("value") or "" for e in c.get("env") or []]
            texts += [((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("name") or ""
                      for e in c.get("env") or []]
            texts += [(e.get("secretRef") or {}).get("name") or "" for e in c.get("envFrom") or []]
            if any(ref.search(t) for t in texts):
                found.append(f"{d['metadata'].get('namespace', '')}/{d['metadata']['name']}")
                break
    return sorted(found)


@sop("cnpg-health", title="CNPG clusters: Ready, instances, failover and why", section="6.1",
     severity=Severity.P2, alerts=("CNPGClusterNotHealthy", "PostgreSQLDown"),
     causes=("primary pod crashed (OOMKilled)", "primary's node NotReady or drained", "storage full",
             "primary pod gone"))
async def cnpg_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Every CloudNativePG Cluster Ready=True with its instances ready (11.1, 6.1); for one that is
    not: phase, current/target primary, pod roles, the cluster's events, the operator's errors and
    why the primary failed (pod gone, OOMKilled, node NotReady or drained, disk full)."""
    cfg = check_settings(ctx, "cnpg-health", CNPGChecks)
    kube = ctx.require_kube()
    clusters = await kube.list(CNPG, "clusters", cfg.namespace)
    findings = []
    healthy = 0
    for c in clusters:
        meta, spec, st = c["metadata"], c.get("spec") or {}, c.get("status") or {}
        ns, name = meta.get("namespace", ""), meta["name"]
        want = cfg.expected_instances or int(spec.get("instances") or 0)
        ready_n = int(st.get("readyInstances") or 0)
        cond = condition(c, "Ready")
        problems = []
        if cond is None or cond.get("status") != "True":
            problems.append(f"Ready={(cond or {}).get('status', 'missing')}")
        if ready_n < want:
            problems.append(f"{ready_n}/{want} instances ready")
        if not problems:
            healthy += 1
            continue
        findings += await _cluster_problem(ctx, cfg, c, ns, name, problems, ready_n)
    where = f" in {cfg.namespace}" if cfg.namespace else ""
    findings.insert(0, Finding(status=Status.ok if healthy == len(clusters) else Status.warn,
                               target="cnpg clusters",
                               summary=f"{healthy}/{len(clusters)} CNPG clusters Ready{where}"
                                       + (" (none found)" if not clusters else ""),
                               next_step="" if healthy == len(clusters) else "6.1: see the clusters below"))
    return findings


async def _cluster_problem(ctx: HandlerContext, cfg: CNPGChecks, c: dict[str, Any], ns: str, name: str,
                           problems: list[str], ready_n: int) -> list[Finding]:
    kube = ctx.require_kube()
    st = c.get("status") or {}
    phase = _phase(st)
    current, target = st.get("currentPrimary", "?"), st.get("targetPrimary") or st.get("currentPrimary", "?")
    failing_over = current != target or "fail" in phase.lower()
    pods_list, nodes_list = await asyncio.gather(
        kube.list("v1", "pods", ns, label_selector=f"cnpg.io/cluster={name}"), kube.list("v1", "nodes"))
    pods = {p["metadata"]["name"]: p for p in pods_list}
    nodes = {n["metadata"]["name"]: n for n in nodes_list}
    failed = list((st.get("instancesStatus") or {}).get("failed") or [])
    suspects = list(dict.fromkeys(([current] if failing_over else []) + failed
                                  + [n for n in st.get("instanceNames") or [] if n not in pods]))
    causes: list[str] = []
    for pod in suspects:
        causes += await _failover_cause(ctx, ns, pod, pods, nodes)
    roles = []
    for pname in sorted(set(st.get("instanceNames") or []) | set(pods)):
        p = pods.get(pname)
        if p is None:
            roles.append(f"{pname}: missing")
            continue
        labels = p["metadata"].get("labels") or {}
        ready = condition(p, "Ready")
        roles.append(f"{pname}: {labels.get('cnpg.io/instanceRole') or labels.get('role', '?')}, "
                     f"{'ready' if ready and ready.get('status') == 'True' else 'not ready'}, "
                     f"node {(p.get('spec') or {}).get('nodeName', '?')}")
    events, _ = await ctx.attempt(ctx.events(ns, kind="Cluster", name=name), f"events of cluster/{ns}/{name}")
    details = ["pods: " + "; ".join(roles)]
    details += [f"event {e.reason}: {e.message}" for e in (events or [])[:5]]
    op_pods, _ = await ctx.attempt(kube.list("v1", "pods", cfg.operator_namespace,
                                             label_selector=cfg.operator_selector), "cnpg operator")
    for op in (op_pods or [])[:1]:
        hits, _ = await ctx.attempt(ctx.log_hits(cfg.operator_namespace, op["metadata"]["name"], OPERATOR_ERRORS,
                                                 tail=50), "cnpg operator log")
        details += [f"operator: {line}" for hit in hits or [] for line in hit.lines]
    primary = current + (f" → {target}" if target != current else "")
    why = f"; why: {'; '.join(causes)}" if causes else ("; why: not readable (no pod, node or log evidence)"
                                                          if failing_over else "")
    actions = []
    apps = await app_deployments(ctx, cfg, name) if failing_over else []
    if apps:
        actions.append(SuggestedAction(action="cnpg-restart-apps", params={"namespace": ns, "cluster": name}))
        details.append("apps using it: " + ", ".join(apps))
    if ready_n == 0:
        step = ESCALATE_61
    elif failing_over:
        step = FAILOVER_STEP.format(new=target)
    else:
        step = INSTANCES_STEP.format(ns=ns, name=name)
    return [Finding(status=Status.crit if ready_n == 0 else Status.warn, target=f"cluster/{ns}/{name}",
                    summary=f"{', '.join(problems)}; {phase or 'no phase'}; primary {primary}{why}",
                    details="\n".join(details), next_step=step, actions=actions)]


# -- 6.2 replica lag -------------------------------------------------------------------------------
class LagChecks(BaseModel):
    """``checks.cnpg-replica-lag`` in the config: the runbook's thresholds."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "database"
    lag_warn_s: float = Field(30, gt=0, description="cnpg_pg_replication_lag above this: warn (the ReplicationLag alert)")
    lag_crit_s: float = Field(300, gt=0, description="…above this (the runbook's 5 minutes, escalate to the DBA): critical")
    growth_window: str = Field("10m", pattern=r"^\d+[smh]$", description="lag above the warn level and growing over this: critical")
    pvc_full_ratio: float = Field(0.9, gt=0, le=1, description="replica PVC used/capacity above this: named as the cause")


LAG_STEP = ("6.2: if the lag grows, check disk I/O on {node} (SSH: iostat -x 1 5 — the bot cannot), the PVC "
            "(kubectl get pvc -n {ns} -l cnpg.io/cluster={cluster}), then raise the replica's resources "
            "(kubectl edit cluster -n {ns} {cluster}: resources.requests) — resizing is a manual edit")


@sop("cnpg-replica-lag", title="CNPG replica lag per replica (Prometheus), resources and PVC fill", section="6.2",
     severity=Severity.P3, alerts=("ReplicationLag",),
     causes=("replica lag growing", "replica PVC nearly full", "replica catching up"))
async def cnpg_replica_lag(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Each replica's ``cnpg_pg_replication_lag`` (what ReplicationLag alerts on: > 30 s), whether
    it grew over the last 10 minutes, and for a lagging one its CPU/memory use and PVC fill."""
    cfg = check_settings(ctx, "cnpg-replica-lag", LagChecks)
    ns = promql_string(cfg.namespace)
    lag, growth, used = await asyncio.gather(
        _query(ctx, f"max by (namespace, pod) (cnpg_pg_replication_lag{{namespace={ns}}})"),
        _query(ctx, f"max by (namespace, pod) (deriv(cnpg_pg_replication_lag{{namespace={ns}}}[{cfg.growth_window}]))"),
        _query(ctx, f"max by (namespace, persistentvolumeclaim) (kubelet_volume_stats_used_bytes{{namespace={ns}}}"
                    f" / kubelet_volume_stats_capacity_bytes{{namespace={ns}}})"))
    if not lag:
        return [Finding(status=Status.unknown, target="cnpg exporter",
                        summary=f"no cnpg_pg_replication_lag for namespace {cfg.namespace} in Prometheus: is the "
                                "CNPG PodMonitor scraped?")]
    rising = {s.labels.get("pod"): s.value for s in growth}
    fill = {s.labels.get("persistentvolumeclaim"): s.value for s in used}
    usage: dict[str, Any] = {}
    node_of: dict[str, str] = {}
    lagging = [s for s in lag if not s.is_nan and s.value > cfg.lag_warn_s]
    if lagging and ctx.kube is not None:
        got, _ = await ctx.attempt(ctx.pod_usage(cfg.namespace), "pod metrics")
        usage = {u.name: u for u in got or []}
        pods, _ = await ctx.attempt(ctx.kube.list("v1", "pods", cfg.namespace), f"pods in {cfg.namespace}")
        node_of = {p["metadata"]["name"]: (p.get("spec") or {}).get("nodeName", "") for p in pods or []}
    findings: list[Finding] = []
    for s in sorted(lagging, key=lambda s: -s.value):
        pod = s.labels.get("pod", "")
        cluster = _pod_cluster(pod)
        trend = rising.get(pod, 0.0)
        growing = trend > 0
        causes = []
        if growing:
            causes.append(f"replica lag growing over {cfg.growth_window} (+{trend * 60:.1f} s/min)")
        elif trend < 0:
            causes.append(f"replica catching up ({trend * 60:.1f} s/min)")
        if fill.get(pod, 0.0) > cfg.pvc_full_ratio:
            causes.append(f"replica PVC nearly full: {pod} {fill[pod]:.0%} used")
        u = usage.get(pod)
        res = f"; uses {u.cpu_cores:.2f} CPU, {u.memory_bytes / 2 ** 20:.0f} MiB" if u else ""
        status = Status.crit if s.value > cfg.lag_crit_s or growing else Status.warn
        node = node_of.get(pod) or "the replica's node"
        findings.append(Finding(
            status=status, target=f"pod/{cfg.namespace}/{pod}",
            summary=f"replication lag {s.value:.0f} s (ReplicationLag above {cfg.lag_warn_s:g} s)"
                    + (f"; {'; '.join(causes)}" if causes else "; steady") + res,
            details="; ".join(x for x in (f"PVC {pod}: {fill[pod]:.0%} used" if pod in fill else "",
                                          f"node {node_of[pod]}" if node_of.get(pod) else "") if x),
            next_step=LAG_STEP.format(node=node, ns=cfg.namespace, cluster=cluster)
            + ("; lag over 5 minutes: escalate to the DBA" if s.value > cfg.lag_crit_s else "")))
    worst = max((s.value for s in lag if not s.is_nan), default=0.0)
    findings.insert(0, Finding(status=Status.ok, target="cnpg replicas",
                               summary=f"{len(lag)} instance(s): max replication lag {worst:.1f} s"))
    return findings


# -- 6.6 connection pool exhaustion ------------------------------------------------------------------
class ConnectionChecks(BaseModel):
    """``checks.cnpg-connections`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "database"
    ratio: float = Field(0.8, gt=0, le=1, description="backends / max_connections above this: warn (HighConnections)")
    idle_ratio: float = Field(0.5, gt=0, le=1, description="idle-in-transaction share of backends above this: a leak")
    low_max_connections: int = Field(100, ge=1, description="max_connections below this is 'set too low'")


CONN_STEP = ("6.6: enable the CNPG PgBouncer Pooler (proposed) and point the apps at its Service, or raise "
             "spec.postgresql.parameters.max_connections (kubectl edit cluster -n {ns} {cluster}: \"200\")")
LEAK_STEP = "6.6 escalation: connections held idle in transaction look like a leak: escalate to the app team"


@sop("cnpg-connections", title="CNPG connections against max_connections (Prometheus), Poolers", section="6.6",
     severity=Severity.P2, alerts=("HighConnections",),
     causes=("no connection pooler", "connection leak (idle in transaction)", "max_connections set too low"))
async def cnpg_connections(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Per cluster: ``cnpg_backends_total`` / ``max_connections`` on each instance (what
    HighConnections alerts on, > 0.8), by state, and whether a PgBouncer Pooler fronts it."""
    cfg = check_settings(ctx, "cnpg-connections", ConnectionChecks)
    ns = promql_string(cfg.namespace)
    backends, states, max_conn = await asyncio.gather(
        _query(ctx, f"sum by (namespace, pod) (cnpg_backends_total{{namespace={ns}}})"),
        _query(ctx, f"sum by (namespace, pod, state) (cnpg_backends_total{{namespace={ns}}})"),
        _query(ctx, f"max by (namespace, pod) (cnpg_pg_settings_setting{{namespace={ns},name=\"max_connections\"}})"))
    if not backends:
        return [Finding(status=Status.unknown, target="cnpg exporter",
                        summary=f"no cnpg_backends_total for namespace {cfg.namespace} in Prometheus: is the "
                                "CNPG PodMonitor scraped?")]
    limit = {s.labels.get("pod"): s.value for s in max_conn}
    by_state: dict[str, dict[str, float]] = {}
    for s in states:
        by_state.setdefault(s.labels.get("pod", ""), {})[s.labels.get("state", "")] = s.value
    poolers: list[dict[str, Any]] | None = None
    if ctx.kube is not None:
        poolers, _ = await ctx.attempt(ctx.kube.list(CNPG, "poolers", cfg.namespace), "poolers")
    pooled = {((p.get("spec") or {}).get("cluster") or {}).get("name") for p in poolers or []}
    findings: list[Finding] = []
    worst = 0.0
    for s in sorted(backends, key=lambda s: -s.value):
        pod = s.labels.get("pod", "")
        cap = limit.get(pod)
        if not cap:
            continue
        ratio = s.value / cap
        worst = max(worst, ratio)
        if ratio <= cfg.ratio:
            continue
        cluster = _pod_cluster(pod)
        st = by_state.get(pod, {})
        idle_tx = st.get("idle in transaction", 0.0) + st.get("idle in transaction (aborted)", 0.0)
        causes = []
        if idle_tx / s.value > cfg.idle_ratio:
            causes.append(f"connection leak (idle in transaction): {idle_tx:.0f} of {s.value:.0f} backends")
        if cap < cfg.low_max_connections:
            causes.append(f"max_connections set too low: {cap:.0f}")
        actions = []
        if poolers is not None and cluster not in pooled:
            causes.append(f"no connection pooler: no PgBouncer Pooler for {cluster}")
            actions.append(SuggestedAction(action="cnpg-pooler", params={"namespace": cfg.namespace,
                                                                         "cluster": cluster}))
        states_text = ", ".join(f"{k or '?'} {v:.0f}" for k, v in sorted(st.items()))
        findings.append(Finding(
            status=Status.warn, target=f"pod/{cfg.namespace}/{pod}",
            summary=f"{s.value:.0f}/{cap:.0f} connections ({ratio:.0%}, HighConnections above {cfg.ratio:.0%})"
                    + (f"; {'; '.join(causes)}" if causes else ""),
            details=f"backends by state: {states_text}",
            next_step=LEAK_STEP if idle_tx / s.value > cfg.idle_ratio else CONN_STEP.format(ns=cfg.namespace,
                                                                                              cluster=cluster),
            actions=actions))
    findings.insert(0, Finding(status=Status.ok, target="cnpg connections",
                               summary=f"{len(backends)} instance(s): max connection use {worst:.0%}; " + (
                                   "Poolers not checked (no Kubernetes access)" if poolers is None else
                                   f"Poolers for {', '.join(sorted(c for c in pooled if c)) or 'no cluster'}")))
    return findings


# -- 6.3 backup failure -------------------------------------------------------------------------------
class BackupChecks(BaseModel):
    """``checks.cnpg-backups`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "database"
    minio_namespace: str = "minio"
    minio_service: str = "minio"
    recent: int = Field(3, ge=1, le=20, description="how many of the latest Backups per cluster to show")


# Backup error texts (barman-cloud / the AWS SDK) → the runbook's root cause.
BACKUP_ERRORS = (
    (re.compile(r"NoSuchBucket|bucket does not exist", re.I), "MinIO bucket does not exist"),
    (re.compile(r"InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|credentials", re.I),
     "incorrect credentials"),
    (re.compile(r"connection refused|no such host|timed out|could not connect|EndpointConnectionError", re.I),
     "MinIO unreachable"),
    (re.compile(r"No space left on device", re.I), "PVC full preventing WAL archival"),
)
BACKUP_STEP = ("6.3: fix the cause, then take an on-demand Backup (proposed); as an interim, pg_dump by hand "
               "(kubectl exec — the bot does not exec); failing > 24 h affects RPO: escalate to the DBA")


def _backup_cause(text: str) -> str:
    for rx, cause in BACKUP_ERRORS:
        if rx.search(text):
            return cause
    return ""


def _creds_secret(spec: dict[str, Any]) -> str | None:
    store = ((spec.get("backup") or {}).get("barmanObjectStore") or {})
    return (((store.get("s3Credentials") or {}).get("accessKeyId")) or {}).get("name")


@sop("cnpg-backups", title="CNPG backups: schedules, last Backups, object store, credentials", section="6.3",
     severity=Severity.P3,
     causes=("MinIO unreachable", "MinIO bucket does not exist", "incorrect credentials",
             "PVC full preventing WAL archival"))
async def cnpg_backups(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Per CNPG cluster: its ScheduledBackups, the latest Backups with phase and error,
    lastSuccessfulBackup and the first recoverability point, the ContinuousArchiving condition;
    the object store (MinIO pods and Service) and the credentials Secret (by name, metadata only)."""
    cfg = check_settings(ctx, "cnpg-backups", BackupChecks)
    kube = ctx.require_kube()
    clusters, backups, schedules = await asyncio.gather(
        kube.list(CNPG, "clusters", cfg.namespace), kube.list(CNPG, "backups", cfg.namespace),
        kube.list(CNPG, "scheduledbackups", cfg.namespace))
    findings: list[Finding] = []
    store = await _object_store(ctx, cfg)
    findings.append(store)
    now = datetime.now(timezone.utc)
    for c in clusters:
        name = c["metadata"]["name"]
        st, spec = c.get("status") or {}, c.get("spec") or {}
        mine = sorted((b for b in backups if ((b.get("spec") or {}).get("cluster") or {}).get("name") == name),
                      key=lambda b: b["metadata"].get("creationTimestamp", ""), reverse=True)[:cfg.recent]
        sched = [s for s in schedules if ((s.get("spec") or {}).get("cluster") or {}).get("name") == name]
        problems, causes = [], []
        last = mine[0] if mine else None
        if last is not None and (last.get("status") or {}).get("phase") == "failed":
            err = (last.get("status") or {}).get("error", "")
            problems.append(f"last Backup {last['metadata']['name']} failed: {err}")
            if cause := _backup_cause(err):
                causes.append(cause)
        arch = condition(c, "ContinuousArchiving")
        if arch is not None and arch.get("status") != "True":
            msg = arch.get("message", "")
            problems.append(f"WAL archiving failing: {msg}")
            if cause := _backup_cause(msg):
                causes.append(cause)
        if not sched:
            problems.append("no ScheduledBackup")
        elif all((s.get("spec") or {}).get("suspend") for s in sched):
            problems.append("ScheduledBackup suspended")
        secret = _creds_secret(spec)
        if secret and problems:
            try:
                await kube.metadata("v1", "secrets", secret, cfg.namespace)
            except SourceError as exc:
                if exc.status == 404:
                    causes.insert(0, "incorrect credentials")
                    problems.append(f"credentials Secret {secret} does not exist")
                else:
                    problems.append(f"credentials Secret {secret} not checkable ({exc.reason})")
        if store.status is not Status.ok and problems and "MinIO unreachable" not in causes:
            causes.insert(0, "MinIO unreachable")
        causes = list(dict.fromkeys(causes))
        age = _age(st.get("lastSuccessfulBackup"), now)
        info = (f"last successful backup {_human(age)} ago" if age else "no successful backup yet") + \
               f"; recoverable from {st.get('firstRecoverabilityPoint') or 'nowhere (no base backup)'}"
        details = [f"{b['metadata']['name']}: {(b.get('status') or {}).get('phase', 'pending')}"
                   + (f" ({b['status']['error']})" if (b.get("status") or {}).get("error") else "") for b in mine]
        details += [f"schedule {s['metadata']['name']}: {(s.get('spec') or {}).get('schedule')}"
                    + (" (suspended)" if (s.get("spec") or {}).get("suspend") else "") for s in sched]
        if not problems:
            findings.append(Finding(status=Status.ok, target=f"cluster/{cfg.namespace}/{name}", summary=info,
                                    details="\n".join(details)))
            continue
        findings.append(Finding(
            status=Status.warn, target=f"cluster/{cfg.namespace}/{name}",
            summary="; ".join(problems) + (f"; cause: {', '.join(causes)}" if causes else "") + f"; {info}",
            details="\n".join(details), next_step=BACKUP_STEP,
            actions=[SuggestedAction(action="cnpg-backup", params={"namespace": cfg.namespace, "cluster": name})]))
    return findings


async def _object_store(ctx: HandlerContext, cfg: BackupChecks) -> Finding:
    """MinIO: its Service and the pods behind it (the runbook's `kubectl get pods/svc -n minio`)."""
    kube = ctx.require_kube()
    target = f"service/{cfg.minio_namespace}/{cfg.minio_service}"
    try:
        svc = await kube.get("v1", "services", cfg.minio_service, cfg.minio_namespace)
    except SourceError as exc:
        if exc.status == 404:
            return Finding(status=Status.warn, target=target, summary="MinIO unreachable: its Service does not exist",
                           next_step="6.3 step 1: kubectl get pods,svc -n minio")
        raise
    selector = ",".join(f"{k}={v}" for k, v in ((svc.get("spec") or {}).get("selector") or {}).items())
    pods = await kube.list("v1", "pods", cfg.minio_namespace, label_selector=selector) if selector else []
    ready = [p["metadata"]["name"] for p in pods
             if (condition(p, "Ready") or {}).get("status") == "True"]
    if not ready:
        why = "; ".join(f"{p['metadata']['name']} {(p.get('status') or {}).get('phase', '?')}" for p in pods) \
            or "no pods"
        return Finding(status=Status.warn, target=target,
                       summary=f"MinIO unreachable: no ready pod behind the Service ({why})",
                       next_step="6.3 step 1: kubectl get pods -n minio; its logs and PVC")
    return Finding(status=Status.ok, target=target, summary=f"object store: {len(ready)}/{len(pods)} MinIO pod(s) ready")


# -- 11.4 / 11.5 backups against the schedule ----------------------------------------------------------
class BackupAgeChecks(BaseModel):
    """``checks.backup-age``: the runbook's 11.5 schedule table, CNPG row (continuous WAL plus a
    scheduled base backup, 7 days retention)."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "database"
    base_backup_max_age_h: float = Field(26, gt=0, description="the daily base backup plus slack")
    wal_max_age_s: float = Field(900, gt=0, description="'continuous' WAL archiving: seconds since the last archived WAL")
    retention_days: float = Field(7, gt=0, description="the recoverability window should reach this far back")


SCHEDULE_STEP = "11.5: CNPG databases are backed up continuously (WAL) plus a scheduled base backup; see 6.3"


@sop("backup-age", title="Backups against the schedule table: CNPG base backup and WAL archiving age",
     sections=("11.5", "11.4"), severity=Severity.P3,
     causes=("base backup older than the schedule", "WAL archiving stale", "recoverability window shorter than retention"))
async def backup_age(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Each CNPG cluster's last base backup (status.lastSuccessfulBackup), WAL archiving age
    (``cnpg_pg_stat_archiver_seconds_since_last_archival`` on the primary) and recoverability
    window, each against its row of the 11.5 schedule table."""
    cfg = check_settings(ctx, "backup-age", BackupAgeChecks)
    clusters = await ctx.require_kube().list(CNPG, "clusters", cfg.namespace)
    wal: dict[str, float] = {}
    wal_note = ""
    try:
        ns = promql_string(cfg.namespace)
        for s in await _query(ctx, f"max by (pod) (cnpg_pg_stat_archiver_seconds_since_last_archival{{namespace={ns}}})"):
            wal[s.labels.get("pod", "")] = s.value
    except SourceError as exc:
        wal_note = f"WAL age not checkable ({exc.reason})"
    now = datetime.now(timezone.utc)
    findings = []
    for c in clusters:
        name, st = c["metadata"]["name"], c.get("status") or {}
        problems, facts = [], []
        base = _age(st.get("lastSuccessfulBackup"), now)
        if base is None:
            problems.append("base backup older than the schedule: none yet")
        elif base > timedelta(hours=cfg.base_backup_max_age_h):
            problems.append(f"base backup older than the schedule: {_human(base)} old "
                            f"(row: scheduled base backup, max {cfg.base_backup_max_age_h:g} h)")
        else:
            facts.append(f"base backup {_human(base)} old")
        primary = st.get("currentPrimary", "")
        if primary in wal:
            if wal[primary] > cfg.wal_max_age_s:
                problems.append(f"WAL archiving stale: last WAL archived {_human(timedelta(seconds=wal[primary]))} "
                                f"ago on {primary} (row: continuous, max {_human(timedelta(seconds=cfg.wal_max_age_s))})")
            else:
                facts.append(f"WAL archived {wal[primary]:.0f} s ago")
        elif not wal_note:
            facts.append(f"no WAL archiver metric for {primary}")
        first = _age(st.get("firstRecoverabilityPoint"), now)
        if base is not None and first is not None and first < timedelta(days=cfg.retention_days) - timedelta(hours=cfg.base_backup_max_age_h):
            problems.append(f"recoverability window shorter than retention: back to {_human(first)} ago "
                            f"(row: {cfg.retention_days:g} days)")
        findings.append(Finding(status=Status.warn if problems else Status.ok, target=f"cluster/{cfg.namespace}/{name}",
                                summary="; ".join(problems or facts) + (f"; {wal_note}" if wal_note else ""),
                                next_step=SCHEDULE_STEP if problems else "",
                                actions=[SuggestedAction(action="cnpg-backup", params={
                                    "namespace": cfg.namespace, "cluster": name})] if any(
                                    p.startswith("base backup") for p in problems) else []))
    if not clusters:
        findings.append(Finding(status=Status.ok, target="cnpg clusters", summary="no CNPG cluster: nothing to back up"))
    return findings


# -- 6.4 MariaDB Galera split-brain ------------------------------------------------------------------
class GaleraChecks(BaseModel):
    """``checks.galera-health`` in the config (LibreNMS's MariaDB, optional)."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "librenms"


GALERA_STEP = ("6.4 (guidance: needs StatefulSet edits the bot does not make): scale librenms-mariadb to 0, "
               "bootstrap from {node} (wsrep_last_committed {seqno}, the most recent data) with "
               "WSREP_NEW_CLUSTER=1, scale to 1 then to full; escalate to the DBA if data differs")


@sop("galera-health", title="MariaDB Galera (LibreNMS): operator status, cluster size and last committed per node",
     section="6.4", severity=Severity.P1, causes=("network partition: the nodes formed separate clusters",))
async def galera_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """The mariadb-operator MariaDB's Ready condition and, per node from mysqld_exporter,
    ``wsrep_cluster_size``, ``wsrep_cluster_status`` and ``wsrep_last_committed``: nodes in
    different components are a split brain; the bootstrap node is the one with the most recent data."""
    cfg = check_settings(ctx, "galera-health", GaleraChecks)
    kube = ctx.require_kube()
    try:
        dbs = await kube.list(MARIADB, "mariadbs", cfg.namespace)
    except SourceError as exc:
        if exc.status == 404:  # CRD not installed: LibreNMS (optional) is not deployed
            dbs = []
        else:
            raise
    if not dbs:
        return [Finding(status=Status.ok, target=f"namespace/{cfg.namespace}",
                        summary="MariaDB Galera: not deployed (no MariaDB in this namespace)")]
    ns = promql_string(cfg.namespace)
    size, status, seq = await asyncio.gather(
        _query(ctx, f"max by (pod) (mysql_global_status_wsrep_cluster_size{{namespace={ns}}})"),
        _query(ctx, f"max by (pod) (mysql_global_status_wsrep_cluster_status{{namespace={ns}}})"),
        _query(ctx, f"max by (pod) (mysql_global_status_wsrep_last_committed{{namespace={ns}}})"))
    sizes = {s.labels.get("pod", ""): int(s.value) for s in size}
    primary = {s.labels.get("pod", ""): s.value == 1 for s in status}
    seqnos = {s.labels.get("pod", ""): int(s.value) for s in seq}
    findings = []
    for db in dbs:
        name = db["metadata"]["name"]
        want = int((db.get("spec") or {}).get("replicas") or 3)
        ready = condition(db, "Ready")
        op = f"operator: Ready={(ready or {}).get('status', '?')} {(ready or {}).get('message', '')}".strip()
        nodes = sorted(p for p in sizes if p.startswith(f"{name}-"))
        rows = "\n".join(f"{p}: wsrep_cluster_size {sizes[p]}, "
                         f"{'Primary' if primary.get(p) else 'non-Primary'}, wsrep_last_committed {seqnos.get(p, '?')}"
                         for p in nodes)
        if not nodes:
            findings.append(Finding(status=Status.unknown, target=f"mariadb/{cfg.namespace}/{name}",
                                    summary=f"no mysqld_exporter metrics for {name} in Prometheus; {op}"))
            continue
        split = any(sizes[p] < want for p in nodes) or len({sizes[p] for p in nodes}) > 1
        if not split and all(primary.get(p) for p in nodes):
            findings.append(Finding(status=Status.ok, target=f"mariadb/{cfg.namespace}/{name}",
                                    summary=f"{len(nodes)} node(s), wsrep_cluster_size {want} on each; {op}",
                                    details=rows))
            continue
        best = max(nodes, key=lambda p: seqnos.get(p, -1))
        parts = sum(1 for p in nodes if primary.get(p))
        findings.append(Finding(
            status=Status.crit, target=f"mariadb/{cfg.namespace}/{name}",
            summary=(f"split brain — network partition: the nodes formed separate clusters "
                     f"(sizes {', '.join(f'{p} {sizes[p]}' for p in nodes)}; {parts} claim Primary); "
                     f"most recent data on {best} (wsrep_last_committed {seqnos.get(best, '?')}); {op}"),
            details=rows, next_step=GALERA_STEP.format(node=best, seqno=seqnos.get(best, "?"))))
    return findings


# -- 6.5 Redis Sentinel -------------------------------------------------------------------------------
class SentinelChecks(BaseModel):
    """``checks.redis-sentinel`` in the config (Harbor's Redis)."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "harbor"
    redis_selector: str = "app=harbor-redis"
    sentinel_selector: str = "app=harbor-redis-sentinel"
    master_name: str = "mymaster"
    failover_window: str = Field("30m", pattern=r"^\d+[smh]$", description="a master change within this is a recent failover")
    app_deployment: str = "harbor-core"


@sop("redis-sentinel", title="Redis Sentinel (Harbor): the master each Sentinel sees, Redis pods", section="6.5",
     severity=Severity.P3,
     causes=("Sentinels disagree on the master", "Redis master pod crashed or unreachable", "recent failover"))
async def redis_sentinel(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """What ``SENTINEL get-master-addr-by-name`` answers on each Sentinel, read from redis_exporter
    (``redis_sentinel_master_status``): Sentinels naming different masters is the cause; the
    master's pod not ready, and a master change in the last 30 min (then restart harbor-core)."""
    cfg = check_settings(ctx, "redis-sentinel", SentinelChecks)
    kube = ctx.require_kube()
    redis_pods, sentinels = await asyncio.gather(
        kube.list("v1", "pods", cfg.namespace, label_selector=cfg.redis_selector),
        kube.list("v1", "pods", cfg.namespace, label_selector=cfg.sentinel_selector))
    if not redis_pods and not sentinels:
        return [Finding(status=Status.ok, target=f"namespace/{cfg.namespace}",
                        summary="Redis Sentinel: not deployed (no Redis or Sentinel pods)")]
    ns, master = promql_string(cfg.namespace), promql_string(cfg.master_name)
    now_seen, window = await asyncio.gather(
        _query(ctx, f"max by (pod, master_address) (redis_sentinel_master_status{{namespace={ns},master_name={master}}})"),
        _query(ctx, f"count by (master_address) (max_over_time(redis_sentinel_master_status{{namespace={ns},"
                    f"master_name={master}}}[{cfg.failover_window}]))"))
    by_ip = {(p.get("status") or {}).get("podIP"): p for p in redis_pods}

    def who(address: str) -> str:
        pod = by_ip.get(address.rsplit(":", 1)[0])
        return f"{pod['metadata']['name']} ({address})" if pod else f"{address} (no Redis pod has this IP)"

    seen: dict[str, list[str]] = {}
    for s in now_seen:
        seen.setdefault(s.labels.get("master_address", "?"), []).append(s.labels.get("pod", "?"))
    if not seen:
        return [Finding(status=Status.unknown, target="redis exporter",
                        summary=f"no redis_sentinel_master_status for {cfg.master_name} in Prometheus")]
    findings = []
    target = f"sentinel/{cfg.namespace}/{cfg.master_name}"
    views = "; ".join(f"{', '.join(sorted(pods))} → {who(addr)}" for addr, pods in sorted(seen.items()))
    if len(seen) > 1:
        findings.append(Finding(status=Status.warn, target=target,
                                summary=f"Sentinels disagree on the master: {views}",
                                next_step="6.5: check the Sentinels can reach each other and the Redis pods "
                                          "(kubectl get pods -n harbor -l app=harbor-redis -o wide); then restart "
                                          "the Sentinel that is wrong"))
        return findings
    address = next(iter(seen))
    pod = by_ip.get(address.rsplit(":", 1)[0])
    if pod is None or (condition(pod, "Ready") or {}).get("status") != "True":
        findings.append(Finding(status=Status.crit, target=target,
                                summary=f"Redis master pod crashed or unreachable: the Sentinels name {who(address)}"
                                        + ("" if pod is None else ", which is not ready"),
                                next_step="6.5: Sentinel promotes a replica by itself; if it does not, check the "
                                          "Sentinels' quorum and the Redis pods' logs"))
        return findings
    changed = len(window) > 1
    if changed:
        findings.append(Finding(
            status=Status.warn, target=target,
            summary=f"recent failover: the master changed in the last {cfg.failover_window}; now {who(address)}, "
                    f"agreed by {len(seen[address])} Sentinel(s)",
            next_step=f"6.5 step 3: if Harbor still errors, restart {cfg.app_deployment} (proposed) to drop stale "
                      "connections; Sentinel must stay without auth (Harbor cannot use sentinelPassword)",
            actions=[SuggestedAction(action="restart", params={"kind": "deployment", "namespace": cfg.namespace,
                                                               "name": cfg.app_deployment})]))
    else:
        findings.append(Finding(status=Status.ok, target=target,
                                summary=f"{len(seen[address])} Sentinel(s) agree: master {who(address)}"))
    return findings


# -- the chapter's flowchart (/sop triage database): each decision answered from the SOPs' evidence --
def _bad(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.status in (Status.warn, Status.crit)]


async def _try(ctx: HandlerContext, handler: Any) -> list[Finding] | None:
    """A SOP's findings, or None when its source is missing (no Prometheus, no access)."""
    try:
        return await handler(ctx, NoParams())
    except SourceError:
        return None


@decision("Which database?")
async def which_database(ctx: HandlerContext) -> Answer:
    """The database whose evidence shows a problem: Galera (P1) first, then CNPG, then Redis."""
    evidence = []
    for branch, handlers in (("MariaDB Galera", (galera_health,)),
                             ("CNPG PostgreSQL", (cnpg_health, cnpg_connections, cnpg_replica_lag, cnpg_backups)),
                             ("Redis Sentinel", (redis_sentinel,))):
        for handler in handlers:
            found = await _try(ctx, handler)
            bad = _bad(found or [])
            if bad:
                return Answer(branch, f"{bad[0].target}: {bad[0].summary}")
            if found is None:
                evidence.append(f"{branch}: not checkable")
    return Answer(None, "no database shows a problem" + (f" ({'; '.join(evidence)})" if evidence else ""))


@decision("Cluster status?")
async def cnpg_cluster_status(ctx: HandlerContext) -> Answer:
    cfg = check_settings(ctx, "cnpg-health", CNPGChecks)
    clusters = await ctx.require_kube().list(CNPG, "clusters", cfg.namespace)
    degraded = []
    for c in clusters:
        st = c.get("status") or {}
        name = c["metadata"]["name"]
        if st.get("currentPrimary") != (st.get("targetPrimary") or st.get("currentPrimary")) or \
                "fail" in _phase(st).lower():
            return Answer("Failover in progress", f"{name}: {_phase(st)}")
        ready = condition(c, "Ready")
        if ready is None or ready.get("status") != "True" or \
                int(st.get("readyInstances") or 0) < int(st.get("instances") or 0):
            degraded.append(f"{name}: {_phase(st) or 'not Ready'}, {st.get('readyInstances', 0)}/"
                            f"{st.get('instances', '?')} ready")
    if degraded:
        return Answer("Degraded", "; ".join(degraded))
    return Answer("Healthy", f"{len(clusters)} CNPG cluster(s) in healthy state")


@decision("Pods and PVCs?")
@decision("Check pod status + PVCs")
async def cnpg_pods_and_pvcs(ctx: HandlerContext) -> Answer:
    cfg = check_settings(ctx, "cnpg-health", CNPGChecks)
    kube = ctx.require_kube()
    pvcs, pods = await asyncio.gather(kube.list("v1", "persistentvolumeclaims", cfg.namespace, label_selector="cnpg.io/cluster"),
                                      kube.list("v1", "pods", cfg.namespace, label_selector="cnpg.io/cluster"))
    pending = [p["metadata"]["name"] for p in pvcs if (p.get("status") or {}).get("phase") == "Pending"]
    if pending:
        return Answer("PVC Pending", f"PVC(s) Pending: {', '.join(pending)}")
    looping = [p["metadata"]["name"] for p in pods for cs in (p.get("status") or {}).get("containerStatuses") or []
               if ((cs.get("state") or {}).get("waiting") or {}).get("reason") == "CrashLoopBackOff"]
    if looping:
        return Answer("Pod CrashLoop", f"CrashLoopBackOff: {', '.join(looping)}")
    return Answer(None, "no PVC Pending and no instance pod in CrashLoopBackOff")


@decision("Cluster size?")
async def galera_cluster_size(ctx: HandlerContext) -> Answer:
    found = await _try(ctx, galera_health)
    if not found or any(f.status is Status.unknown for f in found):
        return Answer(None, "; ".join(f.summary for f in found or []) or "Galera not checkable (Prometheus?)")
    bad = [f for f in found if f.status is Status.crit]
    if bad:
        return Answer("Split brain", bad[0].summary)
    return Answer("All nodes", "; ".join(f.summary for f in found))
