"""Runbook chapter 2: cluster-level issues — nodes (2.2 NotReady, 2.6 missing labels), plus the
kubelet version skew of a stuck rolling upgrade (9.5) and cordoned nodes (11.3)."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

from bot.context import HandlerContext
from bot.health import check_settings, condition, parse_time
from bot.models import Finding, Severity, Status, SuggestedAction
from bot.registry import NoParams, sop

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


@sop("node-health", title="Nodes: Ready, pressure, cordoned, versions, pool labels", section="2.2",
     severity=Severity.P2, alerts=("KubeNodeNotReady", "KubeletVersionSkew", "NodeDiskPressure",
                                   "NodeDiskCritical"))
async def node_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Every node Ready with no pressure condition, the expected count, none cordoned, one
    kubelet version, every worker labelled with its pool (runbook 11.1, 2.2, 2.6, 9.5)."""
    cfg = check_settings(ctx, "node-health", NodeChecks)
    if ctx.kube is None:
        return [Finding(status=Status.unknown, target="kubernetes", summary="no Kubernetes access configured")]
    nodes = await ctx.kube.list("v1", "nodes")
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
