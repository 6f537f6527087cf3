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
     severity=Severity.P3, alerts=("KubePodCrashLooping", "KubePodNotReady"),
     # Crashing pods are most often the symptom: their database or DNS is down (runbook 1).
     explained_by=("cnpg-health", "dns-health", "node-health"))
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


# == Procedures (issue 14.2): 11.3 node maintenance and 10.2 single node replacement ==============
# Ordered checks and actions proposed as one plan, approved once (again at the drain), run with a
# live step log. Each step's precondition says whether it still has to run, so a restart resumes
# at the step reached without repeating one.
from handlers.actions.common import kube, meta  # noqa: E402
from handlers.actions.kubernetes import (Cordon, DrainNode, NodeParams, Uncordon,  # noqa: E402
                                         _cnpg_primary, _vault_server)
from bot.sdk import (ActionEnv, Gate, KubeClient, Outcome, Plan, Procedure, Step, StepRun,  # noqa: E402
                     SourceError, procedure, resource_path, text)

CNPG_API = "postgresql.cnpg.io/v1"
CAPI_API = "cluster.x-k8s.io/v1beta1"
CP_LABEL = "node-role.kubernetes.io/control-plane"
POOL_LABEL = "rke.cattle.io/rke-machine-pool-name"
MACHINE_ANNOTATION = "cluster.x-k8s.io/machine"
_DRAIN = DrainNode()


def _node_ready(node: dict[str, Any]) -> bool:
    return (condition(node, "Ready") or {}).get("status") == "True"


def _pool(node: dict[str, Any]) -> str:
    labels = meta(node).get("labels") or {}
    return "control-plane" if CP_LABEL in labels else labels.get("workload-type") or labels.get(POOL_LABEL, "")


async def _node_or_none(env: ActionEnv, name: str) -> dict[str, Any] | None:
    try:
        return await kube(env).get("v1", "nodes", name)
    except SourceError as exc:
        if exc.status == 404:
            return None
        raise


async def _no_node(run: StepRun) -> str | None:
    return None if await _node_or_none(run.env, run.params.node) else f"no node {run.params.node}"


async def _considerations(run: StepRun) -> tuple[str | None, str]:
    """11.3's special considerations: (why the node must not be drained now, what was checked)."""
    env, name = run.env, run.params.node
    node = await kube(env).get("v1", "nodes", name)
    nodes = await kube(env).list("v1", "nodes")
    pool = _pool(node)
    checked = [f"{name} is a {pool or 'unlabeled'} node"]
    busy = [meta(n)["name"] for n in nodes if meta(n)["name"] != name and _pool(n) == pool
            and ((n.get("spec") or {}).get("unschedulable") or not _node_ready(n))]
    if pool == "control-plane" and busy:
        return (f"control-plane node(s) {', '.join(busy)} already cordoned or NotReady: drain one "
                "control-plane node at a time (11.3)"), ""
    if pool == "database" and busy:
        return (f"database node(s) {', '.join(busy)} already cordoned or NotReady: never drain two "
                "database nodes at once (11.3)"), ""
    pods, _ = await _DRAIN._pods(env, name)
    vault_block = await _DRAIN._vault_check(env, pods)
    if vault_block:
        return vault_block, ""
    vaults = [meta(p)["name"] for p in pods if _vault_server(p)]
    checked.append(f"Vault replica {', '.join(vaults)} here, the others unsealed" if vaults else "no Vault replica here")
    primaries = sorted({(meta(p).get("namespace", ""), c) for p in pods if (c := _cnpg_primary(p))})
    for ns, cluster in primaries:
        if await _switchover_target(env, ns, cluster, name) is None:
            return (f"CNPG cluster {ns}/{cluster} has its primary here and no ready replica on another "
                    "node: draining would stop the database (6.1)"), ""
    checked.append("CNPG primary of " + ", ".join(c for _, c in primaries) + " here: switched over first"
                   if primaries else "no CNPG primary here")
    return None, "; ".join(checked)


