"""Runbook chapter 2: cluster-level issues — nodes (2.2 NotReady, 2.6 missing labels), plus the
kubelet version skew of a stuck rolling upgrade (9.5) and cordoned nodes (11.3); etcd health from
its Prometheus metrics (2.3)."""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Finding, HandlerContext, HostPort, NoParams, Sample, Severity, SOPParams,
                     Status, SuggestedAction, check_settings, condition, parse_time, promql_string,
                     sop)

NOT_READY_STEP = ("2.2: kubectl describe node <node> (Conditions), check kubelet on the node "
                  "(systemctl status rke2-agent), and the VM in Harvester")
PRESSURE_STEP = "2.2: resource pressure: free disk (crictl rmi --prune, journal vacuum) or memory on the node"
COUNT_STEP = "2.1: a node did not join: check the Rancher machine and the VM in Harvester; 2.5 autoscaler"
LABEL_STEP = ("2.6: label the nodes now (kubectl label node <node> workload-type=<pool>), then fix "
              "node-labeler (its image must be in Harbor)")
CORDON_STEP = "11.3: finish the maintenance and kubectl uncordon <node>"
SKEW_STEP = ("9.5 'Nodes Stuck During Rolling Upgrade': check the upgrade in Rancher and rke2-agent on "
             "the nodes still on the old version")
AGE_STEP = "11.3 node maintenance: drain and replace nodes older than the rotation window (10.2)"
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
_MINOR = re.compile(r"^v?(\d+)\.(\d+)")


class NodeChecks(BaseModel):
    """``checks.node-health`` in the config."""

    model_config = ConfigDict(extra="forbid")
    expected_nodes: int | None = Field(6, ge=0, description="the runbook's 6; null: any count")
    label: str = Field("workload-type", description="the pool label every worker must carry (2.6)")
    max_age_days: float | None = Field(30, gt=0, description="nodes older than this are due for rotation")


@sop("node-health", title="Nodes: Ready, pressure, cordoned, versions, pool labels",
     sections=("2.2", "2.6", "9.5/nodes", "11.3"),
     severity=Severity.P2, alerts=("KubeNodeNotReady", "KubeletVersionSkew", "NodeDiskPressure",
                                   "NodeDiskCritical"),
     causes=("disk, memory or PID pressure", "node cordoned (maintenance not finished)",
             "kubelet versions differ (rolling upgrade stuck)", "workers without workload-type"))
