"""Runbook chapter 2: cluster-level issues — nodes (2.2 NotReady), pool labels and node-labeler
(2.6), golden-image drift (2.9), plus the kubelet version skew of a stuck rolling upgrade (9.5) and
cordoned nodes (11.3); etcd health from its Prometheus metrics and snapshot objects (2.3, 10.3);
the API server (2.4) and the cluster autoscaler (2.5)."""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Finding, HandlerContext, HostPort, LogPattern, NoParams, Sample, Severity, SOPParams,
                     SourceError, Status, SuggestedAction, check_settings, condition, parse_time,
                     promql_string, quantity, sop)

NOT_READY_STEP = ("2.2: kubectl describe node <node> (Conditions), check kubelet on the node "
                  "(systemctl status rke2-agent), and the VM in Harvester")
KUBELET_STEP = ("2.2 'If kubelet crashed': SSH to the node, sudo journalctl -u rke2-agent -n 100, then "
                "sudo systemctl restart rke2-agent (SSH: the bot cannot); if the VM is stopped, start it in Harvester")
MANY_STEP = ("2.2 Escalation: several nodes NotReady at once points at the network or the Harvester "
             "host, not one kubelet: check the hosts in Harvester and escalate to the infrastructure team")
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
    max_age_days: float | None = Field(30, gt=0, description="nodes older than this are due for rotation")
    heartbeat_stale_s: float = Field(120, gt=0, description="a Ready heartbeat older than this: the kubelet stopped posting")
    many_not_ready: int = Field(2, ge=2, description="this many nodes NotReady at once points at network/hypervisor")


@sop("node-health", title="Nodes: Ready (condition, heartbeat), pressure, cordoned, versions",
     sections=("2.2", "9.5/nodes", "11.1", "11.3"),
     severity=Severity.P2, alerts=("KubeNodeNotReady", "KubeletVersionSkew", "NodeDiskPressure",
                                   "NodeDiskCritical"),
     causes=("disk, memory or PID pressure", "kubelet stopped posting node status",
             "several nodes NotReady at once (network or hypervisor)",
             "node cordoned (maintenance not finished)", "kubelet versions differ (rolling upgrade stuck)"))
async def node_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Every node Ready with no pressure condition, the expected count, none cordoned, one
    kubelet version (runbook 11.1, 2.2, 9.5). A NotReady node is quoted with its condition's
    message, pressure kind and heartbeat age; several at once point past the kubelet."""
    cfg = check_settings(ctx, "node-health", NodeChecks)
    kube = ctx.require_kube()
    nodes = await kube.list("v1", "nodes")
    now = datetime.now(timezone.utc)
    findings: list[Finding] = []
    ready = 0
    not_ready: list[str] = []
    for node in nodes:
        name = node["metadata"]["name"]
        cond = condition(node, "Ready")
        pressures = [c["type"] for c in (node.get("status") or {}).get("conditions") or []
                     if c.get("type", "").endswith("Pressure") and c.get("status") == "True"]
        if cond is not None and cond.get("status") == "True":
            ready += 1
        else:
            not_ready.append(name)
            findings.append(_not_ready(name, cond, pressures, now, cfg.heartbeat_stale_s))
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
    if len(not_ready) >= cfg.many_not_ready:
        findings.insert(0, Finding(status=Status.crit, target="NotReady together",
                                   summary=f"{len(not_ready)} nodes NotReady at once ({_names(not_ready)}): "
                                           "the network or the Harvester host, not one kubelet",
                                   next_step=MANY_STEP))
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


def _not_ready(name: str, cond: dict | None, pressures: list[str], now: datetime,
               stale_s: float) -> Finding:
    """`kubectl describe node` in one line: the Ready condition's status, reason and message,
    the pressure conditions, and how long ago the kubelet last posted its status."""
    cond = cond or {}
    why = cond.get("message") or cond.get("reason") or "no Ready condition"
    beat = parse_time(cond.get("lastHeartbeatTime"))
    age = (now - beat).total_seconds() if beat else None
    parts = [f"Ready={cond.get('status', '?')} ({cond.get('reason', '?')}): {why[:160]}"]
    if pressures:
        parts.append(", ".join(pressures))
    if age is not None:
        parts.append(f"last heartbeat {_age(age)} ago")
    if pressures:
        step = PRESSURE_STEP
    elif cond.get("status") == "Unknown" or (age is not None and age > stale_s):
        # NodeStatusUnknown: the node controller heard nothing from the kubelet for its grace period.
        parts.insert(0, "kubelet stopped posting node status")
        step = KUBELET_STEP
    else:
        step = NOT_READY_STEP
    return Finding(status=Status.crit, target=f"node/{name}", summary="NotReady: " + "; ".join(parts),
                   next_step=step)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h" if seconds < 172800 else f"{seconds / 86400:.0f}d"


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


# -- 2.6 Node Labels Missing (node-labeler) --------------------------------------------------------
POOL_LABEL = "rke.cattle.io/rke-machine-pool-name"
LABELER_IMAGE_STEP = ("2.6 long-term fix: push the node-labeler image to Harbor (deploy-cluster.sh Phase 4.10), "
                      "then the pod pulls it; meanwhile label by hostname pattern")
LABELER_DOWN_STEP = "2.6: kubectl -n node-labeler logs deployment/node-labeler --tail=50; the operator must run"
RACE_STEP = ("2.6: the machine-pool label race (machine_selector_config in cluster.tf): the node came up before "
             f"Rancher set {POOL_LABEL}; label it by hostname pattern now")
_PULL_WAIT = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull")


class LabelChecks(BaseModel):
    """``checks.node-labels`` in the config."""

    model_config = ConfigDict(extra="forbid")
    label: str = Field("workload-type", description="the pool label every worker must carry (2.6)")
    namespace: str = Field("node-labeler", description="node-labeler's namespace")
    selector: str = Field("app=node-labeler", description="label selector of node-labeler's pods")


@sop("node-labels", title="Node pool labels: workers labelled, node-labeler running and its image pulled",
     section="2.6", severity=Severity.P3,
     causes=("workers without workload-type", "node-labeler image missing from Harbor (ImagePullBackOff)",
             "node-labeler not running", "machine-pool label not set early enough (label race)"))
async def node_labels(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Every worker carries its pool label; node-labeler's pods run, their image pulled; an
    unlabeled worker without Rancher's machine-pool label is the label race (runbook 2.6)."""
    cfg = check_settings(ctx, "node-labels", LabelChecks)
    kube = ctx.require_kube()
    nodes = await kube.list("v1", "nodes")
    workers = [n for n in nodes if CONTROL_PLANE not in (n["metadata"].get("labels") or {})]
    findings = _unlabeled(nodes, cfg.label)
    if not findings:
        findings.append(Finding(status=Status.ok, target=f"{cfg.label} label",
                                summary=f"all {len(workers)} workers carry {cfg.label}"))
    missing = {n["metadata"]["name"] for n in workers if not (n["metadata"].get("labels") or {}).get(cfg.label)}
    no_pool = sorted(n["metadata"]["name"] for n in workers
                     if n["metadata"]["name"] in missing and not (n["metadata"].get("labels") or {}).get(POOL_LABEL))
    if no_pool:
        findings.append(Finding(status=Status.warn, target="machine-pool label",
                                summary=f"label race: {_names(no_pool)} without {POOL_LABEL}, so node-labeler "
                                        "cannot tell their pool", next_step=RACE_STEP))
    findings += await _labeler(ctx, cfg)
    return findings


async def _labeler(ctx: HandlerContext, cfg: LabelChecks) -> list[Finding]:
    """node-labeler's pods as `kubectl -n node-labeler get pods` and `describe pod` show them."""
    pods, failed = await ctx.attempt(ctx.require_kube().list("v1", "pods", cfg.namespace,
                                                             label_selector=cfg.selector), "node-labeler")
    if failed is not None:
        return [failed]
    if not pods:  # the next node that joins stays unlabeled even when today's are fine
        return [Finding(status=Status.warn, target="node-labeler",
                        summary=f"node-labeler not running: no pod in {cfg.namespace} ({cfg.selector})",
                        next_step=LABELER_DOWN_STEP)]
    out = []
    for pod in pods:
        name = pod["metadata"]["name"]
        image = ((pod.get("spec") or {}).get("containers") or [{}])[0].get("image", "?")
        waits = [(c.get("state") or {}).get("waiting") or {}
                 for c in (pod.get("status") or {}).get("containerStatuses") or []]
        pull = next((w for w in waits if w.get("reason") in _PULL_WAIT), None)
        if pull is not None:
            events, _ = await ctx.attempt(ctx.events(cfg.namespace, kind="Pod", name=name), "events")
            said = next((e.message for e in events or [] if e.reason in ("Failed", "ErrImagePull")), "")
            out.append(Finding(status=Status.warn, target=f"pod/{cfg.namespace}/{name}",
                               summary=f"node-labeler image missing from Harbor: {pull['reason']} for {image}"
                                       + (f" — {said[:200]}" if said else ""),
                               next_step=LABELER_IMAGE_STEP))
        elif any(w.get("reason") for w in waits) or (pod.get("status") or {}).get("phase") != "Running":
            state = next((w["reason"] for w in waits if w.get("reason")), (pod.get("status") or {}).get("phase"))
            out.append(Finding(status=Status.warn, target=f"pod/{cfg.namespace}/{name}",
                               summary=f"node-labeler not running: {state}", next_step=LABELER_DOWN_STEP))
        else:
            out.append(Finding(status=Status.ok, target=f"pod/{cfg.namespace}/{name}",
                               summary=f"node-labeler running ({image})"))
    return out