async def _check_considerations(run: StepRun) -> Outcome:
    why, checked = await _considerations(run)
    return Outcome(ok=why is None, summary=why or checked)


async def _plan_considerations(run: StepRun) -> Plan:
    why, checked = await _considerations(run)
    return Plan(blocked=why) if why else Plan(preview=text(checked))


# -- CNPG switchover (what `kubectl cnpg promote <cluster> <instance>` does) ---------------------
async def _primaries_here(env: ActionEnv, node: str) -> list[tuple[str, str, str]]:
    """(namespace, cluster, pod) of each CNPG primary on the node."""
    pods = await kube(env).list("v1", "pods", field_selector=f"spec.nodeName={node}")
    return [(meta(p).get("namespace", ""), c, meta(p)["name"]) for p in pods if (c := _cnpg_primary(p))]


async def _switchover_target(env: ActionEnv, ns: str, cluster: str, node: str) -> str | None:
    """A Ready replica of the cluster on another node, or None."""
    pods = await kube(env).list("v1", "pods", ns, label_selector=f"cnpg.io/cluster={cluster}")
    for p in sorted(pods, key=lambda p: meta(p)["name"]):
        if (p.get("spec") or {}).get("nodeName") != node and _cnpg_primary(p) is None \
                and (condition(p, "Ready") or {}).get("status") == "True":
            return meta(p)["name"]
    return None


async def _switchover_needed(run: StepRun) -> Gate:
    here = await _primaries_here(run.env, run.params.node)
    if not here:
        return Gate.done(f"no CNPG primary on {run.params.node}")
    return Gate.ready()


async def _switchover(run: StepRun) -> Outcome:
    moved = []
    for ns, cluster, pod in await _primaries_here(run.env, run.params.node):
        target = await _switchover_target(run.env, ns, cluster, run.params.node)
        if target is None:
            return Outcome(ok=False, summary=f"{ns}/{cluster}: no ready replica on another node")
        await kube(run.env).request(
            "PATCH", resource_path(CNPG_API, "clusters", ns, cluster, "status"),
            body={"status": {"targetPrimary": target, "targetPrimaryTimestamp": now_utc(),
                             "phase": "Switchover in progress"}},
            content_type="application/merge-patch+json")
        # The operator promotes the target; the step ends when it reports the new primary.
        while True:
            c = await kube(run.env).get(CNPG_API, "clusters", cluster, ns)
            if (c.get("status") or {}).get("currentPrimary") == target:
                break
            await asyncio.sleep(3)
        moved.append(f"{ns}/{cluster}: {pod} → {target}")
    return Outcome(ok=True, summary="switched over " + "; ".join(moved))


def now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- drain (the Eviction API, PodDisruptionBudgets honoured) and the wait after it -----------------
async def _drain_needed(run: StepRun) -> Gate:
    node = await _node_or_none(run.env, run.params.node)
    if node is None:
        return Gate.done(f"{run.params.node} is gone")
    pods, _ = await _DRAIN._pods(run.env, run.params.node)
    if not pods and (node.get("spec") or {}).get("unschedulable"):
        return Gate.done(f"{run.params.node} is cordoned and has no pods left to evict")
    blocked = await _DRAIN._vault_check(run.env, pods)
    return Gate.blocked(blocked) if blocked else Gate.ready(f"{len(pods)} pod(s) to evict")


async def _drain(run: StepRun) -> Outcome:
    return await _DRAIN.run(run.env, _DRAIN.parse({"node": run.params.node}))


async def _drain_plan(run: StepRun) -> Plan:
    return await _DRAIN.plan(run.env, _DRAIN.parse({"node": run.params.node}))


async def _node_empty(run: StepRun) -> Outcome:
    pods, _ = await _DRAIN._pods(run.env, run.params.node)
    if pods:
        names = ", ".join(f"{meta(p).get('namespace')}/{meta(p)['name']}" for p in pods[:5])
        return Outcome(ok=False, summary=f"{len(pods)} pod(s) still on {run.params.node}: {names}")
    return Outcome(ok=True, summary=f"no workload pods left on {run.params.node} (DaemonSet pods stay)")


