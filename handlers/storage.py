"""Runbook chapter 8: storage (PVCs on Harvester's CSI driver)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from bot.sdk import Finding, HandlerContext, NoParams, Severity, Status, sop

PENDING_STEP = ("8.1: kubectl describe pvc -n {ns} {name} (Events: ProvisioningFailed?) and the "
                "Harvester storage capacity")
MAX_DESCRIBED = 5  # claims whose events are read per run (only Pending ones)
LOST_STEP = "8.1/8.4: the claim's volume is gone (Lost): check the Longhorn volume in Harvester"


@sop("pvc-health", title="PVCs Bound (none Pending or Lost)", section="8.1", severity=Severity.P2,
     alerts=("KubePersistentVolumeClaimPending",))
async def pvc_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """No PersistentVolumeClaim Pending or Lost (runbook 11.1, 8.1)."""
    kube = ctx.require_kube()
    claims = await kube.list("v1", "persistentvolumeclaims")
    phases = Counter(((c.get("status") or {}).get("phase") or "Pending") for c in claims)
    findings = []
    for c in claims:
        phase = (c.get("status") or {}).get("phase") or "Pending"
        if phase in ("Pending", "Lost"):
            ns, name = c["metadata"].get("namespace", ""), c["metadata"]["name"]
            size = ((c.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage", "?")
            sc = (c.get("spec") or {}).get("storageClassName") or "default"
            findings.append(Finding(
                status=Status.crit if phase == "Lost" else Status.warn, target=f"pvc/{ns}/{name}",
                summary=f"{phase} ({size}, storage class {sc})",
                next_step=(LOST_STEP if phase == "Lost" else PENDING_STEP).format(ns=ns, name=name)))
    # 8.1's "describe pvc": the provisioner's warning event says why the claim does not bind.
    pending = [f for f in findings if f.summary.startswith("Pending")][:MAX_DESCRIBED]
    for f, (said, failed) in zip(pending, await asyncio.gather(*(
            ctx.attempt(ctx.events(f.target.split("/")[1], kind="PersistentVolumeClaim", name=f.target.split("/")[2],
                                   window=timedelta(hours=24), warnings_only=True), "events") for f in pending))):
        if said:
            f.summary += f": {said[0].reason}: {said[0].message}"
            f.details = "\n".join(f"{e.reason} (x{e.count}, {e.component}): {e.message}" for e in said)
        elif failed is not None:
            f.details = f"events not readable: {failed.summary}"
    bound = phases.get("Bound", 0)
    findings.insert(0, Finding(status=Status.ok, target="pvcs",
                               summary=f"{bound}/{len(claims)} PVCs Bound"
                               + "".join(f", {n} {p}" for p, n in sorted(phases.items()) if p != "Bound")))
    return findings
