"""Cilium remediations from runbook chapter 3: delete every Cilium agent pod (3.1's nuclear
option), create the L2 announcement policy and the LB IP pool (3.2), and expand the pool by one
block (3.3). The objects come from the bot's config (``checks.l2-announcements.policy/pool``,
``checks.traefik-lb.expand_block``), never invented: without them the action is blocked.
Every plan is a server-side dry run of the same write."""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml
from pydantic import Field

from bot.sdk import (Action, ActionEnv, ActionParams, Outcome, Plan, Risk, SourceError, check_settings,
                     fingerprint, remediation_action)
from handlers.actions.common import kube, meta, table
from handlers.networking import CILIUM_ALPHA, L2Checks, TraefikChecks, pool_size

CILIUM_NS = "kube-system"
MAX_AGENTS = 200


class NoActionParams(ActionParams):
    pass


def _yaml(obj: dict[str, Any]) -> str:
    return "```yaml\n" + yaml.safe_dump(obj, sort_keys=False).rstrip() + "\n```"


# -- 3.1 step 4 -------------------------------------------------------------------------------------
@remediation_action
class DeleteCiliumPods(Action[NoActionParams]):
    name = "delete-cilium-pods"
    title = "Delete every Cilium agent pod (the DaemonSet recreates them)"
    section = "3.1"
    step = "Resolution 4 (nuclear option): kubectl -n kube-system delete pods -l k8s-app=cilium"
    risk = Risk.high  # every node loses pod networking until its agent is back
    params = NoActionParams
    changes = "deletes all pods labelled k8s-app=cilium in kube-system"

    async def _pods(self, env: ActionEnv) -> list[dict[str, Any]]:
        return await kube(env).list("v1", "pods", CILIUM_NS, label_selector="k8s-app=cilium")

    async def plan(self, env: ActionEnv, p: NoActionParams) -> Plan:
        pods = await self._pods(env)
        runbook = ["kubectl -n kube-system delete pods -l k8s-app=cilium",
                   "kubectl get pods -n kube-system -l k8s-app=cilium -w"]
        if not pods:
            return Plan(nothing_to_do="no Cilium agent pods", runbook=runbook)
        if len(pods) > MAX_AGENTS:
            return Plan(blocked=f"{len(pods)} agent pods; at most {MAX_AGENTS} at once", runbook=runbook)
        rows = []
        for pod in pods:
            name = meta(pod)["name"]
            await kube(env).delete("v1", "pods", name, CILIUM_NS, dry_run=True)
            rows.append([name, (pod.get("spec") or {}).get("nodeName", "-"),
                         (pod.get("status") or {}).get("phase", "?"), "accepted (dry run)"])
        return Plan(operations=[f"DELETE v1 pods {CILIUM_NS}/{meta(pod)['name']}" for pod in pods],
                    preview=table(["pod", "node", "phase", "API server"], rows), dry_run=True,
                    state=fingerprint(sorted(meta(pod).get("uid", "") for pod in pods)),
                    state_text="agents " + ", ".join(sorted(meta(pod)["name"] for pod in pods)),
                    runbook=runbook,
                    warnings=["pod networking on every node is down until its new agent is Ready; "
                              "try the DaemonSet restart first"])

    async def run(self, env: ActionEnv, p: NoActionParams) -> Outcome:
        done, failed = [], []
        for pod in await self._pods(env):
            try:
                await kube(env).delete("v1", "pods", meta(pod)["name"], CILIUM_NS)
                done.append(meta(pod)["name"])
            except SourceError as exc:
                failed.append(f"{meta(pod)['name']}: {exc.reason}")
        return Outcome(ok=not failed, summary=f"deleted {len(done)} Cilium agent pod(s)"
                       + (f"; failed: {'; '.join(failed)}" if failed else ""))


# -- 3.2 steps 1 and 2 ------------------------------------------------------------------------------
class _CreateFromConfig(Action[NoActionParams]):
    """Create one cluster-scoped Cilium object from the config, unless one of its kind exists."""

    params = NoActionParams
    section = "3.2"
    risk = Risk.low
    plural = ""
    kind = ""

    def _body(self, env: ActionEnv) -> dict[str, Any] | None:
        raise NotImplementedError

    async def plan(self, env: ActionEnv, p: NoActionParams) -> Plan:
        body = self._body(env)
        runbook = [f"kubectl get {self.plural}", "kubectl apply -f - <<EOF … EOF (the object below)"]
        if body is None:
            return Plan(blocked=f"no {self.kind} configured (checks.l2-announcements): the bot does not invent one",
                        runbook=runbook)
        existing = await kube(env).list(CILIUM_ALPHA, self.plural)
        if existing:
            return Plan(nothing_to_do=f"{self.kind} already exists: "
                                      + ", ".join(meta(o)["name"] for o in existing), runbook=runbook)
        dry = await kube(env).create(CILIUM_ALPHA, self.plural, body, dry_run=True)
        return Plan(operations=[f"POST {CILIUM_ALPHA} {self.plural} {body['metadata']['name']}"],
                    preview=f"The API server accepted creating {self.kind} {meta(dry).get('name')} (dry run):\n"
                            + _yaml(body),
                    dry_run=True, state=fingerprint([]), state_text=f"no {self.kind}", runbook=runbook)

    async def run(self, env: ActionEnv, p: NoActionParams) -> Outcome:
        body = self._body(env)
        if body is None:
            return Outcome(ok=False, summary=f"no {self.kind} configured")
        made = await kube(env).create(CILIUM_ALPHA, self.plural, body)
        return Outcome(ok=True, summary=f"created {self.kind} {meta(made).get('name')}")


