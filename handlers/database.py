"""Runbook chapter 6: databases (CloudNativePG clusters in the database namespace)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Finding, HandlerContext, NoParams, Severity, Status, check_settings, condition,
                     sop)

CNPG = "postgresql.cnpg.io/v1"
FAILOVER_STEP = ("6.1: kubectl get cluster -n {ns} {name} and the cnpg-system operator logs; a failover "
                 "finishes in 1-2 minutes — if it does not, check the instance pods and their PVCs")
INSTANCES_STEP = "6.1/6.2: kubectl get pods -n {ns} -l cnpg.io/cluster={name}: which instance is not ready?"


class CNPGChecks(BaseModel):
    """``checks.cnpg-health`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str | None = Field("database", description="null: every namespace")
    expected_instances: int | None = Field(3, ge=1, description="the runbook's 3; null: spec.instances")


@sop("cnpg-health", title="CNPG clusters Ready with all instances", section="6.1",
     severity=Severity.P2, alerts=("CNPGClusterNotHealthy", "PostgreSQLDown"))
async def cnpg_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Every CloudNativePG Cluster Ready=True with its expected instances ready (runbook 11.1, 6.1)."""
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
        phase = st.get("phaseReason") or st.get("phase") or ""
        primary = st.get("currentPrimary", "?")
        if st.get("targetPrimary") and st.get("targetPrimary") != primary:
            primary += f" → {st['targetPrimary']}"
        step = FAILOVER_STEP if "fail" in phase.lower() or "→" in primary else INSTANCES_STEP
        findings.append(Finding(
            status=Status.crit if ready_n == 0 else Status.warn, target=f"cluster/{ns}/{name}",
            summary=f"{', '.join(problems)}; {phase or 'no phase'}; primary {primary}",
            details="\n".join(f"{k}: {', '.join(v)}" for k, v in (st.get("instancesStatus") or {}).items()),
            next_step=step.format(ns=ns, name=name)))
    where = f" in {cfg.namespace}" if cfg.namespace else ""
    findings.insert(0, Finding(status=Status.ok if healthy == len(clusters) else Status.warn,
                               target="cnpg clusters",
                               summary=f"{healthy}/{len(clusters)} CNPG clusters Ready{where}"
                                       + (" (none found)" if not clusters else ""),
                               next_step="" if healthy == len(clusters) else "6.1: see the clusters below"))
    return findings