async def node_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Every node Ready with no pressure condition, the expected count, none cordoned, one
    kubelet version, every worker labelled with its pool (runbook 11.1, 2.2, 2.6, 9.5)."""
    cfg = check_settings(ctx, "node-health", NodeChecks)
    kube = ctx.require_kube()
    nodes = await kube.list("v1", "nodes")
    now = datetime.now(timezone.utc)
    findings: list[Finding] = []
    ready = 0
    for node in nodes:
        name = node["metadata"]["name"]
        cond = condition(node, "Ready")
        if cond is not None and cond.get("status") == "True":
            ready += 1
        else:
            why = (cond or {}).get("message") or (cond or {}).get("reason") or "no Ready condition"
            findings.append(Finding(status=Status.crit, target=f"node/{name}",
                                    summary=f"NotReady: {why[:160]}", next_step=NOT_READY_STEP))
        pressures = [c["type"] for c in (node.get("status") or {}).get("conditions") or []
                     if c.get("type", "").endswith("Pressure") and c.get("status") == "True"]
        if pressures:
            findings.append(Finding(status=Status.warn, target=f"node/{name} pressure",
                                    summary=", ".join(pressures), next_step=PRESSURE_STEP))
        if (node.get("spec") or {}).get("unschedulable"):
            findings.append(Finding(status=Status.warn, target=f"node/{name} cordoned",
                                    summary="SchedulingDisabled (cordoned)", next_step=CORDON_STEP))
    total = len(nodes)
    if cfg.expected_nodes is not None and total < cfg.expected_nodes:
        findings.append(Finding(status=Status.crit, target="node count",
                                summary=f"{total} nodes, expected at least {cfg.expected_nodes}",
                                next_step=COUNT_STEP))
    findings += _unlabeled(nodes, cfg.label)
    findings += _skew(nodes)
    if cfg.max_age_days is not None:
        old = [n["metadata"]["name"] for n in nodes
               if (t := parse_time(n["metadata"].get("creationTimestamp")))
               and (now - t).total_seconds() > cfg.max_age_days * 86400]
        if old:
            findings.append(Finding(status=Status.warn, target="node age",
                                    summary=f"{len(old)} node(s) older than {cfg.max_age_days:g} days: "
                                            f"{_names(old)}", next_step=AGE_STEP))
    expected = f" (expected {cfg.expected_nodes})" if cfg.expected_nodes is not None else ""
    findings.insert(0, Finding(status=Status.ok if ready == total else Status.crit, target="nodes",
                               summary=f"{ready}/{total} nodes Ready{expected}",
                               next_step="" if ready == total else NOT_READY_STEP))
    return findings


def _unlabeled(nodes: list[dict], label: str) -> list[Finding]:
    missing = [n["metadata"]["name"] for n in nodes
               if CONTROL_PLANE not in (n["metadata"].get("labels") or {})
               and not (n["metadata"].get("labels") or {}).get(label)]
    if not missing:
        return []
    return [Finding(status=Status.warn, target=f"{label} label",
                    summary=f"{len(missing)} worker(s) without {label}: {_names(missing)}",
                    details="\n".join(missing[:50]), next_step=LABEL_STEP,
                    # 2.6's manual fix, proposed for approval (it labels workload-type only).
                    actions=[SuggestedAction(action="label-nodes")] if label == "workload-type" else [])]


def _skew(nodes: list[dict]) -> list[Finding]:
    versions = Counter(((n.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "?")
                       for n in nodes)
    if len(versions) <= 1:
        return []
    newest = max(versions, key=_version_key)
    behind = {v: [n["metadata"]["name"] for n in nodes
                  if ((n.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "?") == v]
              for v in versions if v != newest}
    minors = [_version_key(newest)[1] - _version_key(v)[1] for v in behind]
    # The kubelet may trail the API server by up to 3 minor versions; more is unsupported.
    status = Status.crit if max(minors, default=0) > 3 else Status.warn
    desc = "; ".join(f"{len(names)} on {v}: {_names(names)}" for v, names in sorted(behind.items()))
    return [Finding(status=status, target="kubelet versions",
                    summary=f"{len(versions)} kubelet versions (newest {newest}); {desc}",
                    next_step=SKEW_STEP)]


def _version_key(version: str) -> tuple[int, int, str]:
    m = _MINOR.match(version)
    return (int(m.group(1)), int(m.group(2)), version) if m else (0, 0, version)


def _names(names: list[str], limit: int = 5) -> str:
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


# -- 2.3 etcd Cluster Health Degraded ---------------------------------------------------------------
ETCD_DOWN_STEP = ("2.3: the member is down: on that CP node sudo systemctl restart rke2-server, then "
                  "etcdctl endpoint health --cluster")
ETCD_LEADER_STEP = ("2.3: a member without a leader: check etcdctl endpoint health --cluster from a CP "
                    "node and the etcd_server_leader_changes_seen_total metric on :2381")
ETCD_FSYNC_STEP = "2.3: WAL fsync is slow: check disk I/O on the node (sudo iostat -x 1 5)"
ETCD_RTT_STEP = ("2.3: slow peer round trips: check the network between the CP nodes (etcd peers, "
                 "port 2380) and the VMs' hosts in Harvester")
ETCD_QUORUM_STEP = ("2.3 → 10.3: quorum is lost: restore from the latest snapshot (10.3 etcd Restore "
                    "from Snapshot); no snapshot available: escalate to the infrastructure lead at once")
ETCD_SCRAPE_STEP = ("2.3: Prometheus has no etcd target: check it scrapes etcd's metrics on the CP "
                    "nodes (:2381, curl -s http://<cp-node-ip>:2381/metrics)")
PROMETHEUS_STEP = "set prometheus.url so the bot can read the metrics"


class EtcdChecks(BaseModel):
    """``checks.etcd-health`` in the config."""

    model_config = ConfigDict(extra="forbid")
    job: str = Field(".*etcd.*", description="regex of the Prometheus job(s) scraping etcd")
    members: int = Field(3, ge=1, description="etcd members expected (the CP nodes)")
    fsync_warn_s: float = Field(0.01, gt=0, description="WAL fsync p99 warning (etcd guidance: < 10 ms)")
    fsync_crit_s: float = Field(0.5, gt=0, description="WAL fsync p99 critical (runbook 2.3: > 500 ms)")
    rtt_warn_s: float = Field(0.15, gt=0, description="peer round trip p99 warning")
    rate_window: str = Field("5m", pattern=r"^[0-9]+(ms|s|m|h)$", description="PromQL rate window")


class EtcdParams(SOPParams):
    instance: HostPort | None = Field(None, description="one member's Prometheus instance, host:port")


@sop("etcd-health", title="etcd members: up, leader, WAL fsync and peer latency", section="2.3",
     severity=Severity.P1, alerts=("EtcdMemberDown", "EtcdHighLatency"))
async def etcd_health(ctx: HandlerContext, params: EtcdParams) -> list[Finding]:
    """Each etcd member scraped and reporting a leader, its WAL fsync and peer round-trip p99
    (runbook 2.3), and whether the cluster kept quorum (10.3 when it did not)."""
    cfg = check_settings(ctx, "etcd-health", EtcdChecks)
    if ctx.prometheus is None:
        return [Finding(status=Status.unknown, target="prometheus",
                        summary="no Prometheus configured (prometheus.url)", next_step=PROMETHEUS_STEP)]
    sel = f"job=~{promql_string(cfg.job)}"
    if params.instance:
        sel += f", instance={promql_string(params.instance)}"
    w = cfg.rate_window
    up, leader, fsync, rtt = await asyncio.gather(
        ctx.prometheus.query(f"up{{{sel}}}"),
        ctx.prometheus.query(f"etcd_server_has_leader{{{sel}}}"),
        ctx.prometheus.query("histogram_quantile(0.99, sum by (instance, le) "
                             f"(rate(etcd_disk_wal_fsync_duration_seconds_bucket{{{sel}}}[{w}])))"),
        ctx.prometheus.query("histogram_quantile(0.99, sum by (instance, le) "
                             f"(rate(etcd_network_peer_round_trip_time_seconds_bucket{{{sel}}}[{w}])))"))
    if not up:
        what = f"etcd target {params.instance}" if params.instance else f"etcd target (up{{{sel}}})"
        return [Finding(status=Status.unknown, target="etcd", summary=f"Prometheus has no {what}",
                        next_step=ETCD_SCRAPE_STEP)]
    by = _by_instance
    leaders, fsyncs, rtts = by(leader), by(fsync), by(rtt)
    findings: list[Finding] = []
    healthy = down = leaderless = 0
    for inst, value in sorted(by(up).items()):
        if value != 1:
            down += 1
            findings.append(Finding(status=Status.crit, target=inst, summary="down: Prometheus cannot scrape it",
                                    next_step=ETCD_DOWN_STEP))
            continue
        has_leader = leaders.get(inst)
        if has_leader is not None and has_leader != 1:
            leaderless += 1
            findings.append(Finding(status=Status.crit, target=inst, summary="no leader (etcd_server_has_leader 0)",
                                    next_step=ETCD_LEADER_STEP))
            continue
        healthy += 1
        status, steps = Status.ok, []
        p99 = fsyncs.get(inst)
        if p99 is not None and p99 > cfg.fsync_crit_s:
            status = Status.crit
        elif p99 is not None and p99 > cfg.fsync_warn_s:
            status = Status.warn
        if status != Status.ok:
            steps.append(ETCD_FSYNC_STEP)
        rtt99 = rtts.get(inst)
        if rtt99 is not None and rtt99 > cfg.rtt_warn_s:
            status = Status.worst([status, Status.warn])
            steps.append(ETCD_RTT_STEP)
        leader_text = "leader seen" if has_leader == 1 else "has_leader n/a"
        findings.append(Finding(status=status, target=inst,
                                summary=f"{leader_text}, WAL fsync p99 {_ms(p99)}, peer RTT p99 {_ms(rtt99)}",
                                next_step="; ".join(steps)))
    if params.instance:
        return findings
    scraped = len(up)
    expected = max(cfg.members, scraped)
    quorum = expected // 2 + 1
    problems = [f"{n} {what}" for n, what in ((down, "down"), (leaderless, "without a leader"),
                                              (expected - scraped, "not scraped at all")) if n]
    summary = f"{healthy} of {expected} members up with a leader" + (f" ({', '.join(problems)})" if problems else "")
    if healthy < quorum:
        findings.insert(0, Finding(status=Status.crit, target="quorum",
                                   summary=f"quorum lost: {summary}; quorum needs {quorum}",
                                   next_step=ETCD_QUORUM_STEP))
    elif problems:
        step = ETCD_DOWN_STEP if down else ETCD_LEADER_STEP if leaderless else ETCD_SCRAPE_STEP
        findings.insert(0, Finding(status=Status.crit, target="members", summary=summary, next_step=step))
    else:
        findings.insert(0, Finding(status=Status.ok, target="members", summary=summary))
    return findings


def _by_instance(samples: list[Sample]) -> dict[str, float]:
    """instance → value, NaN (no rate data in the window) left out."""
    return {s.labels.get("instance", "?"): s.value for s in samples if not math.isnan(s.value)}


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.0095 else f"{seconds * 1000:.1f} ms"