# -- 2.9 Golden Image Issues -------------------------------------------------------------------------
GOLDEN_STEP = ("2.9: nodes come from different images: rebuild the golden image (docs/golden-image-plan.md) "
               "and roll the pools; quick fix: dnf install the missing package through cloud-init runcmd")
GOLDEN_GUIDANCE = ("Not checkable through the API: virtio modules (lsmod | grep virtio), GRUB entries "
                   "(/etc/default/grub) and packages (rpm -qa) need SSH to the node")


class ImageChecks(BaseModel):
    """``checks.golden-image`` in the config."""

    model_config = ConfigDict(extra="forbid")
    os_image: str | None = Field(None, description="expected osImage prefix, e.g. 'Rocky Linux 9.5'; null: only compare nodes")


@sop("golden-image", title="Golden image: nodes' OS image, kernel and runtime alike", section="2.9",
     severity=Severity.P2,
     causes=("nodes built from different golden images (OS image or kernel differ)",
             "nodes not on the expected golden image"))
async def golden_image(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Node status' osImage, kernelVersion and containerRuntimeVersion (what /etc/os-release and
    uname tell on the node): one build everywhere, or the odd nodes out named (runbook 2.9)."""
    cfg = check_settings(ctx, "golden-image", ImageChecks)
    nodes = await ctx.require_kube().list("v1", "nodes")
    builds: dict[tuple[str, str, str], list[str]] = {}
    for n in nodes:
        info = (n.get("status") or {}).get("nodeInfo") or {}
        key = (info.get("osImage", "?"), info.get("kernelVersion", "?"), info.get("containerRuntimeVersion", "?"))
        builds.setdefault(key, []).append(n["metadata"]["name"])
    findings: list[Finding] = []
    if len(builds) > 1:
        common = max(builds, key=lambda k: len(builds[k]))
        odd = "; ".join(f"{len(names)} on {_build(k, common)}: {_names(names)}"
                        for k, names in sorted(builds.items()) if k != common)
        findings.append(Finding(status=Status.warn, target="node images",
                                summary=f"nodes built from different golden images: {len(builds[common])} on "
                                        f"{_build(common, None)}; {odd}",
                                details=GOLDEN_GUIDANCE, next_step=GOLDEN_STEP))
    if cfg.os_image:
        wrong = sorted(name for k, names in builds.items() if not k[0].startswith(cfg.os_image) for name in names)
        if wrong:
            findings.append(Finding(status=Status.warn, target="expected image",
                                    summary=f"{len(wrong)} node(s) not on {cfg.os_image}: {_names(wrong)}",
                                    next_step=GOLDEN_STEP))
    if not findings:
        os_image, kernel, runtime = next(iter(builds), ("?", "?", "?"))
        findings.append(Finding(status=Status.ok, target="node images",
                                summary=f"all {len(nodes)} nodes on {os_image}, kernel {kernel}, {runtime}",
                                details=GOLDEN_GUIDANCE))
    return findings


def _build(key: tuple[str, str, str], common: tuple[str, str, str] | None) -> str:
    """The parts of a build that differ from the common one (all of it without one)."""
    labels = ("", "kernel ", "")
    parts = [f"{label}{v}" for label, v, c in zip(labels, key, common or ("", "", "")) if common is None or v != c]
    return " / ".join(parts) or "the same build"


# -- 2.4 API Server Unreachable ---------------------------------------------------------------------
API_DOWN_STEP = ("2.4: the bot cannot reach the API server: verify the CP VMs run in Harvester (`/sop harvester-vms`), "
                 "then on a CP node (SSH) sudo systemctl status rke2-server; sudo journalctl -u rke2-server -n 200; "
                 "sudo systemctl restart rke2-server")
API_NODE_STEP = ("2.4 step 2-3: on that CP node (SSH) sudo journalctl -u rke2-server -n 200, then "
                 "sudo systemctl restart rke2-server; an etcd check failing: see 2.3 (`/sop etcd-health`)")
API_ALL_STEP = ("2.4 Escalation: no control-plane node serves the API: check the CP VMs in Harvester; all three "
                "down there: escalate to the infrastructure team for the Harvester hosts")
API_TUNNEL = ("2.4 step 4: if only Rancher's tunnel is broken but these direct probes answer, use a kubeconfig "
              "taken from a CP node (sudo cat /etc/rancher/rke2/rke2.yaml, server URL changed) for the time being")


class ApiChecks(BaseModel):
    """``checks.api-server`` in the config."""

    model_config = ConfigDict(extra="forbid")
    port: int = Field(6443, ge=1, le=65535, description="the API server port on each control-plane node")


@sop("api-server", title="API server: the bot's own connection, each CP node's /healthz and /readyz",
     section="2.4", severity=Severity.P1,
     causes=("the bot cannot reach the API server", "API server down on a control-plane node",
             "API server down on every control-plane node"))
async def api_server(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """The bot's own Kubernetes connection first (failing, it is the evidence); then each
    control-plane node's `https://<InternalIP>:6443/healthz` and `/readyz` probed directly,
    bypassing the Rancher tunnel (runbook 2.4; addresses from the Node objects only, inside
    probe.allowed_cidrs; anonymous, no credentials sent)."""
    cfg = check_settings(ctx, "api-server", ApiChecks)
    kube = ctx.require_kube()
    try:
        nodes = await kube.list("v1", "nodes", label_selector=CONTROL_PLANE)
    except SourceError as exc:
        if exc.status in (401, 403):
            raise  # it answered: the bot's credentials, not the API, are the problem
        return [Finding(status=Status.crit, target="API server", summary=f"the bot cannot reach the API server: {exc.reason}",
                        details="The control-plane addresses come from Node objects, which the API did not give: "
                                "the direct probes are not checkable. " + API_TUNNEL, next_step=API_DOWN_STEP)]
    findings = [Finding(status=Status.ok, target="API server", summary=f"the bot's connection works ({len(nodes)} CP node(s) listed)")]
    if ctx.probe is None:
        findings.append(Finding(status=Status.unknown, target="direct probes",
                                summary="no probes configured (probe.allowed_cidrs): each CP node's /healthz not checked"))
        return findings
    results = await asyncio.gather(*(_probe_cp(ctx, n, cfg.port) for n in nodes))
    down = [name for name, ok, _ in results if not ok]
    for name, ok, said in results:
        findings.append(Finding(status=Status.ok if ok else Status.warn, target=f"node/{name} :{cfg.port}", summary=said,
                                next_step="" if ok else API_NODE_STEP))
    if down:
        # Quorum tolerance is one CP node of three: more is what users feel.
        many = len(down) > len(nodes) // 2
        what = ("API server down on every control-plane node" if len(down) == len(nodes)
                else f"API server down on a control-plane node: {len(down)} of {len(nodes)}")
        findings.insert(1, Finding(status=Status.crit if many else Status.warn, target="control plane",
                                   summary=f"{what} ({', '.join(down)})", details=API_TUNNEL,
                                   next_step=API_ALL_STEP if many else API_NODE_STEP))
    return findings


async def _probe_cp(ctx: HandlerContext, node: dict, port: int) -> tuple[str, bool, str]:
    name = node["metadata"]["name"]
    ip = next((a["address"] for a in (node.get("status") or {}).get("addresses") or [] if a.get("type") == "InternalIP"), None)
    if ip is None:
        return name, False, "no InternalIP in the Node object: not probed"
    parts = []
    ok = True
    for path in ("/healthz", "/readyz"):
        try:
            res = await ctx.http_probe(f"https://{ip}:{port}{path}")
        except SourceError as exc:
            return name, False, f"{ip}:{port} unreachable: {exc.reason}"
        if res.status == 200:
            parts.append(f"{path} ok")
        elif res.status in (401, 403):  # it is up and authenticating; anonymous health checks are off
            parts.append(f"{path} answers {res.status} (anonymous health checks disabled: up, readiness not shown)")
        else:
            ok = False
            failed = [ln.strip() for ln in res.body.splitlines() if ln.strip().startswith("[-]")]
            parts.append(f"{path} {res.status}" + (f" ({'; '.join(failed[:3])})" if failed else ""))
    return name, ok, f"{ip}:{port} " + ", ".join(parts)


# -- 2.5 Cluster Autoscaler Not Scaling -------------------------------------------------------------
RANCHER_CLUSTERS = "provisioning.cattle.io/v1"
MIN_SIZE = "cluster.provisioning.cattle.io/autoscaler-min-size"
MAX_SIZE = "cluster.provisioning.cattle.io/autoscaler-max-size"
# Scale from zero: the autoscaler cannot read a template node, so the pool says what a node has.
ZERO_RESOURCES = tuple(f"cluster.provisioning.cattle.io/autoscaler-resource-{r}" for r in ("cpu", "memory", "ephemeral-storage"))
AUTOSCALER_LOG_PATTERNS = (
    LogPattern(regex=r"401 Unauthorized|[Ii]nvalid token|token .*expired|Unauthorized", cause="Rancher token expired or invalid"),
    LogPattern(regex=r"x509: certificate signed by unknown authority|x509: ", cause="Rancher CA certificate not trusted"),
    LogPattern(regex=r"cloud.?config|cloud provider .*(config|configuration)", cause="cloud-config wrong or missing"),
    LogPattern(regex=r"\b(E\d{4}|level=error|error|failed)\b", cause=""),
)
AUTOSCALER_CREDS_STEP = ("2.5 steps 1-2: check the cloud-config secret (kubectl -n kube-system get secret "
                         "cluster-autoscaler-cloud-config) and that its Rancher token is still valid; fix it, then "
                         "restart the autoscaler (step 4)")
AUTOSCALER_CA_STEP = ("2.5: the autoscaler does not trust Rancher's CA: put Rancher's CA certificate in the "
                      "cloud-config (or its CA bundle) and restart the autoscaler")
AUTOSCALER_POOL_STEP = ("2.5 step 3: set the machine pool's autoscaler-min-size/autoscaler-max-size in "
                        "cluster.tf (machineDeploymentAnnotations; for a pool scaled from zero also "
                        "autoscaler-resource-cpu/memory/ephemeral-storage) and apply it")
AUTOSCALER_BACKOFF_STEP = ("2.5 Escalation: scale-up did not bring a node in time: check the new machine in Rancher "
                           "and Harvester's capacity (2.1); no capacity for new VMs: escalate to the infrastructure team")
AUTOSCALER_DOWN_STEP = "2.5: the autoscaler is not running: kubectl -n kube-system describe deployment -l app.kubernetes.io/name=rancher-cluster-autoscaler"
AUTOSCALER_RESTART_STEP = "2.5 step 4: force a scale-up by restarting the autoscaler"


class AutoscalerChecks(BaseModel):
    """``checks.autoscaler`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = Field("kube-system", description="the autoscaler's namespace")
    selector: str = Field("app.kubernetes.io/name=rancher-cluster-autoscaler", description="its Deployment's and pods' labels")
    status_configmap: str = Field("cluster-autoscaler-status", description="the status ConfigMap it writes")
    status_stale_s: float = Field(600, gt=0, description="a status older than this: the autoscaler loop is not running")
    cluster: str | None = Field(None, description="the provisioning.cattle.io Cluster in fleet-default; null: the first")
    pools: list[str] = Field(["general", "compute"], description="machine pools the autoscaler must manage (cluster.tf)")
    pending_grace_s: float = Field(120, ge=0, description="pods Pending shorter than this are not yet a scale-up problem")


@sop("autoscaler", title="Cluster autoscaler: pending pods, status, log errors, pool min/max", section="2.5",
     severity=Severity.P3,
     causes=("Rancher token expired or invalid", "Rancher CA certificate not trusted",
             "cloud-config wrong or missing", "machine pool min/max annotations missing",
             "scale-up timed out (Harvester capacity)", "no scale-up triggered for pending pods"))
async def autoscaler(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Pods Pending for resources and what the autoscaler said about them (events), its status
    ConfigMap (health, node groups, backoff), the errors in its log (Rancher token, CA,
    cloud-config), and each machine pool's min/max annotations (runbook 2.5)."""
    cfg = check_settings(ctx, "autoscaler", AutoscalerChecks)
    kube = ctx.require_kube()
    findings: list[Finding] = []
    deploys = await kube.list("apps/v1", "deployments", cfg.namespace, label_selector=cfg.selector)
    restart = [SuggestedAction(action="restart", params={"kind": "deployment", "namespace": cfg.namespace,
                                                         "name": deploys[0]["metadata"]["name"]})] if deploys else []
    if not deploys:
        findings.append(Finding(status=Status.warn, target="autoscaler",
                                summary=f"no autoscaler Deployment in {cfg.namespace} ({cfg.selector})",
                                next_step=AUTOSCALER_DOWN_STEP))
    else:
        d = deploys[0]
        ready, want = (d.get("status") or {}).get("readyReplicas", 0), (d.get("spec") or {}).get("replicas", 1)
        findings.append(Finding(status=Status.ok if ready >= want else Status.warn,
                                target=f"deployment/{cfg.namespace}/{d['metadata']['name']}",
                                summary=f"{ready}/{want} ready", next_step="" if ready >= want else AUTOSCALER_DOWN_STEP))
    pending = await _pending_for_resources(ctx, cfg)
    findings += await _autoscaler_status(ctx, cfg, bool(pending))
    log_findings = await _autoscaler_log(ctx, cfg, restart)
    findings += log_findings
    findings += await _pool_annotations(ctx, cfg)
    if pending:
        said = "; ".join(f"{name}: {why}" for name, why in pending[:3])
        triggered = any("triggered scale-up" in why and "didn't" not in why for _, why in pending)
        findings.append(Finding(status=Status.warn, target="pending pods",
                                summary=f"{len(pending)} pod(s) Pending for resources"
                                        + ("" if triggered else ", no scale-up triggered") + f": {said}",
                                next_step=AUTOSCALER_RESTART_STEP if not log_findings else AUTOSCALER_CREDS_STEP,
                                actions=restart if not triggered else []))
    return findings


async def _pending_for_resources(ctx: HandlerContext, cfg: AutoscalerChecks) -> list[tuple[str, str]]:
    """(ns/pod, what the scheduler and the autoscaler said) for pods Pending on resources."""
    pods = await ctx.require_kube().list("v1", "pods", field_selector="status.phase=Pending")
    now = datetime.now(timezone.utc)
    out = []
    for pod in pods:
        sched = condition(pod, "PodScheduled") or {}
        message = sched.get("message") or ""
        if sched.get("status") != "False" or "Insufficient" not in message:
            continue
        since = parse_time(sched.get("lastTransitionTime")) or parse_time(pod["metadata"].get("creationTimestamp"))
        if since and (now - since).total_seconds() < cfg.pending_grace_s:
            continue
        ns, name = pod["metadata"].get("namespace", ""), pod["metadata"]["name"]
        events, _ = await ctx.attempt(ctx.events(ns, kind="Pod", name=name), "events")
        scaler = next((e for e in events or [] if e.reason in ("TriggeredScaleUp", "NotTriggerScaleUp")), None)
        insufficient = ", ".join(sorted(set(re.findall(r"Insufficient \w+", message))))
        out.append((f"{ns}/{name}", insufficient + (f"; autoscaler: {scaler.message[:160]}" if scaler
                                                    else "; no event from the autoscaler")))
    return out


async def _autoscaler_status(ctx: HandlerContext, cfg: AutoscalerChecks, pending: bool) -> list[Finding]:
    """kube-system/cluster-autoscaler-status: the structured status (1.30+) or the older text."""
    import yaml

    try:
        cm = await ctx.require_kube().get("v1", "configmaps", cfg.status_configmap, cfg.namespace)
    except SourceError as exc:
        if exc.status != 404:
            raise
        return [Finding(status=Status.warn if pending else Status.ok, target=f"configmap/{cfg.status_configmap}",
                        summary="no status ConfigMap: the autoscaler has not run its loop (or --write-status-configmap=false)",
                        next_step=AUTOSCALER_DOWN_STEP if pending else "")]
    raw = (cm.get("data") or {}).get("status") or ""
    # "2025-07-25 22:59:22.661669494 +0000 UTC", Go's time.String()
    updated = (cm["metadata"].get("annotations") or {}).get("cluster-autoscaler.kubernetes.io/last-updated", "")
    m = re.match(r"(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)", updated)
    stamp = parse_time(f"{m.group(1)}T{m.group(2)}Z") if m else None
    findings: list[Finding] = []
    age = (datetime.now(timezone.utc) - stamp).total_seconds() if stamp else None
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError:
        doc = None
    if isinstance(doc, dict) and ("autoscalerStatus" in doc or "nodeGroups" in doc):
        wide = doc.get("clusterWide") or {}
        health = (wide.get("health") or {}).get("status", "?")
        scale_up = (wide.get("scaleUp") or {}).get("status", "?")
        groups = []
        for g in doc.get("nodeGroups") or []:
            gh = g.get("health") or {}
            up = g.get("scaleUp") or {}
            groups.append(f"{g.get('name')} {gh.get('cloudProviderTarget', '?')} (min {gh.get('minSize', '?')}, "
                          f"max {gh.get('maxSize', '?')})")
            if up.get("status") == "Backoff":
                info = up.get("backoffInfo") or {}
                findings.append(Finding(status=Status.warn, target=f"node group {g.get('name')}",
                                        summary=f"scale-up timed out, node group {g.get('name')} in backoff: "
                                                f"{info.get('errorCode', '')} {info.get('errorMessage', '')}".strip(),
                                        next_step=AUTOSCALER_BACKOFF_STEP))
        state = doc.get("autoscalerStatus", "?")
    else:
        health = (re.search(r"Health:\s*(\w+)", raw) or [None, "?"])[1]
        scale_up = (re.search(r"ScaleUp:\s*(\w+)", raw) or [None, "?"])[1]
        groups = re.findall(r"Name:\s*(\S+)", raw)
        state = "Running" if raw else "?"
    fine = health == "Healthy" and (age is None or age <= cfg.status_stale_s)
    summary = (f"{state}, cluster {health}, scale-up {scale_up}; node groups: {', '.join(groups) or 'none'}"
               + (f"; status written {_age(age)} ago" if age is not None else ""))
    if age is not None and age > cfg.status_stale_s:
        summary += " (stale: the autoscaler loop is not running)"
    findings.insert(0, Finding(status=Status.ok if fine else Status.warn, target=f"configmap/{cfg.status_configmap}",
                               summary=summary, next_step="" if fine else AUTOSCALER_DOWN_STEP))
    if not groups:
        findings.append(Finding(status=Status.warn, target="node groups",
                                summary="the autoscaler manages no node group: machine pool min/max annotations missing?",
                                next_step=AUTOSCALER_POOL_STEP))
    return findings


async def _autoscaler_log(ctx: HandlerContext, cfg: AutoscalerChecks, restart: list[SuggestedAction]) -> list[Finding]:
    pods, failed = await ctx.attempt(ctx.require_kube().list("v1", "pods", cfg.namespace, label_selector=cfg.selector),
                                     "autoscaler pods")
    if failed is not None or not pods:
        return [failed] if failed else []
    pod = pods[0]["metadata"]["name"]
    hits, failed = await ctx.attempt(ctx.log_hits(cfg.namespace, pod, AUTOSCALER_LOG_PATTERNS, tail=200, quote=1),
                                     f"pod/{cfg.namespace}/{pod} log")
    if failed is not None:
        return [failed]
    named = [h for h in hits if h.pattern.cause]
    if not named:
        return []
    hit = named[0]
    step = AUTOSCALER_CA_STEP if "CA" in hit.pattern.cause else AUTOSCALER_CREDS_STEP
    return [Finding(status=Status.warn, target=f"pod/{cfg.namespace}/{pod} log",
                    summary=f"{hit.pattern.cause}: {hit.lines[-1][:240]}", details="\n".join(hit.lines),
                    next_step=step, actions=restart)]


async def _pool_annotations(ctx: HandlerContext, cfg: AutoscalerChecks) -> list[Finding]:
    """The machine pools of Rancher's provisioning Cluster on the management cluster: min/max,
    and for a pool the autoscaler may take to zero the node's resources (scale from zero)."""
    mgmt = ctx.kube_mgmt
    if mgmt is None:  # Rancher's Cluster objects live where Rancher runs, not in this cluster
        return [Finding(status=Status.ok, target="machine pools",
                        summary="pool min/max annotations not checked: no management cluster configured "
                                "(kubernetes.mgmt_kubeconfig)")]
    try:
        clusters = await mgmt.list(RANCHER_CLUSTERS, "clusters", "fleet-default")
    except SourceError as exc:
        if exc.status in (403, 404):
            return [Finding(status=Status.unknown, target="machine pools",
                            summary="pool annotations not checkable: provisioning.cattle.io clusters on the "
                                    f"management cluster: {exc.reason}")]
        raise
    clusters = [c for c in clusters if cfg.cluster in (None, c["metadata"]["name"])]
    if not clusters:
        return []
    pools = (((clusters[0].get("spec") or {}).get("rkeConfig") or {}).get("machinePools")) or []
    problems, fine = [], []
    by_name = {p.get("name"): p for p in pools}
    problems += [f"{name} is not a machine pool of the cluster" for name in cfg.pools if name not in by_name]
    for name in cfg.pools:
        pool = by_name.get(name)
        if pool is None:
            continue
        ann = pool.get("machineDeploymentAnnotations") or {}
        lacking = [a.rsplit("/", 1)[1] for a in (MIN_SIZE, MAX_SIZE) if a not in ann]
        if int(pool.get("quantity", 1) or 0) == 0 or ann.get(MIN_SIZE) == "0":
            lacking += [a.rsplit("/", 1)[1] for a in ZERO_RESOURCES if a not in ann]
        if lacking:
            problems.append(f"{name} lacks {', '.join(lacking)}")
        else:
            fine.append(f"{name} {ann[MIN_SIZE]}..{ann[MAX_SIZE]}")
    if problems:
        return [Finding(status=Status.warn, target="machine pools",
                        summary="machine pool min/max annotations missing: " + "; ".join(problems),
                        next_step=AUTOSCALER_POOL_STEP)]
    return [Finding(status=Status.ok, target="machine pools", summary="autoscaled pools: " + (", ".join(fine) or "none"))]


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
    leader_changes_warn: int = Field(3, ge=1, description="leader changes in the last hour that mean unstable elections")
    db_quota_warn: float = Field(0.8, gt=0, le=1, description="DB size share of the backend quota: warning (NOSPACE at 1)")
    rate_window: str = Field("5m", pattern=r"^[0-9]+(ms|s|m|h)$", description="PromQL rate window")


class EtcdParams(SOPParams):
    instance: HostPort | None = Field(None, description="one member's Prometheus instance, host:port")


@sop("etcd-health", title="etcd members: up, leader, leader changes, WAL fsync, peer latency, DB size",
     section="2.3", severity=Severity.P1, alerts=("EtcdMemberDown", "EtcdHighLatency"),
     causes=("etcd member down", "WAL fsync > 500 ms (slow disk)", "quorum lost (2 of 3 CP down)",
             "frequent leader changes", "DB size near its quota"))
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
    up, leader, fsync, rtt, changes, size, quota, is_leader = await asyncio.gather(
        ctx.prometheus.query(f"up{{{sel}}}"),
        ctx.prometheus.query(f"etcd_server_has_leader{{{sel}}}"),
        ctx.prometheus.query("histogram_quantile(0.99, sum by (instance, le) "
                             f"(rate(etcd_disk_wal_fsync_duration_seconds_bucket{{{sel}}}[{w}])))"),
        ctx.prometheus.query("histogram_quantile(0.99, sum by (instance, le) "
                             f"(rate(etcd_network_peer_round_trip_time_seconds_bucket{{{sel}}}[{w}])))"),
        # The runbook's curl :2381/metrics | grep etcd_server_leader_changes_seen_total, over an hour.
        ctx.prometheus.query(f"max(increase(etcd_server_leader_changes_seen_total{{{sel}}}[1h]))"),
        ctx.prometheus.query(f"etcd_mvcc_db_total_size_in_bytes{{{sel}}}"),
        ctx.prometheus.query(f"etcd_server_quota_backend_bytes{{{sel}}}"),
        ctx.prometheus.query(f"etcd_server_is_leader{{{sel}}} == 1"))
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
    findings += _etcd_extras(cfg, changes, by(size), by(quota), is_leader)
    if healthy < quorum:
        findings.insert(0, Finding(status=Status.crit, target="quorum",
                                   summary=f"quorum lost: {summary}; quorum needs {quorum}",
                                   details=await _restore_prerequisites(ctx), next_step=ETCD_QUORUM_STEP))
    elif problems:
        step = ETCD_DOWN_STEP if down else ETCD_LEADER_STEP if leaderless else ETCD_SCRAPE_STEP
        findings.insert(0, Finding(status=Status.crit, target="members", summary=summary, next_step=step))
    else:
        findings.insert(0, Finding(status=Status.ok, target="members", summary=summary))
    return findings


def _etcd_extras(cfg: EtcdChecks, changes: list[Sample], size: dict[str, float], quota: dict[str, float],
                 is_leader: list[Sample]) -> list[Finding]:
    """Which member leads, how often the leader changed in the last hour, and each member's DB
    size against its backend quota (etcd raises NOSPACE and refuses writes at the quota)."""
    out: list[Finding] = []
    if is_leader:
        out.append(Finding(status=Status.ok, target="leader",
                           summary=f"leader: {', '.join(sorted(s.labels.get('instance', '?') for s in is_leader))}"))
    n = next((s.value for s in changes if not math.isnan(s.value)), None)
    if n is not None:
        many = n >= cfg.leader_changes_warn
        out.append(Finding(status=Status.warn if many else Status.ok, target="leader changes",
                           summary=f"{n:.0f} leader change(s) in the last hour"
                                   + (": frequent elections (slow disk or network between the CP nodes)" if many else ""),
                           next_step=f"{ETCD_FSYNC_STEP}; {ETCD_RTT_STEP}" if many else ""))
    if size:
        inst, biggest = max(size.items(), key=lambda kv: kv[1])
        limit = quota.get(inst)
        share = biggest / limit if limit else None
        status = (Status.ok if share is None or share < cfg.db_quota_warn
                  else Status.crit if share >= 0.95 else Status.warn)
        out.append(Finding(status=status, target="db size",
                           summary=f"largest DB {biggest / 2 ** 20:.0f} MiB on {inst}"
                                   + (f", {share:.0%} of its {limit / 2 ** 30:.1f} GiB quota" if share is not None else "")
                                   + (": DB size near its quota (compact and defragment)" if status is not Status.ok else ""),
                           next_step="" if status is Status.ok else
                           "2.3: compact and defragment etcd (etcdctl compact/defrag on a CP node, SSH), "
                           "then disarm the NOSPACE alarm"))
    return out


async def _restore_prerequisites(ctx: HandlerContext) -> str:
    """What 10.3 needs that the bot can verify: a ready snapshot and the node holding it. With
    quorum lost the API may not answer; then that is what the report says."""
    lines = [RESTORE_GUIDANCE]
    if ctx.kube is None:
        return "\n".join(lines + ["Snapshots not checked: no Kubernetes access configured."])
    try:
        snaps = await ctx.kube.list(ETCD_SNAPSHOT_API, "etcdsnapshotfiles")
    except SourceError as exc:
        return "\n".join(lines + [f"Snapshots not checkable through the API ({exc.reason}): list them on a CP node "
                                  "(sudo ls -la /var/lib/rancher/rke2/server/db/snapshots/)."])
    good = sorted((s for s in snaps if (s.get("status") or {}).get("readyToUse") is True), key=_snap_time, reverse=True)
    if not good:
        return "\n".join(lines + ["No snapshot is ready to use: " + SNAPSHOT_NONE_STEP])
    newest = good[0]
    age_h = (datetime.now(timezone.utc) - _snap_time(newest)).total_seconds() / 3600
    return "\n".join(lines + [f"Prerequisite met: snapshot {newest['spec'].get('snapshotName')} on "
                              f"{newest['spec'].get('nodeName')} ({age_h:.1f}h old, {len(good)} ready); restore it on "
                              "that node: the others do not hold its file."])


# -- 2.3 snapshot schedule and 10.3 etcd Restore from Snapshot ------------------------------------
ETCD_SNAPSHOT_API = "k3s.cattle.io/v1"
SNAPSHOT_STALE_STEP = ("2.3 Prevention: snapshots run every 6 hours (cluster.tf etcd snapshot_schedule_cron): "
                       "check rke2-server's log on the CP nodes (journalctl -u rke2-server | grep -i snapshot) "
                       "and take one now (rke2 etcd-snapshot save, SSH)")
SNAPSHOT_FAILED_STEP = "2.3: a snapshot failed: read its error, free space under /var/lib/rancher/rke2/server/db/snapshots"
SNAPSHOT_NONE_STEP = ("2.3 Escalation: no etcd snapshot is available: if quorum is lost as well this needs a full "
                      "cluster rebuild: escalate to the infrastructure lead now; take a snapshot while etcd still answers")
RESTORE_GUIDANCE = ("10.3 etcd Restore from Snapshot is done on the CP nodes over SSH, which the bot cannot do: "
                    "stop rke2-server on ALL CP nodes; restore the snapshot on ONE node (etcdctl snapshot restore "
                    "<file> --data-dir=.../db/etcd-new, swap it with db/etcd); start rke2-server there first, wait "
                    "for it to lead, then start the others; verify kubectl get nodes. 15-30 minutes; if the restore "
                    "fails, contact Rancher support.")


class SnapshotChecks(BaseModel):
    """``checks.etcd-snapshots`` in the config."""

    model_config = ConfigDict(extra="forbid")
    every_hours: float = Field(6, gt=0, description="the snapshot schedule (cluster.tf: every 6 hours)")
    retain: int = Field(5, ge=1, description="snapshots kept per node (cluster.tf: 5)")
    late_factor: float = Field(1.5, ge=1, description="the newest snapshot older than this many intervals: late")
    critical_hours: float = Field(24, gt=0, description="the newest snapshot older than this: critical")


@sop("etcd-snapshots", title="etcd snapshots: on schedule, ready, per CP node; 10.3 restore prerequisites",
     sections=("2.3", "10.3"), severity=Severity.P1,
     causes=("etcd snapshots late (schedule not running)", "etcd snapshot failed",
             "no etcd snapshot available"))
async def etcd_snapshots(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """The ETCDSnapshotFile objects RKE2 records for each snapshot (what `ls db/snapshots/` shows
    on the node): the newest one's age against the 6-hourly schedule, failures with their error,
    the count per CP node against the retention, and which one a 10.3 restore would start from."""
    cfg = check_settings(ctx, "etcd-snapshots", SnapshotChecks)
    kube = ctx.require_kube()
    try:
        snaps = await kube.list(ETCD_SNAPSHOT_API, "etcdsnapshotfiles")
    except SourceError as exc:
        if exc.status != 404:
            raise
        return [Finding(status=Status.unknown, target="etcd snapshots",
                        summary="the cluster has no ETCDSnapshotFile API (k3s.cattle.io/v1): not RKE2/k3s, "
                                "or too old to record snapshots as objects; check db/snapshots/ on a CP node")]
    nodes = await kube.list("v1", "nodes", label_selector=CONTROL_PLANE)
    cps = sorted(n["metadata"]["name"] for n in nodes)
    now = datetime.now(timezone.utc)
    good = sorted((s for s in snaps if (s.get("status") or {}).get("readyToUse") is True),
                  key=_snap_time, reverse=True)
    failed = [s for s in snaps if (s.get("status") or {}).get("readyToUse") is False
              or (s.get("status") or {}).get("error")]
    findings: list[Finding] = []
    if not good:
        findings.append(Finding(status=Status.crit, target="etcd snapshots",
                                summary=f"no etcd snapshot available ({len(snaps)} recorded, none ready to use)",
                                next_step=SNAPSHOT_NONE_STEP, details=RESTORE_GUIDANCE))
    else:
        newest = good[0]
        age_h = (now - _snap_time(newest)).total_seconds() / 3600
        late = age_h > cfg.every_hours * cfg.late_factor
        status = Status.crit if age_h > cfg.critical_hours else Status.warn if late else Status.ok
        summary = (f"newest snapshot {newest['spec'].get('snapshotName', newest['metadata']['name'])} on "
                   f"{newest['spec'].get('nodeName', '?')} is {age_h:.1f}h old")
        summary += (f": etcd snapshots late, the schedule is every {cfg.every_hours:g}h" if late
                    else f" (schedule every {cfg.every_hours:g}h)")
        findings.append(Finding(status=status, target="etcd snapshots", summary=summary,
                                next_step=SNAPSHOT_STALE_STEP if late else ""))
    for snap in sorted(failed, key=_snap_time, reverse=True)[:3]:
        err = ((snap.get("status") or {}).get("error") or {}).get("message") or "not ready to use"
        findings.append(Finding(status=Status.warn, target=f"snapshot {snap['spec'].get('snapshotName', '?')}",
                                summary=f"etcd snapshot failed on {snap['spec'].get('nodeName', '?')}: {err[:200]}",
                                next_step=SNAPSHOT_FAILED_STEP))
    per_node = Counter(s["spec"].get("nodeName", "?") for s in good)
    short = [n for n in cps if not per_node.get(n)]
    if short and good:  # each etcd node snapshots its own copy; one missing its share stopped snapshotting
        findings.append(Finding(status=Status.warn, target="snapshots per node",
                                summary=f"CP node(s) without a snapshot: {', '.join(short)}",
                                next_step=SNAPSHOT_STALE_STEP))
    if good:
        newest = good[0]
        where = newest["spec"].get("nodeName", "?")
        size = (newest.get("status") or {}).get("size")
        try:
            mb = f"{quantity(size) / 2 ** 20:.0f} MiB" if size else "size n/a"
        except ValueError:
            mb = "size n/a"
        present = "a listed CP node" if where in cps else "a node that is no longer listed: copy the file first"
        findings.append(Finding(status=Status.ok, target="10.3 prerequisites",
                                summary=f"restore would start from {newest['spec'].get('location', '?')} ({mb}) on "
                                        f"{where}, {present}; {len(good)} snapshot(s) ready across "
                                        f"{len(per_node)} node(s) (retention {cfg.retain} per node)",
                                details=RESTORE_GUIDANCE))
    return findings


def _snap_time(snap: dict) -> datetime:
    return (parse_time((snap.get("status") or {}).get("creationTime"))
            or parse_time(snap["metadata"].get("creationTimestamp")) or datetime.min.replace(tzinfo=timezone.utc))


def _by_instance(samples: list[Sample]) -> dict[str, float]:
    """instance → value, NaN (no rate data in the window) left out."""
    return {s.labels.get("instance", "?"): s.value for s in samples if not math.isnan(s.value)}


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.0095 else f"{seconds * 1000:.1f} ms"


# -- management cluster: Harvester VMs and Rancher machines (2.1, 2.2, 2.4, 2.7, 2.8) --
# Read through ctx.kube_mgmt (kubernetes.mgmt_kubeconfig: the runbook's
# cluster/kubeconfig-harvester.yaml), a different cluster with its own credentials and RBAC
# (charts/sop-bot/templates/rbac-management.yaml). Rancher runs there too, so its Cluster API
# Machines are in that cluster's fleet-default namespace. Longhorn's volumes (8.4) are Harvester's.
import base64 as _b64  # noqa: E402
from dataclasses import dataclass as _dataclass  # noqa: E402
from typing import Any as _Any, Literal as _Literal  # noqa: E402

import yaml as _yaml  # noqa: E402

from bot.sdk import (K8sNamespace as _K8sNamespace, KubeClient as _KubeClient,  # noqa: E402
                     SourceError as _SourceError, find_condition as _find_condition)

KUBEVIRT_API = "kubevirt.io/v1"
CAPI_API = "cluster.x-k8s.io/v1beta1"
LONGHORN_API = "longhorn.io/v1beta2"
RANCHER_API = "provisioning.cattle.io/v1"
MGMT_NOT_CONFIGURED = ("no management cluster configured (kubernetes.mgmt_kubeconfig, the runbook's "
                       "cluster/kubeconfig-harvester.yaml): Harvester VMs, Rancher machines and Longhorn "
                       "volumes not checked")
MGMT_STEP = "set kubernetes.mgmt_kubeconfig to a kubeconfig for the Harvester cluster (docs/rbac.md)"
JOIN_DELETE_STEP = ("2.1 step 4: delete the stuck machine so the autoscaler recreates it "
                    "(kubectl delete machine <machine> -n fleet-default)")
JOIN_CONSOLE_STEP = "2.1 step 1: check in the Harvester console (UI > VMs > Console) whether the VM booted"
JOIN_NETWORK_STEP = ("2.1 step 3 (SSH, the bot cannot): on the node, curl -sk https://<rancher-url>/healthz "
                     "and journalctl -u rke2-agent -n 100; then step 4: delete the machine")
VM_START_STEP = "2.2: the VM is stopped: start it from Harvester (proposed: start-vm)"
VM_RESTART_STEP = "2.2: the VM crashed: restart it from Harvester (proposed: restart-vm)"
VM_CAPACITY_STEP = ("2.1/2.5 escalation: Harvester has no host that fits the VM: escalate to the infrastructure "
                    "team (host resources, storage)")
VM_BOOT_ESCALATION = ("2.1 escalation: it failed to boot 3 times or more: escalate to the infrastructure team "
                      "(Harvester node health, storage)")
VM_PAUSED_STEP = "2.2: the VM is paused (suspended): unpause it in the Harvester UI"
HARVESTER_STEP = ("2.2 escalation: several VMs or a Harvester host down point at Harvester, not one kubelet: "
                  "escalate to the infrastructure team (Harvester host diagnostics)")
CP_VMS_STEP = ("2.4 step 1: start the control-plane VMs in Harvester; if they run but the API is down, SSH to a "
               "CP node: systemctl status rke2-server; all 3 down in Harvester: escalate to infrastructure")
RANCHER_STEP = ("2.4 step 4: if Rancher shows the cluster unavailable but direct access works, the Rancher tunnel "
                "is broken: use the kubeconfig from a CP node (/etc/rancher/rke2/rke2.yaml, SSH) meanwhile; "
                "read Rancher's log: kubectl -n cattle-system logs -l app=rancher --tail=50 on Harvester")
CP_QUORUM_STEP = "2.3 → 10.3: with 2 of 3 control-plane VMs down etcd has no quorum: start them first"
EFI_STEP = ("2.7 steps 1-2 (Terraform, guidance): terraform state list | grep efi in cluster/, re-run "
            "./terraform.sh apply so the EFI patches apply; step 3: an image without EFI GRUB needs a rebuild")
CLOUD_INIT_STEP = ("2.8 step 3 (Terraform, guidance): fix the user_data in cluster.tf (Terraform's indent() "
                   "indents only lines 2+) and terraform apply; Rancher rolls the machines")
LONGHORN_STEP = ("8.4: bring the Harvester node back (Longhorn rebuilds the replicas by itself) or, if it is "
                 "gone for good, make sure the remaining nodes have room for the rebuild")
_VM_CREATOR = "harvesterhci.io/creator"


class HarvesterChecks(BaseModel):
    """``checks.harvester`` in the config: shared by node-join, harvester-vms, vm-boot-config and
    longhorn-volumes."""

    model_config = ConfigDict(extra="forbid")
    vm_namespace: _K8sNamespace | None = Field(None, description="namespace of the nodes' VMs; null: every namespace")
    machine_namespace: _K8sNamespace = Field("fleet-default", description="where Rancher keeps the Machines")
    provisioning_timeout_min: float = Field(15, gt=0, description="a Machine Provisioning longer is stuck (2.1)")
    firmware: _Literal["efi", "bios"] = Field("efi", description="the bootloader the golden image needs (2.7)")
    longhorn_namespace: _K8sNamespace = Field("longhorn-system", description="Longhorn's namespace in Harvester")


@_dataclass
class _Vm:
    """What one Harvester VM shows: run state, where it runs, how it boots."""

    name: str
    namespace: str
    printable: str
    firmware: str
    user_data: str | None
    user_data_secret: str | None
    host: str
    agent: bool | None  # qemu-guest-agent connected (the guest OS booted); None: no instance
    why: str  # the VM's own words for a state that is not Running
    start_failures: int
    node_driver: bool  # created by Rancher's Harvester node driver (a cluster node's VM)

    @property
    def running(self) -> bool:
        return self.printable == "Running"


def _vm_view(vm: dict, vmi: dict | None) -> _Vm:
    meta, spec = vm["metadata"], ((vm.get("spec") or {}).get("template") or {}).get("spec") or {}
    loader = ((spec.get("domain") or {}).get("firmware") or {}).get("bootloader") or {}
    firmware = "efi" if "efi" in loader else "bios" if "bios" in loader else "bios (KubeVirt default)"
    user_data = secret = None
    for vol in spec.get("volumes") or []:
        src = vol.get("cloudInitNoCloud") or vol.get("cloudInitConfigDrive")
        if not src:
            continue
        if src.get("userData") is not None:
            user_data = str(src["userData"])
        elif src.get("userDataBase64"):
            try:
                user_data = _b64.b64decode(src["userDataBase64"]).decode("utf-8", errors="replace")
            except ValueError:
                user_data = "\x00not base64"
        elif (src.get("secretRef") or {}).get("name"):
            secret = src["secretRef"]["name"]  # only its name: the bot reads no Secret data
    status = vm.get("status") or {}
    conds = [*(status.get("conditions") or []), *((vmi or {}).get("status") or {}).get("conditions", [])]
    # The most specific words first: the scheduler's, then a failure, then "not ready".
    why = next((c.get("message") or c.get("reason") or "" for t in ("PodScheduled", "Failure", "Ready")
                for c in conds if c.get("type") == t and c.get("status") == "False"
                and (c.get("message") or c.get("reason"))), "")
    agent = None
    if vmi is not None:
        agent = (_find_condition((vmi.get("status") or {}).get("conditions"), "AgentConnected") or {}).get("status") == "True"
    return _Vm(name=meta["name"], namespace=meta.get("namespace", ""),
               printable=status.get("printableStatus") or "Unknown", firmware=firmware, user_data=user_data,
               user_data_secret=secret, host=((vmi or {}).get("status") or {}).get("nodeName") or "-",
               agent=agent, why=why,
               start_failures=int((status.get("startFailure") or {}).get("consecutiveFailCount") or 0),
               node_driver=(meta.get("labels") or {}).get(_VM_CREATOR) == "docker-machine-driver-harvester")


def _yaml_problem(text: str) -> str | None:
    """Where cloud-init's YAML parser would stop: line, column and the parser's words (never the
    line itself: user data carries registration tokens)."""
    if text == "\x00not base64":
        return "userDataBase64 is not valid base64"
    try:
        _yaml.safe_load(text)
    except _yaml.MarkedYAMLError as exc:
        def at(mark: _Any) -> str:
            return f"line {mark.line + 1} column {mark.column + 1}"
        mark = exc.problem_mark or exc.context_mark
        where = at(mark) if mark else "an unknown position"
        context = f" ({exc.context} at {at(exc.context_mark)})" if exc.context and exc.context_mark else ""
        return f"{where}: {exc.problem or exc.context}{context}"
    except _yaml.YAMLError as exc:
        return str(exc).splitlines()[0][:160]
    return None


def _boot_problems(vm: _Vm, cfg: HarvesterChecks) -> list[tuple[Status, str, str]]:
    """(status, cause, next step) for the VM's firmware and cloud-init user data (2.7, 2.8)."""
    out: list[tuple[Status, str, str]] = []
    if not vm.firmware.startswith(cfg.firmware):
        out.append((Status.crit, f"EFI boot issue: firmware bootloader is {vm.firmware}, the golden image "
                                 f"needs {cfg.firmware} (the VM stops at 'No bootable device')", EFI_STEP))
    if vm.user_data is not None:
        problem = _yaml_problem(vm.user_data)
        if problem:
            out.append((Status.crit, f"cloud-init failure: user data is not valid YAML at {problem}",
                        CLOUD_INIT_STEP))
        elif not vm.user_data.lstrip().startswith(("#cloud-config", "#!", "#include", "## template: jinja")):
            out.append((Status.warn, "cloud-init user data has no '#cloud-config' header: cloud-init does not "
                                     "apply it as cloud-config", CLOUD_INIT_STEP))
    return out


def _mgmt(ctx: HandlerContext) -> _KubeClient | None:
    return ctx.kube_mgmt


def _not_configured() -> list[Finding]:
    return [Finding(status=Status.ok, target="management cluster", summary=MGMT_NOT_CONFIGURED,
                    next_step=MGMT_STEP)]


async def _vms(mgmt: _KubeClient, cfg: HarvesterChecks) -> dict[str, _Vm]:
    vms, vmis = await asyncio.gather(mgmt.list(KUBEVIRT_API, "virtualmachines", cfg.vm_namespace),
                                     mgmt.list(KUBEVIRT_API, "virtualmachineinstances", cfg.vm_namespace))
    by_key = {(i["metadata"].get("namespace"), i["metadata"]["name"]): i for i in vmis}
    return {v["metadata"]["name"]: _vm_view(v, by_key.get((v["metadata"].get("namespace"), v["metadata"]["name"])))
            for v in vms}


async def _guest_nodes(ctx: HandlerContext) -> tuple[dict[str, dict] | None, str]:
    """The guest cluster's nodes by name, or (None, why) when its API does not answer."""
    if ctx.kube is None:
        return None, "no Kubernetes access configured"
    try:
        return {n["metadata"]["name"]: n for n in await ctx.kube.list("v1", "nodes")}, ""
    except _SourceError as exc:
        return None, exc.reason


def _vm_for_machine(machine: dict, vms: dict[str, _Vm]) -> _Vm | None:
    ref = ((machine.get("spec") or {}).get("infrastructureRef") or {}).get("name")
    node = (((machine.get("status") or {}).get("nodeRef")) or {}).get("name")
    return vms.get(node or "") or vms.get(ref or "") or vms.get(machine["metadata"]["name"].removesuffix("-machine"))


def _age_min(obj: dict, now: datetime) -> float:
    t = parse_time(obj["metadata"].get("creationTimestamp"))
    return (now - t).total_seconds() / 60 if t else 0.0


def _vm_state_cause(vm: _Vm) -> tuple[str, str, list[SuggestedAction]]:
    """Why a VM that is not Running is not, in KubeVirt's words, with the fitting step and action."""
    ref = {"namespace": vm.namespace, "name": vm.name}
    if vm.printable == "Stopped":
        return "VM Stopped in Harvester", VM_START_STEP, [SuggestedAction(action="start-vm", params=ref)]
    if vm.printable == "CrashLoopBackOff":
        tries = f", {vm.start_failures} failed starts" if vm.start_failures else ""
        # 2.1's escalation: a VM that keeps failing to boot after 3 attempts is Harvester's problem.
        step = VM_RESTART_STEP + ("; " + VM_BOOT_ESCALATION if vm.start_failures >= 3 else "")
        return f"VM crashed: CrashLoopBackOff{tries}", step, [SuggestedAction(action="restart-vm", params=ref)]
    if vm.printable == "ErrorUnschedulable":
        return (f"VM ErrorUnschedulable: {vm.why or 'no Harvester host fits it'}"[:240], VM_CAPACITY_STEP, [])
    if vm.printable == "Paused":
        return "VM Paused (suspended) in Harvester", VM_PAUSED_STEP, []
    return (f"VM {vm.printable}" + (f": {vm.why}" if vm.why else ""))[:240], VM_RESTART_STEP, \
        [SuggestedAction(action="restart-vm", params=ref)]


@sop("node-join", title="Rancher machines vs nodes: stuck provisioning and the VM behind it", section="2.1",
     severity=Severity.P2,
     causes=("machine stuck Provisioning", "VM not running (Stopped, crashed, ErrorUnschedulable)",
             "EFI boot issue (firmware)", "cloud-init failure (user data not valid YAML)",
             "network from the VM to Rancher (ruled in by elimination, SSH to confirm)",
             "no VM created (the node driver's error from the Machine's InfrastructureReady)"))
async def node_join(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Every Rancher machine of the cluster has joined as a node; one stuck Provisioning longer
    than the timeout is explained from its VM: run state, firmware, cloud-init user data, and
    whether the guest OS reported in (runbook 2.1)."""
    mgmt = _mgmt(ctx)
    if mgmt is None:
        return _not_configured()
    cfg = check_settings(ctx, "harvester", HarvesterChecks)
    machines, vms, (nodes, guest_error) = await asyncio.gather(
        mgmt.list(CAPI_API, "machines", cfg.machine_namespace), _vms(mgmt, cfg), _guest_nodes(ctx))
    now = datetime.now(timezone.utc)
    findings: list[Finding] = []
    running = 0
    for m in machines:
        name = m["metadata"]["name"]
        status = m.get("status") or {}
        phase = status.get("phase") or "Pending"
        node = (status.get("nodeRef") or {}).get("name")
        age = _age_min(m, now)
        target = f"machine/{name}"
        delete = [SuggestedAction(action="delete-machine",
                                  params={"namespace": m["metadata"].get("namespace", cfg.machine_namespace),
                                          "name": name})]
        if phase == "Running":
            running += 1
            if nodes is not None and node and node not in nodes:
                findings.append(Finding(status=Status.warn, target=target,
                                        summary=f"Running, but its node {node} is not in the cluster",
                                        next_step=JOIN_CONSOLE_STEP))
            continue
        if phase == "Failed":
            why = status.get("failureMessage") or status.get("failureReason") or "no failure message"
            findings.append(Finding(status=Status.crit, target=target, summary=f"phase Failed: {why}"[:240],
                                    next_step=JOIN_DELETE_STEP, actions=delete))
            continue
        if phase not in ("Pending", "Provisioning", "Provisioned"):
            findings.append(Finding(status=Status.ok, target=target, summary=f"{phase} (created {age:.0f} min ago)"))
            continue
        if age <= cfg.provisioning_timeout_min:
            findings.append(Finding(status=Status.ok, target=target,
                                    summary=f"{phase} for {age:.0f} min (stuck only after "
                                            f"{cfg.provisioning_timeout_min:g} min)"))
            continue
        vm = _vm_for_machine(m, vms)
        causes, steps, actions = _join_causes(vm, cfg, m)
        findings.append(Finding(
            status=Status.crit, target=target,
            summary=(f"stuck {phase} for {age:.0f} min (over {cfg.provisioning_timeout_min:g} min), no node "
                     f"joined; {'; '.join(causes)}")[:400],
            details=f"VM: {vm.namespace}/{vm.name} {vm.printable} on {vm.host}, firmware {vm.firmware}" if vm else "",
            next_step="; ".join(dict.fromkeys([*steps, JOIN_DELETE_STEP])), actions=[*actions, *delete]))
    joined = f", {len(nodes)} nodes in the cluster" if nodes is not None else f"; the cluster's API: {guest_error}"
    stuck = [f for f in findings if f.status is not Status.ok]
    findings.insert(0, Finding(status=Status.worst([f.status for f in stuck]) if stuck else Status.ok,
                               target="machines",
                               summary=f"{running}/{len(machines)} Rancher machines Running{joined}"))
    return findings


def _join_causes(vm: _Vm | None, cfg: HarvesterChecks,
                 machine: dict) -> tuple[list[str], list[str], list[SuggestedAction]]:
    """The runbook's three causes (cloud-init, network to Rancher, EFI) checked against the VM."""
    if vm is None:
        # Rancher's provisioning job reports why the node driver made no VM in these conditions.
        infra = next((c for t in ("InfrastructureReady", "BootstrapReady")
                      if (c := _find_condition((machine.get("status") or {}).get("conditions"), t))
                      and c.get("status") == "False" and c.get("message")), None)
        msg = str(infra["message"]) if infra else ""
        msg = msg if len(msg) <= 200 else "…" + msg[-200:]  # Rancher puts the driver's own words last
        why = f": {infra['type']} False: {msg}" if infra else ""
        return ([f"no VM for it in Harvester (the node driver did not create one){why}"],
                ["2.1 escalation: check Harvester host health and storage availability"], [])
    if not vm.running:
        cause, step, actions = _vm_state_cause(vm)
        return [cause], [step], actions
    found = _boot_problems(vm, cfg)
    if found:
        return [c for _, c, _ in found], [s for _, _, s in found], []
    checked = [f"firmware {vm.firmware}"]
    checked.append("cloud-init user data valid YAML" if vm.user_data is not None else
                   f"user data in Secret {vm.user_data_secret} (not read)" if vm.user_data_secret else "no user data")
    if vm.agent is False:
        return ([f"VM Running on {vm.host} but the guest OS never reported in (no qemu-guest-agent connection); "
                 f"ruled out: {', '.join(checked)}"], [JOIN_CONSOLE_STEP], [])
    return ([f"VM Running on {vm.host} and booted, {', '.join(checked)}: EFI and malformed cloud-init ruled out, "
             "the VM reaching the Rancher API is left (not checkable from the API)"], [JOIN_NETWORK_STEP], [])


@sop("harvester-vms", title="Harvester VMs behind the nodes: run state, control-plane VMs, hosts",
     sections=("2.2", "2.4"), severity=Severity.P1,
     causes=("VM Stopped in Harvester", "VM crashed", "VM ErrorUnschedulable", "control-plane VMs down",
             "Harvester host NotReady", "the bot cannot reach the cluster's API",
             "Rancher shows the cluster unavailable (tunnel)"))
async def harvester_vms(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """The VM behind every node runs in Harvester: a stopped or crashed VM is the cause of its
    node's NotReady (2.2), the control-plane VMs are the first check when the API server is
    unreachable (2.4), and several VMs or a host down point at Harvester itself."""
    mgmt = _mgmt(ctx)
    if mgmt is None:
        return _not_configured()
    cfg = check_settings(ctx, "harvester", HarvesterChecks)
    machines, vms, hosts, rancher, (nodes, guest_error) = await asyncio.gather(
        mgmt.list(CAPI_API, "machines", cfg.machine_namespace), _vms(mgmt, cfg), mgmt.list("v1", "nodes"),
        _rancher_clusters(mgmt, cfg), _guest_nodes(ctx))
    findings: list[Finding] = []
    # Which VMs back the cluster: its nodes by name; without the cluster's API, Rancher's machines.
    if nodes is not None:
        backing = {name: CONTROL_PLANE in (n["metadata"].get("labels") or {}) for name, n in nodes.items()}
    else:
        backing = {}
        for m in machines:
            vm = _vm_for_machine(m, vms)
            labels = m["metadata"].get("labels") or {}
            backing[vm.name if vm else m["metadata"]["name"]] = any(
                labels.get(k) == "true" for k in ("rke.cattle.io/control-plane-role", "cluster.x-k8s.io/control-plane"))
        findings.append(Finding(status=Status.crit, target="kubernetes API",
                                summary=f"the bot cannot reach the cluster's API ({guest_error}); the VMs below "
                                        "come from Rancher's machines in Harvester",
                                next_step=CP_VMS_STEP))
    # A VM is named like its node; else Rancher's machine links them (nodeRef → infrastructureRef).
    by_node = {(m.get("status") or {}).get("nodeRef", {}).get("name"): _vm_for_machine(m, vms) for m in machines}
    down: list[str] = []
    cp_total = cp_down = 0
    for name, is_cp in sorted(backing.items()):
        vm = vms.get(name) or by_node.get(name)
        cp_total += is_cp
        node = (nodes or {}).get(name)
        ready = (condition(node, "Ready") or {}).get("status") if node else None
        if vm is None:
            findings.append(Finding(status=Status.warn, target=f"vm/{name}",
                                    summary=f"no VM named {name} in Harvester"
                                            f"{' namespace ' + cfg.vm_namespace if cfg.vm_namespace else ''}",
                                    next_step="set checks.harvester.vm_namespace to where the nodes' VMs are"))
            continue
        if vm.running:
            if node is not None and ready != "True":
                findings.append(Finding(status=Status.ok, target=f"vm/{name}",
                                        summary=f"Running on {vm.host}: the VM is ruled out, node {name} is NotReady "
                                                "inside the guest (kubelet, pressure or network: node-health)"))
            continue
        down.append(name)
        cp_down += is_cp
        cause, step, actions = _vm_state_cause(vm)
        behind = f"node {name} is NotReady because its VM is not running: " if ready not in (None, "True") else ""
        findings.append(Finding(status=Status.crit, target=f"vm/{vm.namespace}/{vm.name}",
                                summary=f"{behind}{cause}"[:300], next_step=step, actions=actions))
    total = len(backing)
    findings.insert(0 if nodes is not None else 1, Finding(
        status=Status.crit if down else Status.ok, target="vms",
        summary=f"{total - len(down)}/{total} VMs behind the cluster's nodes Running in Harvester"))
    if cp_total:
        quorum = cp_total // 2 + 1
        if cp_down == cp_total:
            findings.append(Finding(status=Status.crit, target="control-plane VMs",
                                    summary=f"all {cp_total} control-plane VMs are down in Harvester: the API "
                                            "server is unreachable because no control-plane node runs",
                                    next_step=CP_VMS_STEP))
        elif cp_total - cp_down < quorum:
            findings.append(Finding(status=Status.crit, target="control-plane VMs",
                                    summary=f"{cp_down} of {cp_total} control-plane VMs down: etcd has lost quorum",
                                    next_step=CP_QUORUM_STEP))
        elif cp_down:
            findings.append(Finding(status=Status.warn, target="control-plane VMs",
                                    summary=f"{cp_down} of {cp_total} control-plane VMs down (quorum holds)",
                                    next_step=CP_VMS_STEP))
        else:
            findings.append(Finding(status=Status.ok, target="control-plane VMs",
                                    summary=f"{cp_total}/{cp_total} control-plane VMs Running"))
    findings += _rancher_view(rancher, machines)
    bad_hosts = [h["metadata"]["name"] for h in hosts if (condition(h, "Ready") or {}).get("status") != "True"]
    if bad_hosts:
        findings.append(Finding(status=Status.crit, target="harvester hosts",
                                summary=f"Harvester host(s) NotReady: {_names(bad_hosts)}", next_step=HARVESTER_STEP))
    if len(down) > 1:
        findings.append(Finding(status=Status.warn, target="harvester",
                                summary=f"{len(down)} VMs down at once ({_names(down)}): a Harvester-level issue "
                                        "rather than one node", next_step=HARVESTER_STEP))
    return findings


async def _rancher_clusters(mgmt: _KubeClient, cfg: HarvesterChecks) -> list[dict] | None:
    """Rancher's provisioning Clusters (None when Rancher's API group is not served there)."""
    try:
        return await mgmt.list(RANCHER_API, "clusters", cfg.machine_namespace)
    except _SourceError as exc:
        if exc.status in (403, 404):
            return None
        raise


def _rancher_view(clusters: list[dict] | None, machines: list[dict]) -> list[Finding]:
    """Whether Rancher sees the cluster its machines belong to as Ready (2.4 'Rancher UI shows
    the cluster as Unavailable')."""
    ours = {(m["metadata"].get("labels") or {}).get("cluster.x-k8s.io/cluster-name") for m in machines}
    out = []
    for c in clusters or []:
        name = c["metadata"]["name"]
        if name not in ours:
            continue
        ready = condition(c, "Ready") or {}
        if ready.get("status") == "True" or (c.get("status") or {}).get("ready") is True and not ready:
            out.append(Finding(status=Status.ok, target=f"rancher cluster/{name}", summary="Ready in Rancher"))
        else:
            why = ready.get("message") or ready.get("reason") or "not Ready"
            out.append(Finding(status=Status.crit, target=f"rancher cluster/{name}",
                               summary=f"Rancher shows the cluster unavailable: {why}"[:240], next_step=RANCHER_STEP))
    return out


@sop("vm-boot-config", title="Harvester VM boot settings: EFI firmware and cloud-init user data",
     sections=("2.7", "2.8"), severity=Severity.P2,
     causes=("EFI boot issue (firmware bootloader not efi)", "cloud-init failure (user data not valid YAML)",
             "cloud-init user data without a #cloud-config header"))
async def vm_boot_config(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Each node VM's firmware bootloader against what the golden image needs (2.7), and its
    cloud-init user data parsed as YAML with the failing line and column (2.8)."""
    mgmt = _mgmt(ctx)
    if mgmt is None:
        return _not_configured()
    cfg = check_settings(ctx, "harvester", HarvesterChecks)
    vms = await _vms(mgmt, cfg)
    if any(vm.node_driver for vm in vms.values()):  # other VMs in Harvester are not the cluster's nodes
        vms = {name: vm for name, vm in vms.items() if vm.node_driver}
    findings: list[Finding] = []
    checked = 0
    secret_held: list[str] = []
    for name, vm in sorted(vms.items()):
        checked += 1
        for status, cause, step in _boot_problems(vm, cfg):
            findings.append(Finding(status=status, target=f"vm/{vm.namespace}/{name}", summary=cause, next_step=step))
        if vm.user_data is None and vm.user_data_secret:
            secret_held.append(f"{name} (Secret {vm.user_data_secret})")
    if secret_held:
        findings.append(Finding(status=Status.unknown, target="cloud-init in Secrets",
                                summary=f"user data held in Secrets, not read (the bot reads no Secret data): "
                                        f"{_names(secret_held)}",
                                next_step="2.8 step 2 by hand: validate it with python3 -c 'import yaml,sys; "
                                          "yaml.safe_load(sys.stdin.read())'"))
    bad = {f.target for f in findings if f.status is not Status.ok}
    findings.insert(0, Finding(status=Status.worst([f.status for f in findings]) if findings else Status.ok,
                               target="vms", summary=f"{checked - len(bad)}/{checked} VMs boot with firmware "
                                                     f"{cfg.firmware} and valid cloud-init user data"))
    return findings


@sop("longhorn-volumes", title="Longhorn volumes in Harvester: healthy, degraded, faulted", section="8.4",
     severity=Severity.P3, causes=("a Harvester node went offline (replicas lost)", "volume faulted"))
async def longhorn_volumes(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Longhorn's robustness of every volume in Harvester, and the Harvester node that went
    offline when some are degraded (runbook 8.4)."""
    mgmt = _mgmt(ctx)
    if mgmt is None:
        return _not_configured()
    cfg = check_settings(ctx, "harvester", HarvesterChecks)
    volumes, hosts = await asyncio.gather(mgmt.list(LONGHORN_API, "volumes", cfg.longhorn_namespace),
                                          mgmt.list("v1", "nodes"))
    offline = [h["metadata"]["name"] for h in hosts if (condition(h, "Ready") or {}).get("status") != "True"]
    by: dict[str, list[str]] = {}
    for v in volumes:
        st = v.get("status") or {}
        robustness = st.get("robustness") or "unknown"
        if robustness == "unknown" and st.get("state") == "detached":
            robustness = "detached"  # Longhorn reports no robustness for a detached volume
        pvc = (st.get("kubernetesStatus") or {}).get("pvcName")
        by.setdefault(robustness, []).append(f"{v['metadata']['name']}" + (f" ({pvc})" if pvc else ""))
    findings: list[Finding] = []
    cause = (f": Harvester node(s) offline: {_names(offline)} — their replicas are gone until they are back"
             if offline else ": no Harvester node is NotReady (check the replicas' disks in the Longhorn UI)")
    if by.get("faulted"):
        findings.append(Finding(status=Status.crit, target="faulted volumes",
                                summary=f"{len(by['faulted'])} faulted (no healthy replica, data unavailable): "
                                        f"{_names(by['faulted'])}{cause}"[:400],
                                details="\n".join(by["faulted"][:50]), next_step=LONGHORN_STEP))
    if by.get("unknown"):
        findings.append(Finding(status=Status.warn, target="volumes without robustness",
                                summary=f"{len(by['unknown'])} attached volume(s) report robustness unknown: "
                                        f"{_names(by['unknown'])}", next_step=LONGHORN_STEP))
    if by.get("degraded"):
        findings.append(Finding(status=Status.warn, target="degraded volumes",
                                summary=f"{len(by['degraded'])} degraded (fewer replicas than wanted){cause}"[:400],
                                details="\n".join(by["degraded"][:50]), next_step=LONGHORN_STEP))
    healthy = len(by.get("healthy", [])) + len(by.get("detached", []))
    findings.insert(0, Finding(status=Status.worst([f.status for f in findings]) if findings else Status.ok,
                               target="volumes", summary=f"{healthy}/{len(volumes)} Longhorn volumes healthy"
                                                         + (f" ({len(by['detached'])} detached)" if by.get("detached") else "")))
    return findings
