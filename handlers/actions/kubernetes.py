"""Kubernetes remediations from the runbook: rollout restart (3.1, 3.4, 7.x), scale (3.6),
delete pods (3.1, 7.4), cordon/uncordon and drain (11.3), label unlabeled nodes (2.6), re-issue a
certificate by deleting its TLS Secret (4.1, 11.7).

Every plan is read-only: GETs plus the same write with ``dryRun=All``, whose answer is the
preview. Generic verbs (restart, scale, cordon) live here rather than in the engine because what
makes them safe is runbook knowledge (which pods to skip, the Vault/CNPG pre-checks of 11.3).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from bot.sdk import (Action, ActionEnv, ActionParams, K8sName, K8sNamespace, Outcome, Plan, Risk,
                     SourceError, condition, fingerprint, remediation_action, resource_path)
from handlers.actions.common import (is_mirror, kube, labels_match, meta, now_iso, owner_kinds,
                                     table)

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
WORKLOAD_PLURAL = {"deployment": "deployments", "daemonset": "daemonsets", "statefulset": "statefulsets"}
# A label selector of plain `key=value` / `key!=value` / `key` terms: nothing else reaches the API.
Selector = Annotated[str, Field(pattern=r"^[A-Za-z0-9./_-]+((=|==|!=)[A-Za-z0-9._-]*)?"
                                        r"(,[A-Za-z0-9./_-]+((=|==|!=)[A-Za-z0-9._-]*)?)*$",
                                max_length=200, description="label selector, e.g. k8s-app=cilium")]
POOL_PATTERNS = (("-general-", "general"), ("-compute-", "compute"), ("-database-", "database"))


def _ready(obj: dict[str, Any]) -> str:
    st = obj.get("status") or {}
    if obj.get("kind") == "DaemonSet":
        return f"{st.get('numberReady', 0)}/{st.get('desiredNumberScheduled', 0)} ready"
    return f"{st.get('readyReplicas', 0)}/{(obj.get('spec') or {}).get('replicas', 1)} ready"


# -- rollout restart ----------------------------------------------------------------------------
class RestartParams(ActionParams):
    kind: Literal["deployment", "daemonset", "statefulset"] = Field(description="workload kind")
    namespace: K8sNamespace = Field(description="namespace")
    name: K8sName = Field(description="workload name")


@remediation_action
class RolloutRestart(Action[RestartParams]):
    name = "restart"
    title = "Rollout restart a Deployment, DaemonSet or StatefulSet"
    section = "3.1"
    step = "Resolution 2: restart the Cilium DaemonSet"
    also = {"3.4": "Resolution 4: restart Traefik when the routes are right but stale",
            "3.6": "Resolution 1: restart CoreDNS"}
    risk = Risk.low
    params = RestartParams
    changes = "patches the pod template's restartedAt annotation (pods are replaced one by one)"

    def _patch(self, stamp: str) -> dict[str, Any]:
        return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}

    async def plan(self, env: ActionEnv, p: RestartParams) -> Plan:
        k = kube(env)
        plural = WORKLOAD_PLURAL[p.kind]
        current = await k.get("apps/v1", plural, p.name, p.namespace)
        before = ((current["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
        gen = meta(current).get("generation")
        dry = await k.patch("apps/v1", plural, p.name, self._patch(now_iso()), p.namespace,
                            patch_type="strategic", dry_run=True)
        after = dry["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT]
        return Plan(
            operations=[f"PATCH apps/v1 {plural} {p.namespace}/{p.name}: "
                        f"spec.template.metadata.annotations[{RESTARTED_AT}]"],
            preview=(f"The API server accepted the patch: generation {gen} → "
                     f"{meta(dry).get('generation')}, {RESTARTED_AT} {before or '(unset)'} → {after}. "
                     f"Now {_ready(current)}."),
            dry_run=True,
            state=fingerprint([gen, before]),
            state_text=f"generation {gen}, last restart {before or 'never'}",
            runbook=[f"kubectl -n {p.namespace} rollout restart {p.kind} {p.name}",
                     f"kubectl -n {p.namespace} rollout status {p.kind} {p.name}"])

    async def run(self, env: ActionEnv, p: RestartParams) -> Outcome:
        k = kube(env)
        plural = WORKLOAD_PLURAL[p.kind]
        stamp = now_iso()
        await k.patch("apps/v1", plural, p.name, self._patch(stamp), p.namespace, patch_type="strategic")
        after = await k.get("apps/v1", plural, p.name, p.namespace)
        return Outcome(ok=True, summary=f"{p.kind} {p.namespace}/{p.name} restarted at {stamp} "
                                        f"(generation {meta(after).get('generation')}, {_ready(after)})")


# -- scale --------------------------------------------------------------------------------------
class ScaleParams(ActionParams):
    namespace: K8sNamespace = Field(description="namespace")
    name: K8sName = Field(description="deployment name")
    replicas: int = Field(ge=0, le=50, description="0-50")


@remediation_action
class ScaleDeployment(Action[ScaleParams]):
    name = "scale"
    title = "Scale a Deployment"
    section = "3.6"
    step = "Resolution 2: scale CoreDNS up under load"
    risk = Risk.low
    params = ScaleParams
    changes = "patches deployments/scale spec.replicas"

    def risk_for(self, params: ScaleParams) -> Risk:
        return Risk.high if params.replicas == 0 else Risk.low  # scaling to zero is an outage

    async def _scale(self, env: ActionEnv, p: ScaleParams, dry_run: bool) -> dict[str, Any]:
        return await kube(env).request(
            "PATCH", resource_path("apps/v1", "deployments", p.namespace, p.name, "scale"),
            body={"spec": {"replicas": p.replicas}}, content_type="application/merge-patch+json",
            query={"dryRun": "All" if dry_run else None})

    async def plan(self, env: ActionEnv, p: ScaleParams) -> Plan:
        current = await kube(env).get("apps/v1", "deployments", p.name, p.namespace)
        now = int((current.get("spec") or {}).get("replicas", 1))
        runbook = [f"kubectl -n {p.namespace} scale deployment {p.name} --replicas={p.replicas}"]
        if now == p.replicas:
            return Plan(nothing_to_do=f"{p.namespace}/{p.name} already has {now} replicas", runbook=runbook)
        dry = await self._scale(env, p, dry_run=True)
        warnings = ["scaling to 0 stops the service"] if p.replicas == 0 else []
        return Plan(
            operations=[f"PATCH apps/v1 deployments/scale {p.namespace}/{p.name}: spec.replicas "
                        f"{now} → {p.replicas}"],
            preview=(f"The API server accepted the scale: spec.replicas {now} → "
                     f"{(dry.get('spec') or {}).get('replicas')}. Now {_ready(current)}."),
            dry_run=True, state=fingerprint(now), state_text=f"{now} replicas",
            runbook=runbook, warnings=warnings)

    async def run(self, env: ActionEnv, p: ScaleParams) -> Outcome:
        await self._scale(env, p, dry_run=False)
        after = await kube(env).get("apps/v1", "deployments", p.name, p.namespace)
        return Outcome(ok=True, summary=f"deployment {p.namespace}/{p.name} scaled to "
                                        f"{after['spec']['replicas']} ({_ready(after)})")


# -- delete pods --------------------------------------------------------------------------------
class DeletePodsParams(ActionParams):
    namespace: K8sNamespace = Field(description="namespace")
    pods: Annotated[str, Field(pattern=r"^[a-z0-9][-a-z0-9.]*(,[a-z0-9][-a-z0-9.]*)*$",
                               max_length=1000)] | None = Field(None, description="name,name,…")
    selector: Selector | None = None

    @model_validator(mode="after")
    def _one_way(self) -> "DeletePodsParams":
        if (self.pods is None) == (self.selector is None):
            raise ValueError("give either pods=<name,…> or selector=<labels>")
        return self


MAX_PODS = 30


@remediation_action
class DeletePods(Action[DeletePodsParams]):
    name = "delete-pods"
    title = "Delete pods so their controller recreates them"
    section = "3.1"
    step = "Resolution 4 (nuclear option): delete the Cilium pods"
    risk = Risk.low
    risk_rule = "high when the selector takes every Cilium agent (k8s-app=cilium: 3.1's nuclear option), else low"
    params = DeletePodsParams
    changes = "deletes pods"

    def risk_for(self, params: DeletePodsParams) -> Risk:
        # Every node loses pod networking until its new agent is Ready (delete-cilium-pods is the same).
        terms = {t.strip() for t in (params.selector or "").split(",")}
        return Risk.high if {"k8s-app=cilium", "k8s-app==cilium"} & terms else Risk.low

    async def _targets(self, env: ActionEnv, p: DeletePodsParams) -> list[dict[str, Any]]:
        k = kube(env)
        if p.selector is not None:
            return await k.list("v1", "pods", p.namespace, label_selector=p.selector)
        pods = []
        for name in dict.fromkeys(p.pods.split(",")):  # type: ignore[union-attr]
            try:
                pods.append(await k.get("v1", "pods", name, p.namespace))
            except SourceError as exc:
                if exc.status != 404:
                    raise
        return pods

    async def plan(self, env: ActionEnv, p: DeletePodsParams) -> Plan:
        pods = await self._targets(env, p)
        how = f"-l {p.selector}" if p.selector else " ".join((p.pods or "").split(","))
        runbook = [f"kubectl -n {p.namespace} delete pods {how}"]
        if not pods:
            return Plan(nothing_to_do="no such pods", runbook=runbook)
        if len(pods) > MAX_PODS:
            return Plan(blocked=f"{len(pods)} pods match; at most {MAX_PODS} at once", runbook=runbook)
        rows, warnings = [], []
        for pod in pods:
            name = meta(pod)["name"]
            await kube(env).delete("v1", "pods", name, p.namespace, dry_run=True)
            owners = owner_kinds(pod)
            if not owners or is_mirror(pod):
                warnings.append(f"{name} has no controller: it will not come back")
            rows.append([name, (pod.get("status") or {}).get("phase", "?"),
                         (pod.get("spec") or {}).get("nodeName", "-"), ",".join(owners) or "none",
                         "accepted (dry run)"])
        return Plan(
            operations=[f"DELETE v1 pods {p.namespace}/{meta(pod)['name']}" for pod in pods],
            preview=table(["pod", "phase", "node", "owner", "API server"], rows), dry_run=True,
            state=fingerprint(sorted(meta(pod).get("uid", "") for pod in pods)),
            state_text="pods " + ", ".join(sorted(meta(pod)["name"] for pod in pods)),
            runbook=runbook, warnings=warnings)

    async def run(self, env: ActionEnv, p: DeletePodsParams) -> Outcome:
        pods = await self._targets(env, p)
        done, failed = [], []
        for pod in pods:
            name = meta(pod)["name"]
            try:
                await kube(env).delete("v1", "pods", name, p.namespace)
                done.append(name)
            except SourceError as exc:
                failed.append(f"{name}: {exc.reason}")
        summary = f"deleted {len(done)} pod(s) in {p.namespace}: {', '.join(done) or 'none'}"
        return Outcome(ok=not failed, summary=summary + (f"; failed: {'; '.join(failed)}" if failed else ""))


# -- cordon / uncordon --------------------------------------------------------------------------
class NodeParams(ActionParams):
    node: K8sName = Field(description="node name")


class _SetUnschedulable(Action[NodeParams]):
    params = NodeParams
    section = "11.3"
    risk = Risk.low
    unschedulable: bool = True
    verb = "cordon"

    async def plan(self, env: ActionEnv, p: NodeParams) -> Plan:
        k = kube(env)
        node = await k.get("v1", "nodes", p.node)
        now = bool((node.get("spec") or {}).get("unschedulable"))
        runbook = [f"kubectl {self.verb} {p.node}", "kubectl get nodes | grep SchedulingDisabled"]
        if now == self.unschedulable:
            return Plan(nothing_to_do=f"{p.node} is already {'cordoned' if now else 'schedulable'}",
                        runbook=runbook)
        dry = await k.patch("v1", "nodes", p.node, {"spec": {"unschedulable": self.unschedulable}},
                            dry_run=True)
        return Plan(operations=[f"PATCH v1 nodes {p.node}: spec.unschedulable {now} → {self.unschedulable}"],
                    preview=f"The API server accepted the patch: spec.unschedulable → "
                            f"{bool((dry.get('spec') or {}).get('unschedulable'))}.",
                    dry_run=True, state=fingerprint(now),
                    state_text=f"{p.node} {'cordoned' if now else 'schedulable'}", runbook=runbook)

    async def run(self, env: ActionEnv, p: NodeParams) -> Outcome:
        await kube(env).patch("v1", "nodes", p.node, {"spec": {"unschedulable": self.unschedulable}})
        return Outcome(ok=True, summary=f"{p.node} {'cordoned (SchedulingDisabled)' if self.unschedulable else 'uncordoned'}")


@remediation_action
class Cordon(_SetUnschedulable):
    name = "cordon"
    title = "Cordon a node (stop scheduling new pods)"
    step = "Cordon"
    changes = "patches spec.unschedulable of a node"


@remediation_action
class Uncordon(_SetUnschedulable):
    name = "uncordon"
    title = "Uncordon a node (resume scheduling)"
    step = "Uncordon"
    changes = "patches spec.unschedulable of a node"
    unschedulable = False
    verb = "uncordon"


# -- drain --------------------------------------------------------------------------------------
def _vault_server(pod: dict[str, Any]) -> bool:
    labels = meta(pod).get("labels") or {}
    return labels.get("app.kubernetes.io/name") == "vault" and labels.get("component") == "server"


def _cnpg_primary(pod: dict[str, Any]) -> str | None:
    labels = meta(pod).get("labels") or {}
    if labels.get("cnpg.io/cluster") and (labels.get("cnpg.io/instanceRole") or labels.get("role")) == "primary":
        return labels["cnpg.io/cluster"]
    return None


@remediation_action
class DrainNode(Action[NodeParams]):
    name = "drain"
    title = "Drain a node through the Eviction API"
    section = "11.3"
    step = "Drain"
    risk = Risk.high
    params = NodeParams
    changes = "cordons the node and evicts its pods (PodDisruptionBudgets honoured)"

    async def _pods(self, env: ActionEnv, node: str) -> tuple[list[dict[str, Any]], list[str]]:
        pods = await kube(env).list("v1", "pods", field_selector=f"spec.nodeName={node}")
        evict, skipped = [], []
        for pod in pods:
            ref = f"{meta(pod).get('namespace')}/{meta(pod)['name']}"
            if "DaemonSet" in owner_kinds(pod):
                skipped.append(f"{ref} (DaemonSet)")
            elif is_mirror(pod):
                skipped.append(f"{ref} (mirror pod)")
            elif (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                skipped.append(f"{ref} (finished)")
            else:
                evict.append(pod)
        return evict, skipped

    async def _vault_check(self, env: ActionEnv, pods: list[dict[str, Any]]) -> str | None:
        """11.3: a node holding a Vault replica is drained only if the two others are unsealed."""
        here = [meta(p)["name"] for p in pods if _vault_server(p)]
        if not here:
            return None
        pool = env.ctx.vault
        if pool is None:
            return f"{', '.join(here)} runs here and Vault's seal status cannot be checked (vault.addrs)"
        problems = []
        for addr, name in zip(pool.addrs, pool.names):
            if name in here:
                continue
            try:
                sealed = (await pool.seal_status(addr)).get("sealed", True)
            except SourceError as exc:
                problems.append(f"{name} unreachable ({exc.reason})")
                continue
            if sealed:
                problems.append(f"{name} sealed")
        if problems:
            return (f"{', '.join(here)} runs on this node and the other replicas are not all unsealed "
                    f"({'; '.join(problems)}): draining could leave Vault without a Raft quorum "
                    "(runbook 11.3). Unseal them first.")
        return None

    async def plan(self, env: ActionEnv, p: NodeParams) -> Plan:
        k = kube(env)
        node = await k.get("v1", "nodes", p.node)
        pods, skipped = await self._pods(env, p.node)
        runbook = [f"kubectl drain {p.node} --ignore-daemonsets --delete-emptydir-data --grace-period=300"]
        blocked = await self._vault_check(env, pods)
        if blocked:
            return Plan(blocked=blocked, runbook=runbook)
        warnings = [f"{meta(pod)['name']} is the primary of CNPG cluster {meta(pod).get('namespace')}/{c}: "
                    "CNPG promotes a replica (1–2 min of connection downtime)"
                    for pod in pods if (c := _cnpg_primary(pod))]
        cordoned = bool((node.get("spec") or {}).get("unschedulable"))
        if not cordoned:
            await k.patch("v1", "nodes", p.node, {"spec": {"unschedulable": True}}, dry_run=True)
        rows = []
        for pod in pods:
            ns, name = meta(pod).get("namespace", ""), meta(pod)["name"]
            rows.append([f"{ns}/{name}", await self._evict(env, pod, dry_run=True) or "would be evicted"])
        blocked_n = sum(1 for r in rows if r[1] != "would be evicted")
        preview = (f"Cordon {p.node} ({'already cordoned' if cordoned else 'accepted'}), then evict "
                   f"{len(pods)} pod(s); {blocked_n} blocked now. Skipped: "
                   f"{len(skipped)} ({', '.join(skipped[:8])}{'…' if len(skipped) > 8 else ''}).\n"
                   + table(["pod", "eviction (dry run)"], rows))
        if blocked_n:
            warnings.append(f"{blocked_n} eviction(s) are refused by PodDisruptionBudgets right now")
        ops = ([] if cordoned else [f"PATCH v1 nodes {p.node}: spec.unschedulable → true"])
        ops += [f"POST v1 pods/eviction {meta(pod).get('namespace')}/{meta(pod)['name']}" for pod in pods]
        return Plan(operations=ops, preview=preview, dry_run=True,
                    state=fingerprint(sorted(meta(pod).get("uid", "") for pod in pods)),
                    state_text=f"{len(pods)} pods to evict on {p.node}", runbook=runbook,
                    warnings=warnings)

    async def _evict(self, env: ActionEnv, pod: dict[str, Any], dry_run: bool) -> str | None:
        """None when evicted (or would be), else why not."""
        ns, name = meta(pod).get("namespace", ""), meta(pod)["name"]
        body = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}}
        try:
            await kube(env).create("v1", "pods", body, ns, subresource_of=name, subresource="eviction",
                                   dry_run=dry_run)
            return None
        except SourceError as exc:
            if exc.status == 429:
                return f"blocked by PodDisruptionBudget {await self._pdb_name(env, pod)} (429: {exc.reason})"
            if exc.status == 404:
                return None  # already gone
            return f"refused: {exc.reason}"

    async def _pdb_name(self, env: ActionEnv, pod: dict[str, Any]) -> str:
        ns = meta(pod).get("namespace", "")
        try:
            pdbs = await kube(env).list("policy/v1", "poddisruptionbudgets", ns)
        except SourceError:
            return "?"
        names = [meta(b)["name"] for b in pdbs
                 if labels_match((b.get("spec") or {}).get("selector"), meta(pod).get("labels") or {})]
        return ", ".join(f"{ns}/{n}" for n in names) or "?"

    async def run(self, env: ActionEnv, p: NodeParams) -> Outcome:
        k = kube(env)
        pods, _ = await self._pods(env, p.node)
        blocked = await self._vault_check(env, pods)  # re-checked at the last moment
        if blocked:
            return Outcome(ok=False, summary=f"not drained: {blocked}")
        await k.patch("v1", "nodes", p.node, {"spec": {"unschedulable": True}})
        evicted, refused = [], []
        for pod in pods:
            why = await self._evict(env, pod, dry_run=False)
            ref = f"{meta(pod).get('namespace')}/{meta(pod)['name']}"
            if why is None:
                evicted.append(ref)
            else:
                refused.append(f"{ref}: {why}")
        summary = f"{p.node} cordoned; evicted {len(evicted)} of {len(pods)} pod(s)"
        if refused:
            return Outcome(ok=False, summary=summary + f"; {len(refused)} blocked — the node is not empty",
                           details="\n".join(f"- {r}" for r in refused))
        return Outcome(ok=True, summary=summary)


# -- label unlabeled nodes (2.6) ----------------------------------------------------------------
class LabelParams(ActionParams):
    node: K8sName | None = Field(None, description="one node; default every unlabeled worker")


@remediation_action
class LabelNodes(Action[LabelParams]):
    name = "label-nodes"
    title = "Label unlabeled nodes with workload-type by hostname pattern"
    section = "2.6"
    step = "Resolution: manual fix, label nodes by hostname pattern"
    risk = Risk.low
    params = LabelParams
    changes = "adds the workload-type label to nodes that lack it"

    async def _wanted(self, env: ActionEnv, p: LabelParams) -> list[tuple[str, str]]:
        nodes = await kube(env).list("v1", "nodes")
        out = []
        for n in nodes:
            name = meta(n)["name"]
            if p.node not in (None, name) or "workload-type" in (meta(n).get("labels") or {}):
                continue
            pool = next((v for pat, v in POOL_PATTERNS if pat in name), None)
            if pool:
                out.append((name, pool))
        return sorted(out)

    async def plan(self, env: ActionEnv, p: LabelParams) -> Plan:
        wanted = await self._wanted(env, p)
        runbook = [f"kubectl label node {n} workload-type={v} --overwrite" for n, v in wanted] or \
                  ["kubectl get nodes --show-labels | grep workload-type"]
        if not wanted:
            return Plan(nothing_to_do="every worker node already has a workload-type label "
                                      "(or its name matches no pool pattern)", runbook=runbook)
        rows = []
        for name, pool in wanted:
            dry = await kube(env).patch("v1", "nodes", name,
                                        {"metadata": {"labels": {"workload-type": pool}}}, dry_run=True)
            rows.append([name, pool, (meta(dry).get("labels") or {}).get("workload-type", "?")])
        return Plan(operations=[f"PATCH v1 nodes {n}: metadata.labels[workload-type]={v}" for n, v in wanted],
                    preview=table(["node", "pattern → label", "API server (dry run)"], rows), dry_run=True,
                    state=fingerprint(wanted), state_text="unlabeled: " + ", ".join(n for n, _ in wanted),
                    runbook=runbook)

    async def run(self, env: ActionEnv, p: LabelParams) -> Outcome:
        done = []
        for name, pool in await self._wanted(env, p):
            await kube(env).patch("v1", "nodes", name, {"metadata": {"labels": {"workload-type": pool}}})
            done.append(f"{name}={pool}")
        return Outcome(ok=True, summary=f"labelled {len(done)} node(s): {', '.join(done) or 'none left'}")


# -- certificate re-issue (4.1, 11.7) -------------------------------------------------------------
class ReissueParams(ActionParams):
    namespace: K8sNamespace = Field(description="namespace")
    certificate: K8sName = Field(description="Certificate name")


@remediation_action
class ReissueCertificate(Action[ReissueParams]):
    name = "reissue-certificate"
    title = "Force a certificate re-issue by deleting its TLS Secret"
    section = "11.7"
    step = "Manual Certificate Renewal: delete the TLS secret"
    risk = Risk.low
    params = ReissueParams
    changes = "deletes the Certificate's TLS Secret; cert-manager issues a new one"

    async def _secret_name(self, env: ActionEnv, p: ReissueParams) -> tuple[str, dict[str, Any]]:
        cert = await kube(env).get("cert-manager.io/v1", "certificates", p.certificate, p.namespace)
        return str((cert.get("spec") or {}).get("secretName") or ""), cert

    async def plan(self, env: ActionEnv, p: ReissueParams) -> Plan:
        secret, cert = await self._secret_name(env, p)
        runbook = [f"kubectl delete secret -n {p.namespace} {secret or '<secret-name>'}",
                   f"kubectl get certificaterequest -n {p.namespace} -w",
                   f"kubectl get certificate -n {p.namespace} {p.certificate} -o wide"]
        if not secret:
            return Plan(blocked=f"Certificate {p.namespace}/{p.certificate} names no spec.secretName",
                        runbook=runbook)
        status = cert.get("status") or {}
        ready = condition(cert, "Ready") or {}
        try:
            # The answer is the Secret itself: read only its metadata, never its data (a private key).
            dry = await kube(env).delete("v1", "secrets", secret, p.namespace, dry_run=True)
        except SourceError as exc:
            if exc.status == 404:
                return Plan(nothing_to_do=f"Secret {p.namespace}/{secret} does not exist: cert-manager "
                                          "is already (re)issuing it", runbook=runbook)
            raise
        uid = meta(dry).get("uid", "")
        return Plan(
            operations=[f"DELETE v1 secrets {p.namespace}/{secret}"],
            preview=(f"Certificate {p.namespace}/{p.certificate}: Ready={ready.get('status', '?')} "
                     f"({ready.get('reason', '')}), notAfter {status.get('notAfter', '?')}, revision "
                     f"{status.get('revision', '?')}. The API server accepted deleting Secret "
                     f"{p.namespace}/{secret} (dry run); cert-manager then issues a new certificate."),
            dry_run=True, state=fingerprint([uid, status.get("revision"), status.get("notAfter")]),
            state_text=f"Secret {secret} uid {uid[:8]}…, revision {status.get('revision', '?')}",
            runbook=runbook)

    async def run(self, env: ActionEnv, p: ReissueParams) -> Outcome:
        secret, _ = await self._secret_name(env, p)
        await kube(env).delete("v1", "secrets", secret, p.namespace)
        return Outcome(ok=True, summary=f"deleted Secret {p.namespace}/{secret}; cert-manager issues "
                                        f"{p.certificate} again (watch its CertificateRequest)")