async def _node_back(run: StepRun) -> Outcome:
    node = await kube(run.env).get("v1", "nodes", run.params.node)
    if not _node_ready(node):
        return Outcome(ok=False, summary=f"{run.params.node} is not Ready yet")
    if (node.get("spec") or {}).get("unschedulable"):
        return Outcome(ok=False, summary=f"{run.params.node} is Ready but still cordoned")
    return Outcome(ok=True, summary=f"{run.params.node} is Ready and schedulable")


DRAIN_NEXT = ("11.3: a PodDisruptionBudget or Vault's quorum holds the drain: kubectl get pdb -A; make the "
              "protected pods Ready (or unseal Vault, 5.1), then /sop fix resume")


def _drain_step(timeout_s: float) -> Step:
    return Step("drain", "Drain: evict the node's pods (Eviction API)", run=_drain, precondition=_drain_needed,
                dry_run=_drain_plan, timeout_s=timeout_s, high_risk=True, next_step=DRAIN_NEXT,
                runbook=("kubectl drain <node> --ignore-daemonsets --delete-emptydir-data --grace-period=300",))


@procedure
class NodeMaintenance(Procedure[NodeParams]):
    name = "node-maintenance"
    title = "Node maintenance: cordon, drain, wait, uncordon"
    section = "11.3"
    params = NodeParams
    refuse = staticmethod(_no_node)
    steps = (
        Step("considerations", "Special considerations (control plane, Vault, CNPG, database nodes)",
             kind="check", run=_check_considerations, dry_run=_plan_considerations, timeout_s=60,
             next_step="11.3 Special Considerations: drain one control-plane or database node at a time; "
                       "unseal the other Vault replicas first (5.1)",
             runbook=("kubectl get nodes", "kubectl get cluster -n database -o wide")),
        Step("switchover", "CNPG primaries on the node move first (switchover)", run=_switchover,
             precondition=_switchover_needed, timeout_s=300,
             next_step="6.1: kubectl cnpg promote <cluster> <replica on another node>; check kubectl get cluster -n database",
             runbook=("kubectl cnpg promote -n database <cluster> <replica>",)),
        Step.from_action(Cordon(), lambda run: {"node": run.params.node}, title="Cordon (stop scheduling new pods)",
                         timeout_s=60, next_step="11.3: kubectl cordon <node>; kubectl get nodes | grep SchedulingDisabled"),
        _drain_step(600),
        Step("wait", "Wait: the evicted pods are gone from the node", kind="check", run=_node_empty,
             poll_s=5, timeout_s=600, next_step="11.3: kubectl get pods -A -o wide --field-selector spec.nodeName=<node>",
             runbook=("kubectl get pods -A --watch",)),
        Step.from_action(Uncordon(), lambda run: {"node": run.params.node}, title="Uncordon (resume scheduling)",
                         timeout_s=60, dry_run=False,
                         confirm="do the maintenance now; approve when it is done and the node is back",
                         next_step="11.3: kubectl uncordon <node>"),
        Step("ready", "The node is Ready and schedulable", kind="check", run=_node_back, poll_s=5,
             timeout_s=600, next_step="2.3: the node is not Ready after maintenance: check its kubelet",
             runbook=("kubectl get nodes <node> | grep Ready",)),
    )


