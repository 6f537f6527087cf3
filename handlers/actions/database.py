"""CNPG remediations from runbook chapter 6 and 10.5: restart the apps after a failover (6.1),
an on-demand Backup (6.3), a PgBouncer Pooler from the runbook's template (6.6) and the
point-in-time recovery Cluster (10.5). Plans are read-only: GETs and ``dryRun=All``."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field

from bot.sdk import (Action, ActionEnv, ActionParams, Gate, K8sName, K8sNamespace, Outcome, Plan, Procedure, Risk,
                     SourceError, Step, StepRun, check_settings, condition, fingerprint, parse_time, procedure,
                     remediation_action)
from handlers.actions.common import kube, meta, now_iso, table
from handlers.database import CNPGChecks, app_deployments

CNPG = "postgresql.cnpg.io/v1"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
IsoTime = Annotated[str, Field(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$",
                               description="UTC, e.g. 2026-02-15T10:00:00Z")]


def _yaml(obj: dict[str, Any]) -> str:
    return "```yaml\n" + yaml.safe_dump(obj, sort_keys=False).rstrip() + "\n```"


async def _cluster(env: ActionEnv, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await kube(env).get(CNPG, "clusters", name, namespace)
    except SourceError as exc:
        if exc.status == 404:
            return None
        raise


async def _exists(env: ActionEnv, plural: str, namespace: str, name: str) -> bool:
    try:
        await kube(env).get(CNPG, plural, name, namespace)
        return True
    except SourceError as exc:
        if exc.status == 404:
            return False
        raise


class ClusterParams(ActionParams):
    namespace: K8sNamespace = Field("database", description="the cluster's namespace")
    cluster: K8sName = Field(description="CNPG cluster name")


# -- 6.1 step 3 -----------------------------------------------------------------------------------
@remediation_action
class RestartClusterApps(Action[ClusterParams]):
    name = "cnpg-restart-apps"
    title = "Restart the Deployments that use a CNPG cluster (fresh connections after a failover)"
    section = "6.1"
    step = "Resolution 3: restart the applications to refresh their connections"
    risk = Risk.low
    params = ClusterParams
    changes = "patches each Deployment's restartedAt annotation (rolling restart)"

    async def _targets(self, env: ActionEnv, p: ClusterParams) -> list[dict[str, Any]]:
        cfg = check_settings(env.ctx, "cnpg-health", CNPGChecks)
        out = []
        for ref in await app_deployments(env.ctx, cfg, p.cluster):
            ns, _, name = ref.partition("/")
            out.append(await kube(env).get("apps/v1", "deployments", name, ns))
        return out

    async def plan(self, env: ActionEnv, p: ClusterParams) -> Plan:
        deps = await self._targets(env, p)
        runbook = [f"kubectl rollout restart deployment -n {meta(d)['namespace']} {meta(d)['name']}" for d in deps]
        if not deps:
            return Plan(nothing_to_do=f"no Deployment uses {p.cluster} (checks.cnpg-health.apps, or env naming "
                                      f"{p.cluster}-rw/-ro/-r or its Secrets)", runbook=runbook)
        rows, state = [], []
        for d in deps:
            m = meta(d)
            before = ((d["spec"]["template"].get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)
            await kube(env).patch("apps/v1", "deployments", m["name"], self._patch(now_iso()), m["namespace"],
                                  patch_type="strategic", dry_run=True)
            st = d.get("status") or {}
            rows.append([f"{m['namespace']}/{m['name']}", f"{st.get('readyReplicas', 0)}/{d['spec'].get('replicas', 1)}",
                         before or "never", "accepted (dry run)"])
            state.append([m["namespace"], m["name"], m.get("generation"), before])
        return Plan(operations=[f"PATCH apps/v1 deployments {r[0]}: spec.template.metadata.annotations"
                                f"[{RESTARTED_AT}]" for r in rows],
                    preview=table(["deployment", "ready", "last restart", "API server"], rows), dry_run=True,
                    state=fingerprint(state), state_text=", ".join(r[0] for r in rows), runbook=runbook)

    def _patch(self, stamp: str) -> dict[str, Any]:
        return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}

    async def run(self, env: ActionEnv, p: ClusterParams) -> Outcome:
        stamp, done = now_iso(), []
        for d in await self._targets(env, p):
            m = meta(d)
            await kube(env).patch("apps/v1", "deployments", m["name"], self._patch(stamp), m["namespace"],
                                  patch_type="strategic")
            done.append(f"{m['namespace']}/{m['name']}")
        return Outcome(ok=True, summary=f"restarted {', '.join(done)} at {stamp} (apps of {p.cluster})")


# -- 6.3 step 4 -----------------------------------------------------------------------------------
@remediation_action
class OnDemandBackup(Action[ClusterParams]):
    name = "cnpg-backup"
    title = "Take an on-demand CNPG Backup"
    section = "6.3"
    step = "Resolution 4: trigger a manual backup"
    risk = Risk.low
    params = ClusterParams
    changes = "creates a postgresql.cnpg.io/v1 Backup"

    def _body(self, p: ClusterParams, stamp: str) -> dict[str, Any]:
        return {"apiVersion": CNPG, "kind": "Backup",
                "metadata": {"name": f"{p.cluster}-manual-{stamp}", "namespace": p.namespace,
                             "labels": {"cnpg.io/cluster": p.cluster, "app.kubernetes.io/managed-by": "sop-bot"}},
                "spec": {"cluster": {"name": p.cluster}}}

    async def plan(self, env: ActionEnv, p: ClusterParams) -> Plan:
        runbook = [f"kubectl apply -f - (Backup {p.cluster}-manual-<date>, spec.cluster.name {p.cluster})"]
        c = await _cluster(env, p.namespace, p.cluster)
        if c is None:
            return Plan(blocked=f"no CNPG cluster {p.namespace}/{p.cluster}", runbook=runbook)
        backups = [b for b in await kube(env).list(CNPG, "backups", p.namespace)
                   if ((b.get("spec") or {}).get("cluster") or {}).get("name") == p.cluster]
        running = [meta(b)["name"] for b in backups
                   if (b.get("status") or {}).get("phase") in (None, "", "pending", "started", "running")]
        if running:
            return Plan(nothing_to_do=f"a Backup of {p.cluster} is already under way: {', '.join(running)}",
                        runbook=runbook)
        body = self._body(p, datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S"))
        await kube(env).create(CNPG, "backups", body, p.namespace, dry_run=True)
        st = c.get("status") or {}
        return Plan(operations=[f"POST {CNPG} backups {p.namespace}/{body['metadata']['name']}"],
                    preview=_yaml(body) + f"\nThe API server accepted it (dry run). Last successful backup: "
                                          f"{st.get('lastSuccessfulBackup') or 'none'}.",
                    dry_run=True, state=fingerprint(sorted(meta(b)["name"] for b in backups)),
                    state_text=f"{len(backups)} Backup(s) of {p.cluster}", runbook=runbook)

    async def run(self, env: ActionEnv, p: ClusterParams) -> Outcome:
        body = self._body(p, datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S"))
        await kube(env).create(CNPG, "backups", body, p.namespace)
        return Outcome(ok=True, summary=f"Backup {p.namespace}/{body['metadata']['name']} created; "
                                        f"`/sop cnpg-backups` shows its phase")


# -- 6.6 step 2 -----------------------------------------------------------------------------------
class PoolerParams(ClusterParams):
    instances: int = Field(3, ge=1, le=10, description="PgBouncer pods")
    type: Literal["rw", "ro"] = Field("rw", description="rw or ro")
    pool_mode: Literal["transaction", "session"] = Field("transaction", description="PgBouncer pool mode")
    max_client_conn: int = Field(1000, ge=10, le=100000, description="max_client_conn")
    default_pool_size: int = Field(25, ge=1, le=1000, description="default_pool_size")


@remediation_action
class CreatePooler(Action[PoolerParams]):
    name = "cnpg-pooler"
    title = "Create a PgBouncer Pooler for a CNPG cluster (runbook template)"
    section = "6.6"
    step = "Resolution 2: enable the CNPG PgBouncer pooler"
    risk = Risk.high  # a new endpoint; apps must be repointed, and pool limits change behaviour
    params = PoolerParams
    changes = "creates a postgresql.cnpg.io/v1 Pooler"

    def _body(self, p: PoolerParams) -> dict[str, Any]:
        return {"apiVersion": CNPG, "kind": "Pooler",
                "metadata": {"name": f"{p.cluster}-pooler", "namespace": p.namespace},
                "spec": {"cluster": {"name": p.cluster}, "instances": p.instances, "type": p.type,
                         "pgbouncer": {"poolMode": p.pool_mode, "parameters": {
                             "max_client_conn": str(p.max_client_conn),
                             "default_pool_size": str(p.default_pool_size)}}}}

    async def plan(self, env: ActionEnv, p: PoolerParams) -> Plan:
        body = self._body(p)
        runbook = ["kubectl apply -f - <<EOF", yaml.safe_dump(body, sort_keys=False).rstrip(), "EOF",
                   f"then point the apps at Service {body['metadata']['name']} instead of {p.cluster}-rw"]
        if await _cluster(env, p.namespace, p.cluster) is None:
            return Plan(blocked=f"no CNPG cluster {p.namespace}/{p.cluster}", runbook=runbook)
        if await _exists(env, "poolers", p.namespace, body["metadata"]["name"]):
            return Plan(nothing_to_do=f"Pooler {p.namespace}/{body['metadata']['name']} exists", runbook=runbook)
        await kube(env).create(CNPG, "poolers", body, p.namespace, dry_run=True)
        return Plan(operations=[f"POST {CNPG} poolers {p.namespace}/{body['metadata']['name']}"],
                    preview=_yaml(body) + "\nThe API server accepted it (dry run).", dry_run=True,
                    state=fingerprint(["no pooler", p.cluster]), state_text=f"no Pooler {body['metadata']['name']}",
                    runbook=runbook,
                    warnings=["the apps keep connecting to -rw until repointed to the Pooler's Service (step 3)"])

    async def run(self, env: ActionEnv, p: PoolerParams) -> Outcome:
        body = self._body(p)
        await kube(env).create(CNPG, "poolers", body, p.namespace)
        return Outcome(ok=True, summary=f"Pooler {p.namespace}/{body['metadata']['name']} created; point the apps "
                                        f"at its Service")


# -- 10.5 point-in-time recovery ------------------------------------------------------------------
class PitrParams(ClusterParams):
    target_time: IsoTime = Field(description="UTC recovery target, e.g. 2026-02-15T10:00:00Z")
    name: K8sName | None = Field(None, description="new cluster, default <cluster>-recovered")


def recovery_window(c: dict[str, Any], now: datetime) -> tuple[datetime | None, datetime | None, str]:
    """[first recoverability point, latest recoverable time] of a cluster and how the end was found:
    with WAL archiving working the end is now; otherwise the last successful base backup."""
    st = c.get("status") or {}
    first = parse_time(st.get("firstRecoverabilityPoint"))
    arch = condition(c, "ContinuousArchiving")
    if arch is not None and arch.get("status") == "True":
        return first, now, "now (WAL archiving works)"
    return first, parse_time(st.get("lastSuccessfulBackup")), "the last base backup (WAL archiving is not working)"


def recovery_cluster(c: dict[str, Any], name: str, target_time: str) -> dict[str, Any]:
    """The runbook's 10.5 recovery Cluster, completed from the source: the externalClusters entry
    ``bootstrap.recovery.source`` must name (its object store, credentials by reference only),
    storage and image as the source's; the runbook's ``nodeSelector`` is ``affinity.nodeSelector``."""
    spec, m = c.get("spec") or {}, c["metadata"]
    store = dict((spec.get("backup") or {}).get("barmanObjectStore") or {})
    store.setdefault("serverName", m["name"])
    storage = spec.get("storage") or {}
    out_spec: dict[str, Any] = {
        "instances": int(spec.get("instances") or 3),
        "bootstrap": {"recovery": {"source": m["name"], "recoveryTarget": {"targetTime": target_time}}},
        "externalClusters": [{"name": m["name"], "barmanObjectStore": store}],
        "storage": {"size": storage.get("size", "20Gi"), "storageClass": storage.get("storageClass", "harvester")},
        "affinity": {"nodeSelector": ((spec.get("affinity") or {}).get("nodeSelector")
                                      or {"workload-type": "database"})},
    }
    if spec.get("imageName"):
        out_spec["imageName"] = spec["imageName"]
    return {"apiVersion": CNPG, "kind": "Cluster",
            "metadata": {"name": name, "namespace": m.get("namespace", ""),
                         "labels": {"app.kubernetes.io/managed-by": "sop-bot"},
                         "annotations": {"sop-bot/recovered-from": m["name"], "sop-bot/target-time": target_time}},
            "spec": out_spec}


@remediation_action
class PointInTimeRecovery(Action[PitrParams]):
    name = "cnpg-pitr"
    title = "Create a CNPG recovery Cluster at a point in time (PITR)"
    section = "10.5"
    step = "Procedure 1: create a recovery cluster targeting a point in time"
    risk = Risk.high
    params = PitrParams
    changes = "creates a postgresql.cnpg.io/v1 Cluster bootstrapped from the source's backups"

    async def plan(self, env: ActionEnv, p: PitrParams) -> Plan:
        new = p.name or f"{p.cluster}-recovered"
        runbook = ["kubectl apply -f - (10.5 step 1, the manifest in the preview)",
                   f"kubectl -n {p.namespace} logs -l cnpg.io/cluster={new} -f | grep recovery",
                   f"kubectl get cluster -n {p.namespace} {new} (until 'Cluster in healthy state')"]
        c = await _cluster(env, p.namespace, p.cluster)
        if c is None:
            return Plan(blocked=f"no CNPG cluster {p.namespace}/{p.cluster}", runbook=runbook)
        now = datetime.now(timezone.utc)
        first, last, how = recovery_window(c, now)
        target = parse_time(p.target_time)
        assert target is not None  # the pattern guarantees it parses
        if first is None or last is None:
            return Plan(blocked=f"{p.cluster} has no recoverability window (no successful base backup yet)",
                        runbook=runbook)
        if not first <= target <= last:
            return Plan(blocked=f"{p.target_time} is outside {p.cluster}'s recoverability window "
                                f"{first:%Y-%m-%dT%H:%M:%SZ} … {last:%Y-%m-%dT%H:%M:%SZ} (end: {how})",
                        runbook=runbook)
        if await _cluster(env, p.namespace, new) is not None:
            return Plan(blocked=f"cluster {p.namespace}/{new} already exists: choose name=", runbook=runbook)
        body = recovery_cluster(c, new, p.target_time)
        await kube(env).create(CNPG, "clusters", body, p.namespace, dry_run=True)
        st = c.get("status") or {}
        return Plan(
            operations=[f"POST {CNPG} clusters {p.namespace}/{new}"],
            preview=_yaml(body) + f"\nThe API server accepted it (dry run). Window {first:%Y-%m-%dT%H:%M:%SZ} … "
                                  f"{last:%Y-%m-%dT%H:%M:%SZ} (end: {how}).",
            dry_run=True, state=fingerprint([st.get("firstRecoverabilityPoint"), st.get("lastSuccessfulBackup"), new]),
            state_text=f"recoverable from {st.get('firstRecoverabilityPoint')}, no cluster {new}", runbook=runbook,
            warnings=["the source keeps running: switching the apps (step 4) and deleting the old cluster "
                      "(step 5) stay manual, after verifying the data"])

    async def run(self, env: ActionEnv, p: PitrParams) -> Outcome:
        new = p.name or f"{p.cluster}-recovered"
        c = await _cluster(env, p.namespace, p.cluster)
        if c is None:
            return Outcome(ok=False, summary=f"no CNPG cluster {p.namespace}/{p.cluster}")
        await kube(env).create(CNPG, "clusters", recovery_cluster(c, new, p.target_time), p.namespace)
        return Outcome(ok=True, summary=f"recovery Cluster {p.namespace}/{new} created for {p.target_time}; "
                                        f"`/sop cnpg-health` follows it until Ready (2-10 minutes)")


# -- 10.5 point-in-time recovery as a procedure: create, follow until Ready, then the manual steps ---
PITR_NEXT = ("10.5 steps 3-4 (by hand): verify the data in {ns}/{new} "
             "(kubectl exec -n {ns} {new}-1 -- psql -U postgres -l), then switch the apps to Service "
             "{new}-rw; delete {cluster} only once verified (step 5)")


def _recovery_name(p: PitrParams) -> str:
    return p.name or f"{p.cluster}-recovered"


async def _pitr_refuse(run: StepRun) -> str | None:
    """Read-only, before proposing: a target outside the window (or no source, or the name taken)."""
    plan = await PointInTimeRecovery().plan(run.env, run.params)
    return plan.blocked


def _ours(c: dict[str, Any], p: PitrParams) -> bool:
    """The Cluster is the recovery this procedure creates (the annotations recovery_cluster sets)."""
    ann = meta(c).get("annotations") or {}
    return ann.get("sop-bot/recovered-from") == p.cluster and ann.get("sop-bot/target-time") == p.target_time


_create_step = Step.from_action(
    PointInTimeRecovery(), lambda run: run.params.model_dump(), key="create",
    title="Create the recovery Cluster for the target time", timeout_s=120,
    # The procedure's approval (high risk, this step's dry run in the proposal) is the approval
    # of this one write: asking again right after it would only repeat the same preview.
    high_risk=False,
    next_step="10.5 step 1: kubectl apply -f - with the manifest of the proposal")


async def _created(run: StepRun) -> Gate:
    """After a restart too: the Cluster with this recovery's annotations exists → done (never a
    second Cluster); a Cluster of that name that is not this recovery → blocked."""
    p, new = run.params, _recovery_name(run.params)
    c = await _cluster(run.env, p.namespace, new)
    if c is not None:
        if _ours(c, p):
            return Gate.done(f"recovery Cluster {p.namespace}/{new} exists (target {p.target_time})")
        return Gate.blocked(f"cluster {p.namespace}/{new} exists and is not this recovery: choose name=")
    return await _create_step.precondition(run)


def _ready_text(c: dict[str, Any]) -> tuple[bool, str]:
    st, spec = c.get("status") or {}, c.get("spec") or {}
    want, ready_n = int(spec.get("instances") or 1), int(st.get("readyInstances") or 0)
    cond = condition(c, "Ready") or {}
    ok = cond.get("status") == "True" and ready_n >= want
    phase = st.get("phaseReason") or st.get("phase") or "no status yet"
    return ok, f"{phase}, {ready_n}/{want} instances ready, Ready={cond.get('status', 'missing')}"


async def _recovered(run: StepRun) -> Outcome:
    p, new = run.params, _recovery_name(run.params)
    c = await _cluster(run.env, p.namespace, new)
    if c is None:
        return Outcome(ok=False, summary=f"recovery Cluster {p.namespace}/{new} is missing")
    ok, how = _ready_text(c)
    if not ok:
        return Outcome(ok=False, summary=f"{p.namespace}/{new} recovering: {how}")
    nxt = PITR_NEXT.format(ns=p.namespace, new=new, cluster=p.cluster)
    return Outcome(ok=True, summary=f"{p.namespace}/{new} is Ready ({how}), recovered to {p.target_time}. "
                                    f"Next: {nxt}")


async def _recovered_gate(run: StepRun) -> Gate:
    """Ready already → done; recovering → wait (again, after a restart); missing → blocked."""
    p, new = run.params, _recovery_name(run.params)
    c = await _cluster(run.env, p.namespace, new)
    if c is None:
        return Gate.blocked(f"recovery Cluster {p.namespace}/{new} is missing (step 1 did not create it)")
    ok, how = _ready_text(c)
    if ok:
        nxt = PITR_NEXT.format(ns=p.namespace, new=new, cluster=p.cluster)
        return Gate.done(f"{p.namespace}/{new} is Ready ({how}). Next: {nxt}")
    return Gate.ready(how)


@procedure
class PitrRecovery(Procedure[PitrParams]):
    name = "cnpg-pitr-recovery"
    title = "CNPG point-in-time recovery: create the recovery Cluster, follow it until Ready"
    section = "10.5"
    params = PitrParams  # risk high (the Procedure default), as the runbook's restore
    refuse = staticmethod(_pitr_refuse)
    steps = (
        replace(_create_step, precondition=_created),
        Step("ready", "Follow the recovery until the Cluster is Ready", kind="check", run=_recovered,
             precondition=_recovered_gate, poll_s=5, timeout_s=900,
             next_step="10.5 step 2: kubectl -n <ns> logs -l cnpg.io/cluster=<new> | grep recovery; "
                       "a target before the first backup or missing WAL stops the recovery",
             runbook=("kubectl -n <ns> logs -l cnpg.io/cluster=<new> -f | grep recovery",
                      "kubectl exec -n <ns> <new>-1 -- psql -U postgres -l   # 10.5 step 3",
                      "# 10.5 step 4: point the apps at Service <new>-rw")),
    )