@remediation_action
class CreateL2Policy(_CreateFromConfig):
    name = "create-l2-policy"
    title = "Create the CiliumL2AnnouncementPolicy from the config"
    step = "Resolution 1: create the L2 announcement policy"
    changes = "creates a CiliumL2AnnouncementPolicy (cluster-scoped)"
    plural = "ciliuml2announcementpolicies"
    kind = "CiliumL2AnnouncementPolicy"

    def _body(self, env: ActionEnv) -> dict[str, Any] | None:
        pol = check_settings(env.ctx, "l2-announcements", L2Checks).policy
        if pol is None:
            return None
        spec: dict[str, Any] = {"interfaces": list(pol.interfaces), "externalIPs": pol.external_ips,
                                "loadBalancerIPs": pol.load_balancer_ips}
        if pol.node_selector:
            spec["nodeSelector"] = {"matchLabels": dict(pol.node_selector)}
        return {"apiVersion": CILIUM_ALPHA, "kind": self.kind, "metadata": {"name": pol.name}, "spec": spec}


@remediation_action
class CreateLbPool(_CreateFromConfig):
    name = "create-lb-pool"
    title = "Create the CiliumLoadBalancerIPPool from the config"
    step = "Resolution 2: create the IP pool"
    changes = "creates a CiliumLoadBalancerIPPool (cluster-scoped)"
    plural = "ciliumloadbalancerippools"
    kind = "CiliumLoadBalancerIPPool"

    def _body(self, env: ActionEnv) -> dict[str, Any] | None:
        pool = check_settings(env.ctx, "l2-announcements", L2Checks).pool
        if pool is None:
            return None
        return {"apiVersion": CILIUM_ALPHA, "kind": self.kind, "metadata": {"name": pool.name},
                "spec": {"blocks": [{"cidr": b} for b in pool.blocks]}}


# -- 3.3 step 2 -------------------------------------------------------------------------------------
@remediation_action
class ExpandLbPool(Action[NoActionParams]):
    name = "expand-lb-pool"
    title = "Add the configured CIDR block to the LoadBalancer IP pool"
    section = "3.3"
    step = "Resolution 2: expand the exhausted pool (add CIDR blocks)"
    risk = Risk.high  # new addresses must be free on the LB network, or they collide with hosts there
    params = NoActionParams
    changes = "patches spec.blocks of a CiliumLoadBalancerIPPool"

    async def plan(self, env: ActionEnv, p: NoActionParams) -> Plan:
        cfg = check_settings(env.ctx, "traefik-lb", TraefikChecks)
        runbook = [f"kubectl edit CiliumLoadBalancerIPPool {cfg.pool}  # add the block to spec.blocks"]
        if not cfg.expand_block:
            return Plan(blocked="no block configured (checks.traefik-lb.expand_block): the bot does not invent one",
                        runbook=runbook)
        try:
            ipaddress.ip_network(cfg.expand_block, strict=False)
        except ValueError:
            return Plan(blocked=f"checks.traefik-lb.expand_block {cfg.expand_block!r} is not a CIDR", runbook=runbook)
        pool = await kube(env).get(CILIUM_ALPHA, "ciliumloadbalancerippools", cfg.pool)
        blocks = list((pool.get("spec") or {}).get("blocks") or [])
        if any(b.get("cidr") == cfg.expand_block for b in blocks):
            return Plan(nothing_to_do=f"{cfg.pool} already has {cfg.expand_block}", runbook=runbook)
        new = [*blocks, {"cidr": cfg.expand_block}]
        dry = await kube(env).patch(CILIUM_ALPHA, "ciliumloadbalancerippools", cfg.pool,
                                    {"spec": {"blocks": new}}, dry_run=True)
        before = pool_size(pool)
        return Plan(operations=[f"PATCH {CILIUM_ALPHA} ciliumloadbalancerippools {cfg.pool}: spec.blocks "
                                f"+ {cfg.expand_block}"],
                    preview=(f"The API server accepted the patch (dry run): blocks "
                             f"{', '.join(b.get('cidr') or b.get('start', '?') for b in blocks)} → "
                             f"{', '.join(b.get('cidr') or b.get('start', '?') for b in (dry.get('spec') or {}).get('blocks') or [])}; "
                             f"{before} → {pool_size(dry)} addresses."),
                    dry_run=True, state=fingerprint(blocks), state_text=f"{len(blocks)} block(s)", runbook=runbook,
                    warnings=[f"{cfg.expand_block} must be free on the LB network (no host or DHCP range uses it)"])

    async def run(self, env: ActionEnv, p: NoActionParams) -> Outcome:
        cfg = check_settings(env.ctx, "traefik-lb", TraefikChecks)
        pool = await kube(env).get(CILIUM_ALPHA, "ciliumloadbalancerippools", cfg.pool)
        blocks = [*((pool.get("spec") or {}).get("blocks") or []), {"cidr": cfg.expand_block}]
        after = await kube(env).patch(CILIUM_ALPHA, "ciliumloadbalancerippools", cfg.pool, {"spec": {"blocks": blocks}})
        return Outcome(ok=True, summary=f"pool {cfg.pool} now has {pool_size(after)} addresses "
                                        f"({len(blocks)} blocks)")