# -- 10.2 single node replacement --------------------------------------------------------------
async def _identify(run: StepRun) -> Outcome:
    """Step 1: the node, its CAPI Machine and pool, and the nodes there are now (memo)."""
    node = await _node_or_none(run.env, run.params.node)
    if node is None:
        return Outcome(ok=False, summary=f"no node {run.params.node}")
    machine = (meta(node).get("annotations") or {}).get(MACHINE_ANNOTATION)
    ns = (meta(node).get("annotations") or {}).get("cluster.x-k8s.io/cluster-namespace", "fleet-default")
    if not machine:
        return Outcome(ok=False, summary=f"{run.params.node} has no {MACHINE_ANNOTATION} annotation: "
                                         "not a Rancher machine")
    await _mgmt(run).get(CAPI_API, "machines", machine, ns)
    why, checked = await _considerations(run)
    if why:
        return Outcome(ok=False, summary=why)
    nodes = await kube(run.env).list("v1", "nodes")
    run.memo.update(machine=machine, machine_ns=ns, pool=_pool(node),
                    pool_label=(meta(node).get("labels") or {}).get(POOL_LABEL, ""),
                    nodes_before=sorted(meta(n)["name"] for n in nodes))
    state = "Ready" if _node_ready(node) else "NotReady"
    return Outcome(ok=True, summary=f"{run.params.node} ({state}, pool {_pool(node)}), machine {ns}/{machine}; {checked}")


async def _plan_identify(run: StepRun) -> Plan:
    out = await _identify(run)
    return Plan(preview=text(out.summary)) if out.ok else Plan(blocked=out.summary)


async def _node_exists(run: StepRun) -> Gate:
    return Gate.ready() if await _node_or_none(run.env, run.params.node) else Gate.done(f"{run.params.node} is gone")


async def _delete_node(run: StepRun) -> Outcome:
    await kube(run.env).delete("v1", "nodes", run.params.node)
    return Outcome(ok=True, summary=f"node {run.params.node} deleted")


async def _plan_delete_node(run: StepRun) -> Plan:
    await kube(run.env).delete("v1", "nodes", run.params.node, dry_run=True)
    return Plan(operations=[f"DELETE v1 nodes {run.params.node}"], dry_run=True,
                preview="The API server accepted the delete.")


def _mgmt(run: StepRun) -> KubeClient:
    """The cluster Rancher runs in: it keeps the downstream cluster's CAPI Machines in
    fleet-default (the management cluster's kubeconfig, kubernetes.mgmt_kubeconfig)."""
    if run.ctx.kube_mgmt is None:
        raise SourceError("sop-bot", "no management-cluster access (kubernetes.mgmt_kubeconfig): "
                                     "the Machine lives where Rancher runs")
    return run.ctx.kube_mgmt


async def _machine_of(run: StepRun) -> tuple[str, str]:
    if run.memo.get("machine"):
        return run.memo["machine"], run.memo.get("machine_ns", "fleet-default")
    node = await kube(run.env).get("v1", "nodes", run.params.node)  # the dry run, before step 1 ran
    return (meta(node).get("annotations") or {}).get(MACHINE_ANNOTATION, f"{run.params.node}-machine"), "fleet-default"


async def _machine_exists(run: StepRun) -> Gate:
    name, ns = await _machine_of(run)
    try:
        machine = await _mgmt(run).get(CAPI_API, "machines", name, ns)
    except SourceError as exc:
        if exc.status == 404:
            return Gate.done(f"machine {ns}/{name} is gone")
        raise
    if meta(machine).get("deletionTimestamp"):
        return Gate.done(f"machine {ns}/{name} is being deleted")
    return Gate.ready()


async def _delete_machine(run: StepRun) -> Outcome:
    name, ns = await _machine_of(run)
    await _mgmt(run).delete(CAPI_API, "machines", name, ns)
    return Outcome(ok=True, summary=f"machine {ns}/{name} deleted: Rancher provisions a replacement")


async def _plan_delete_machine(run: StepRun) -> Plan:
    name, ns = await _machine_of(run)
    await _mgmt(run).delete(CAPI_API, "machines", name, ns, dry_run=True)
    return Plan(operations=[f"DELETE {CAPI_API} machines {ns}/{name}"], dry_run=True,
                preview="The API server accepted the delete; Rancher's machine pool then creates a new machine.")


async def _new_node(run: StepRun) -> Outcome:
    before = set(run.memo.get("nodes_before") or [])
    label = run.memo.get("pool_label", "")
    nodes = await kube(run.env).list("v1", "nodes")
    fresh = [n for n in nodes if meta(n)["name"] not in before
             and (not label or (meta(n).get("labels") or {}).get(POOL_LABEL) == label)]
    ready = [n for n in fresh if _node_ready(n)]
    if not ready:
        return Outcome(ok=False, summary=f"no new node in pool {label or '?'} yet"
                                         + (f" ({', '.join(meta(n)['name'] for n in fresh)} not Ready)" if fresh else ""))
    run.memo["new_node"] = meta(ready[0])["name"]
    return Outcome(ok=True, summary=f"{run.memo['new_node']} joined and is Ready")


async def _new_node_label(run: StepRun) -> Outcome:
    name, pool = run.memo.get("new_node", ""), run.memo.get("pool", "")
    if pool in ("control-plane", ""):
        return Outcome(ok=True, summary=f"{name or 'the new node'} is a control-plane node: no workload-type")
    node = await kube(run.env).get("v1", "nodes", name)
    got = (meta(node).get("labels") or {}).get("workload-type")
    if got != pool:
        return Outcome(ok=False, summary=f"{name} has workload-type={got or '(none)'}, expected {pool}")
    return Outcome(ok=True, summary=f"{name} has workload-type={pool}")


async def _vault_unsealed(run: StepRun) -> Outcome:
    pool = run.ctx.vault
    if pool is None:
        return Outcome(ok=False, summary="Vault's seal status cannot be checked (vault.addrs)")
    sealed = []
    for addr, name in zip(pool.addrs, pool.names):
        try:
            if (await pool.seal_status(addr)).get("sealed", True):
                sealed.append(name)
        except SourceError as exc:
            sealed.append(f"{name} ({exc.reason})")
    if sealed:
        return Outcome(ok=False, summary=f"sealed or unreachable: {', '.join(sealed)}")
    return Outcome(ok=True, summary=f"all {len(pool.addrs)} Vault replicas unsealed")


@procedure
class ReplaceNode(Procedure[NodeParams]):
    name = "replace-node"
    title = "Single node replacement: drain, delete node and machine, wait for the new node"
    section = "10.2"
    params = NodeParams
    refuse = staticmethod(_no_node)
    steps = (
        Step("identify", "Identify the node, its machine and pool; special considerations", kind="check",
             run=_identify, dry_run=_plan_identify, timeout_s=60,
             next_step="10.2 step 1: kubectl get nodes -o wide; the machine is in kubectl get machines -n fleet-default",
             runbook=("kubectl get nodes -o wide",)),
        _drain_step(300),
        Step("delete-node", "Delete the node from Kubernetes", run=_delete_node, precondition=_node_exists,
             dry_run=_plan_delete_node, timeout_s=60, next_step="10.2 step 3: kubectl delete node <node>",
             runbook=("kubectl delete node <node-name>",)),
        Step("delete-machine", "Delete the CAPI Machine on the management cluster (Rancher provisions a replacement)", run=_delete_machine,
             precondition=_machine_exists, dry_run=_plan_delete_machine, timeout_s=60,
             next_step="10.2 step 4: kubectl delete machine <machine> -n fleet-default",
             runbook=("kubectl delete machine <machine-name> -n fleet-default",)),
        Step("join", "Wait for the new node to join and be Ready", kind="check", run=_new_node, poll_s=5,
             timeout_s=900, next_step="10.2 step 5: kubectl get machines -n fleet-default; the pool's "
                                      "Harvester VM (2.1) and the Rancher autoscaler",
             runbook=("kubectl get nodes -w",)),
        Step("label", "The new node carries its workload-type label", kind="check", run=_new_node_label,
             poll_s=10, timeout_s=300,
             next_step="2.6: node-labeler did not label it: /sop fix label-nodes node=<new node>",
             runbook=("kubectl get nodes --show-labels | grep workload-type",)),
        Step("vault", "Vault: every replica unsealed", kind="check", run=_vault_unsealed, timeout_s=60,
             next_step="5.1: unseal the sealed replicas (/sop fix vault-unseal)",
             runbook=("kubectl exec -n vault vault-0 -- vault status | grep Sealed",)),
    )
