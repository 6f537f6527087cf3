"""Unseal Vault (runbook 5.1 / 5.2 step 3): submit the threshold number of key shares to each
sealed replica, then verify.

Key sources (pluggable, ``source=``):

- ``secret``: the Kubernetes Secret ``terraform-state/vault-init`` (``vault-init.json``, field
  ``unseal_keys_hex`` or ``keys``), runbook 5.1 option B. Off unless
  ``remediation.unseal_from_secret.enabled``; high risk (the bot itself reads every share).
- ``holders``: after approval, each key holder runs ``/sop share <id>`` and pastes their own
  share into a private Mattermost dialog that submits straight to the bot. The share goes to
  every sealed replica at once (Vault accumulates progress) and is then dropped.

Key material only ever lives in local variables of ``run``/``accept_secret``: never in a plan,
an outcome, an exception text, a log line or the store. Messages are built from replica names
and Vault's seal status only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from bot.sdk import (Action, ActionEnv, ActionParams, Gate, K8sName, Outcome, Plan, Procedure, Risk,
                     SecretProgress, SecretPrompt, SourceError, Status, Step, StepRun, check_settings,
                     fingerprint, procedure, remediation_action)
from handlers.actions.common import Unavailable, kube, table
from handlers.vault import (DEFAULT_ISSUER, K8sAuthChecks, PkiChecks, ca_label, cert_manager_summary,
                            cluster_auth_facts)
from handlers.vault import _cert_manager_recovery as cert_manager_recovery  # the SOP's own read
from handlers.vault import _raft_peers as raft_peers

_SHARE = re.compile(r"^(?:[0-9a-fA-F]{32,130}|[A-Za-z0-9+/]{20,180}={0,2})$")


class UnsealParams(ActionParams):
    source: Literal["auto", "secret", "holders"] = Field(
        "auto", description="secret|holders; auto: the Secret when enabled, else key holders")
    replica: K8sName | None = Field(None, description="vault-N, one replica only")


class _Status:
    def __init__(self, name: str, addr: str, data: dict[str, Any] | None, error: str = ""):
        self.name, self.addr, self.data, self.error = name, addr, data or {}, error

    @property
    def sealed(self) -> bool:
        return bool(self.data) and bool(self.data.get("initialized")) and bool(self.data.get("sealed"))

    @property
    def progress(self) -> str:
        return f"{self.data.get('progress', 0)}/{self.data.get('t', '?')}"


@remediation_action
class UnsealVault(Action[UnsealParams]):
    name = "vault-unseal"
    title = "Unseal the sealed Vault replicas"
    section = "5.2"
    step = "Step 3: unseal each sealed replica with 3 of 5 keys"
    risk = Risk.high
    risk_rule = "low with source=holders, high with source=secret (the bot reads every share)"
    params = UnsealParams
    changes = "submits unseal key shares to sealed Vault replicas (PUT sys/unseal)"

    def resolve(self, env: ActionEnv, params: UnsealParams) -> UnsealParams:
        if params.source != "auto":
            return params
        source = "secret" if env.config.unseal_from_secret.enabled else "holders"
        return params.model_copy(update={"source": source})

    def risk_for(self, params: UnsealParams) -> Risk:
        # Reading every share out of a Secret is the dangerous path; shares handed in by their
        # holders are consent in themselves.
        return Risk.high if params.source == "secret" else Risk.low

    def enabled(self, env: ActionEnv, params: UnsealParams) -> str | None:
        if params.source == "secret" and not env.config.unseal_from_secret.enabled:
            return ("the vault-init Secret key source is off "
                    "(remediation.unseal_from_secret.enabled); use source=holders")
        return None

    def secret_prompt(self, params: UnsealParams) -> SecretPrompt | None:
        if params.source != "holders":
            return None
        return SecretPrompt(title="Vault unseal key", label="Unseal key share",
                            help_text="Paste one unseal key share (hex or base64). It goes straight "
                                      "to the sealed Vault replicas; it is never posted, logged or stored.")

    async def _statuses(self, env: ActionEnv, p: UnsealParams) -> list[_Status]:
        pool = env.ctx.vault
        if pool is None or not pool.addrs:
            raise Unavailable("no Vault replica addresses configured (vault.addrs)")
        out = []
        for addr, name in zip(pool.addrs, pool.names):
            if p.replica not in (None, name):
                continue
            try:
                out.append(_Status(name, addr, await pool.seal_status(addr)))
            except SourceError as exc:
                out.append(_Status(name, addr, None, exc.reason))
        if not out:
            raise Unavailable(f"no replica named {p.replica}")
        return out

    async def plan(self, env: ActionEnv, p: UnsealParams) -> Plan:
        states = await self._statuses(env, p)
        sealed = [s for s in states if s.sealed]
        rows = [[s.name, "unreachable: " + s.error if s.error else
                 ("not initialized (5.2 step 2: raft join first)" if not s.data.get("initialized")
                  else ("sealed" if s.sealed else "unsealed")), s.progress if s.sealed else "—"]
                for s in states]
        runbook = ["for i in 0 1 2; do kubectl exec -n vault vault-$i -- vault status | grep Sealed; done"]
        runbook += [f"kubectl exec -n vault {s.name} -- vault operator unseal <KEY_{k}>"
                    for s in sealed for k in range(1, int(s.data.get("t", 3)) + 1)]
        if not sealed:
            return Plan(nothing_to_do="no reachable, initialized replica is sealed", runbook=runbook)
        names = ", ".join(s.name for s in sealed)
        t = max(int(s.data.get("t", 3)) for s in sealed)
        cfg = env.config.unseal_from_secret
        if p.source == "secret":
            ops = [f"GET v1 secrets {cfg.namespace}/{cfg.secret_name} (data key {cfg.key}: "
                   "unseal_keys_hex or keys)",
                   f"PUT /v1/sys/unseal on {names}: {t} key shares each, until unsealed"]
        else:
            ops = [f"PUT /v1/sys/unseal on {names}: each share key holders hand in privately "
                   f"(/sop share), {t} needed per replica"]
        ops.append(f"GET /v1/sys/seal-status on {names} (verify)")
        return Plan(operations=ops,
                    preview=table(["replica", "state", "unseal progress"], rows),
                    state=fingerprint(sorted(s.name for s in sealed)),
                    state_text=f"sealed: {names}", runbook=runbook,
                    warnings=[f"{s.name} is unreachable and is left alone" for s in states if s.error])

    async def run(self, env: ActionEnv, p: UnsealParams) -> Outcome:
        if p.source != "secret":
            return Outcome(ok=False, summary="key shares come from their holders (/sop share)")
        pool = env.ctx.vault
        assert pool is not None
        sealed = [s for s in await self._statuses(env, p) if s.sealed]
        keys = await self._keys_from_secret(env)
        try:
            for s in sealed:  # the threshold number of shares, fewer if progress was under way
                for key in keys[: int(s.data.get("t", 3))]:
                    status = await pool.unseal(s.addr, key)
                    if not status.get("sealed", True):
                        break
        finally:
            keys.clear()
        return await self._verify(env, p, sealed)

    async def _keys_from_secret(self, env: ActionEnv) -> list[str]:
        cfg = env.config.unseal_from_secret
        ref = f"{cfg.namespace}/{cfg.secret_name}"
        secret = await kube(env).get("v1", "secrets", cfg.secret_name, cfg.namespace)
        raw = (secret.get("data") or {}).get(cfg.key)
        if not raw:
            raise Unavailable(f"Secret {ref} has no data key {cfg.key}")
        try:
            init = json.loads(base64.b64decode(raw, validate=True))
            keys = init.get("unseal_keys_hex") or init.get("keys") or []
        except (binascii.Error, ValueError, AttributeError):
            raise Unavailable(f"Secret {ref} key {cfg.key} is not vault operator init's JSON") from None
        finally:
            del raw, secret
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise Unavailable(f"Secret {ref} holds no unseal_keys_hex or keys list")
        return keys

    async def _verify(self, env: ActionEnv, p: UnsealParams, targets: list[_Status]) -> Outcome:
        names = {s.name for s in targets}
        after = [s for s in await self._statuses(env, p) if s.name in names]
        still = [s for s in after if s.sealed or s.error]
        if still:
            return Outcome(ok=False, summary="still sealed: " + ", ".join(
                f"{s.name} ({s.error or 'progress ' + s.progress})" for s in still))
        try:
            recovery = await cert_manager_summary(env.ctx)
        except SourceError as exc:
            recovery = f"cert-manager not checked: {exc.reason}"
        return Outcome(ok=True, summary=f"unsealed {', '.join(sorted(names))} (verified: sealed=false)"
                                        + (f". {recovery}" if recovery else ""))

    async def accept_secret(self, env: ActionEnv, params: UnsealParams, secret: SecretStr) -> SecretProgress:
        share = secret.get_secret_value().strip()
        if not _SHARE.match(share):
            return SecretProgress(message="", field_error="That is not a hex or base64 unseal key share.")
        pool = env.ctx.vault
        if pool is None:
            return SecretProgress(message="no Vault replica addresses configured", done=True, ok=False)
        sealed = [s for s in await self._statuses(env, params) if s.sealed]
        parts = []
        try:
            for s in sealed:
                try:
                    status = await pool.unseal(s.addr, share)
                except SourceError as exc:
                    # Vault's words only ("Unseal failed, invalid key"), never the share.
                    parts.append(f"{s.name}: refused ({exc.reason}); progress starts over")
                    continue
                if status.get("sealed", True):
                    parts.append(f"{s.name} progress {status.get('progress', 0)}/{status.get('t', '?')}")
                else:
                    parts.append(f"{s.name} unsealed")
        finally:
            del share
        remaining = [s for s in await self._statuses(env, params) if s.sealed]
        if not remaining:
            verified = await self._verify(env, params, sealed)
            return SecretProgress(message="; ".join(parts) + f". {verified.summary}", done=True,
                                  ok=verified.ok)
        return SecretProgress(message="; ".join(parts) or "no replica is sealed", done=False)


# -- 5.2 step 2: re-join a replica without Raft data -------------------------------------------
class ReplicaParams(ActionParams):
    replica: K8sName = Field(description="vault-N that reports Initialized=false")


async def _active(env: ActionEnv) -> tuple[str, str, str] | None:
    """(name, addr, advertised api_addr) of the active node, or None when no replica leads."""
    pool = env.ctx.vault
    assert pool is not None
    for addr, name in zip(pool.addrs, pool.names):
        try:
            leader = await pool.leader(addr)
        except SourceError:
            continue
        if leader.get("is_self"):
            return name, addr, str(leader.get("leader_address") or addr)
    return None


def _pool(env: ActionEnv) -> Any:
    pool = env.ctx.vault
    if pool is None or not pool.addrs:
        raise Unavailable("no Vault replica addresses configured (vault.addrs)")
    return pool


@remediation_action
class RaftJoin(Action[ReplicaParams]):
    name = "vault-raft-join"
    title = "Re-join a Vault replica that lost its Raft data"
    section = "5.2"
    step = "Step 2: a replica showing Initialized=false rejoins Raft"
    risk = Risk.low  # only a node with no data can join; the leader's data is untouched
    params = ReplicaParams
    changes = "joins an uninitialized Vault replica to the Raft cluster (POST sys/storage/raft/join)"

    async def plan(self, env: ActionEnv, p: ReplicaParams) -> Plan:
        pool = _pool(env)
        if p.replica not in pool.names:
            return Plan(blocked=f"no replica {p.replica}; the replicas are {', '.join(pool.names)}")
        addr = pool.addrs[pool.names.index(p.replica)]
        runbook = [f"kubectl exec -n vault {p.replica} -- env VAULT_ADDR=http://127.0.0.1:8200 "
                   "vault operator raft join http://vault-0.vault-internal:8200"]
        seal = await pool.seal_status(addr)
        if seal.get("initialized"):
            return Plan(nothing_to_do=f"{p.replica} reports Initialized=true: it is a Raft peer already "
                                      "(sealed? use vault-unseal)", runbook=runbook)
        active = await _active(env)
        if active is None:
            return Plan(blocked="no replica is the active node: there is no leader to join (5.3 first)",
                        runbook=runbook)
        leader, _, api_addr = active
        return Plan(operations=[f"POST /v1/sys/storage/raft/join on {p.replica}: leader_api_addr={api_addr}",
                                f"GET /v1/sys/seal-status on {p.replica} (verify Initialized=true)"],
                    preview=table(["replica", "now", "after"],
                                  [[p.replica, "Initialized=false", f"Raft peer of {leader}, sealed"]]),
                    state=fingerprint([p.replica, False, leader]), state_text=f"{p.replica} uninitialized, leader {leader}",
                    runbook=runbook,
                    warnings=[f"{p.replica} starts sealed after joining: unseal it next (vault-unseal, 5.2 step 3)"])

    async def run(self, env: ActionEnv, p: ReplicaParams) -> Outcome:
        pool = _pool(env)
        addr = pool.addrs[pool.names.index(p.replica)]
        active = await _active(env)
        if active is None:
            return Outcome(ok=False, summary="no active node to join any more")
        answer = await pool.raft_join(addr, active[2])
        seal = await pool.seal_status(addr)
        if not answer.get("joined") or not seal.get("initialized"):
            return Outcome(ok=False, summary=f"{p.replica} did not join (joined={answer.get('joined')}, "
                                             f"initialized={seal.get('initialized')})")
        return Outcome(ok=True, summary=f"{p.replica} joined the Raft cluster of {active[0]} (verified: "
                                        f"initialized=true, sealed={str(seal.get('sealed')).lower()}); "
                                        "next: vault-unseal (5.2 step 3)")


# -- 5.3 step 6: step down a stuck leader -------------------------------------------------------
class StepDownParams(ActionParams):
    pass


@remediation_action
class StepDown(Action[StepDownParams]):
    name = "vault-step-down"
    title = "Step down the active Vault node to force a new Raft election"
    section = "5.3"
    step = "Step 6: nuclear option, step down the current leader"
    risk = Risk.high  # every request fails until a new leader is elected
    params = StepDownParams
    changes = "makes the active Vault node give up leadership (PUT sys/step-down)"

    def enabled(self, env: ActionEnv, params: StepDownParams) -> str | None:
        pool = env.ctx.vault
        if pool is not None and not pool.has_token:
            return "sys/step-down needs a Vault token with sudo on it (vault.token)"
        return None

    async def _modes(self, env: ActionEnv) -> list[list[str]]:
        pool = _pool(env)
        rows = []
        for addr, name in zip(pool.addrs, pool.names):
            try:
                leader = await pool.leader(addr)
                rows.append([name, "active" if leader.get("is_self") else
                             f"standby, leader {leader.get('leader_address') or 'none'}"])
            except SourceError as exc:
                rows.append([name, exc.reason])
        return rows

    async def plan(self, env: ActionEnv, p: StepDownParams) -> Plan:
        runbook = ["kubectl exec -n vault vault-0 -- env VAULT_ADDR=http://127.0.0.1:8200 VAULT_TOKEN=<root-token> "
                   "vault operator step-down"]
        active = await _active(env)
        if active is None:
            return Plan(blocked="no replica is active: step-down needs a leader to step down (5.3 steps 1-5)",
                        runbook=runbook)
        return Plan(operations=[f"PUT /v1/sys/step-down on {active[0]} (the active node)",
                                "GET /v1/sys/leader on every replica (verify a leader is elected)"],
                    preview=table(["replica", "HA mode now"], await self._modes(env)),
                    state=fingerprint(active[0]), state_text=f"active node {active[0]}", runbook=runbook,
                    warnings=["Vault answers no request until the new leader is elected (seconds)"])

    async def run(self, env: ActionEnv, p: StepDownParams) -> Outcome:
        pool = _pool(env)
        active = await _active(env)
        if active is None:
            return Outcome(ok=False, summary="no active node any more")
        await pool.step_down(active[1])
        for _ in range(30):  # the old leader waits 10 s before it may lead again
            now = await _active(env)
            if now is not None:
                return Outcome(ok=True, summary=f"{active[0]} stepped down; leader now {now[0]} (verified)")
            await asyncio.sleep(0.5)
        return Outcome(ok=False, summary=f"{active[0]} stepped down but no leader was elected within 15 s (5.3 escalation)")


# -- 5.4 step 3 and 5.5 steps 1–2: rewrite Vault config from the bot's config --------------------
class NoParams(ActionParams):
    pass


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "[]"
    return str(value)


def _same(now: dict[str, Any] | None, after: dict[str, Any], ttl_keys: tuple[str, ...] = ()) -> bool:
    """The fields the action would write already hold those values (ttls compared in seconds)."""
    if now is None:
        return False
    for k, v in after.items():
        if k in ttl_keys:
            if _seconds(now.get(k)) != _seconds(v):
                return False
        elif (sorted(now.get(k) or []) if isinstance(v, list) else now.get(k)) != (sorted(v) if isinstance(v, list) else v):
            return False
    return True


def _seconds(value: Any) -> int:
    text = str(value or 0).strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1]]
    return int(text) if text.isdigit() else -1


async def _read(pool: Any, path: str) -> dict[str, Any] | None:
    try:
        return await pool.read_data(path)
    except SourceError as exc:
        if exc.status == 404:
            return None
        raise


class _VaultWrite(Action[NoParams]):
    """A Vault logical write computed from the bot's config, previewed field by field."""

    risk = Risk.high
    params = NoParams
    source: ClassVar[str] = "the bot's config"

    def enabled(self, env: ActionEnv, params: NoParams) -> str | None:
        pool = env.ctx.vault
        if pool is None or not pool.has_token:
            return "needs a Vault token allowed to write it (vault.token; docs/rbac.md lists the policy)"
        return None

    async def target(self, env: ActionEnv) -> tuple[str, dict[str, Any], tuple[str, ...], str]:
        """(path, body, ttl keys, runbook command)."""
        raise NotImplementedError

    def show(self, key: str, value: Any) -> str:
        return _show(value)

    def rows(self, now: dict[str, Any] | None, after: dict[str, Any]) -> list[list[str]]:
        return [[k, "—" if now is None or k not in now else self.show(k, now[k]), self.show(k, v)]
                for k, v in after.items()]

    async def plan(self, env: ActionEnv, p: NoParams) -> Plan:
        pool = _pool(env)
        path, body, ttls, command = await self.target(env)
        now = await _read(pool, path)
        if _same(now, body, ttls):
            return Plan(nothing_to_do=f"{path} already holds these values", runbook=[command])
        return Plan(operations=[f"POST /v1/{path}: " + ", ".join(f"{k}={self.show(k, v)}" for k, v in body.items()),
                                f"GET /v1/{path} (verify)"],
                    preview=(f"**Preview** (from {self.source}; `—`: not set now" + (", role missing" if now is None else "")
                             + ")\n" + table(["field", "now", "after"], self.rows(now, body))),
                    state=fingerprint(now), state_text=f"{path} as read now", runbook=[command])

    async def run(self, env: ActionEnv, p: NoParams) -> Outcome:
        pool = _pool(env)
        path, body, ttls, _ = await self.target(env)
        await pool.write(path, body)
        after = await _read(pool, path)
        if not _same(after, body, ttls):
            return Outcome(ok=False, summary=f"wrote {path} but reading it back differs")
        return Outcome(ok=True, summary=f"wrote {path} (verified by reading it back)")


@remediation_action
class RecreatePkiRole(_VaultWrite):
    name = "vault-pki-role"
    title = "Recreate the PKI signing role from the bot's config"
    section = "5.4"
    step = "Step 3: recreate signing role"
    changes = "writes the PKI signing role (POST <mount>/roles/<name>) from checks.vault-pki"

    async def target(self, env: ActionEnv) -> tuple[str, dict[str, Any], tuple[str, ...], str]:
        cfg = check_settings(env.ctx, "vault-pki", PkiChecks)
        body = cfg.role_body()
        command = (f"vault write {cfg.role_mount}/roles/{cfg.role_name} allowed_domains={cfg.domain} "
                   f"allow_subdomains={str(cfg.allow_subdomains).lower()} max_ttl={cfg.max_ttl} "
                   "generate_lease=true require_cn=false")
        return f"{cfg.role_mount}/roles/{cfg.role_name}", body, ("max_ttl",), command


@remediation_action
class RecreateK8sAuthRole(_VaultWrite):
    name = "vault-k8s-auth-role"
    title = "Recreate cert-manager's Vault Kubernetes auth role from the bot's config"
    section = "5.5"
    step = "Step 2: recreate cert-manager role"
    changes = "writes the Kubernetes auth role (POST auth/<mount>/role/<name>) from checks.vault-k8s-auth"

    async def target(self, env: ActionEnv) -> tuple[str, dict[str, Any], tuple[str, ...], str]:
        cfg = check_settings(env.ctx, "vault-k8s-auth", K8sAuthChecks)
        body = {"bound_service_account_names": [cfg.service_account],
                "bound_service_account_namespaces": [cfg.namespace], "policies": list(cfg.policies), "ttl": cfg.ttl}
        command = (f"vault write auth/{cfg.mount}/role/{cfg.role} bound_service_account_names={cfg.service_account} "
                   f"bound_service_account_namespaces={cfg.namespace} policies={','.join(cfg.policies)} ttl={cfg.ttl}")
        return f"auth/{cfg.mount.strip('/')}/role/{cfg.role}", body, ("ttl",), command


@remediation_action
class RefreshK8sAuthConfig(_VaultWrite):
    name = "vault-k8s-auth-config"
    title = "Refresh Vault's Kubernetes auth config from the cluster (API server URL, CA)"
    section = "5.5"
    step = "Step 1: refresh Kubernetes auth config"
    changes = "writes auth/<mount>/config: kubernetes_host and kubernetes_ca_cert read from the cluster"
    source = "the cluster"

    async def target(self, env: ActionEnv) -> tuple[str, dict[str, Any], tuple[str, ...], str]:
        cfg = check_settings(env.ctx, "vault-k8s-auth", K8sAuthChecks)
        facts = await cluster_auth_facts(kube(env), cfg)
        if facts.host is None or facts.ca_pem is None:
            raise Unavailable("cannot read the cluster's API address or CA: " + "; ".join(facts.problems))
        pool = _pool(env)
        now = await _read(pool, f"auth/{cfg.mount.strip('/')}/config") or {}
        # The runbook's issuer; kept if the config already has one, it is only checked when
        # issuer validation is on (vault-k8s-auth compares it with the cluster's).
        body = {"kubernetes_host": facts.host, "kubernetes_ca_cert": facts.ca_pem,
                "issuer": str(now.get("issuer") or DEFAULT_ISSUER),
                "disable_iss_validation": bool(now.get("disable_iss_validation", True))}
        command = ('K8S_HOST="https://$(kubectl get svc kubernetes -n default -o jsonpath=\'{.spec.clusterIP}\')"; '
                   f"vault write auth/{cfg.mount}/config kubernetes_host=\"${{K8S_HOST}}:443\" "
                   "kubernetes_ca_cert=@/tmp/k8s-ca.crt issuer=\"https://kubernetes.default.svc.cluster.local\"")
        return f"auth/{cfg.mount.strip('/')}/config", body, (), command

    def show(self, key: str, value: Any) -> str:
        # The CA is a page of PEM: show whose it is, not the text.
        return ca_label(str(value)) if key == "kubernetes_ca_cert" and value else _show(value)


# -- 5.1/5.2 as one procedure: re-join, unseal, peers, cert-manager ------------------------------
# Key source: the vault-init Secret only. Holders' dialogs (``/sop share <proposal>``) belong to a
# single proposal in the engine; inside a procedure step they are not hosted yet, so that key
# source stays the single action ``vault-unseal source=holders``.
UNSEAL_ALL_HOLDERS = ("with the key holders' dialogs instead, run the single actions: "
                      "`/sop fix vault-raft-join replica=<vault-N>` then `/sop fix vault-unseal source=holders`")


async def _seal_states(run: StepRun) -> list[_Status]:
    return await UnsealVault()._statuses(run.env, UnsealParams(source="secret"))


def _uninitialized(states: list[_Status]) -> list[_Status]:
    return [s for s in states if not s.error and s.data and not s.data.get("initialized")]


def _unseal_all_enabled(env: ActionEnv, params: NoParams) -> str | None:
    if not env.config.unseal_from_secret.enabled:
        return ("this procedure unseals from the vault-init Secret, which is off "
                f"(remediation.unseal_from_secret.enabled); {UNSEAL_ALL_HOLDERS}")
    return None


async def _unseal_all_refuse(run: StepRun) -> str | None:
    states = await _seal_states(run)
    if not any(s.sealed for s in states) and not _uninitialized(states):
        unreachable = [s.name for s in states if s.error]
        return "every reachable replica is initialized and unsealed" + (
            f" (unreachable: {', '.join(unreachable)}: 5.1, its pod)" if unreachable else "")
    return None


async def _join_plans(run: StepRun) -> list[tuple[str, Plan]]:
    join = RaftJoin()
    return [(s.name, await join.plan(run.env, ReplicaParams(replica=s.name)))
            for s in _uninitialized(await _seal_states(run))]


async def _join_blocked(run: StepRun, plans: list[tuple[str, Plan]]) -> str:
    """Why a join cannot run now; with the others sealed there is no leader until they are
    unsealed (5.2's order: a majority unsealed first, then the join)."""
    blocked = [f"{name}: {p.blocked}" for name, p in plans if p.blocked]
    if not blocked:
        return ""
    others = [s.name for s in await _seal_states(run) if s.sealed]
    if others:
        blocked.append(f"sealed: {', '.join(others)}: unseal them first (by hand or "
                       "`/sop fix vault-unseal`), then resume this procedure")
    return "; ".join(blocked)


async def _joined(run: StepRun) -> Gate:
    """Done when no replica reports Initialized=false (after a restart too: Vault says so)."""
    plans = await _join_plans(run)
    if not plans:
        return Gate.done("every reachable replica reports Initialized=true")
    why = await _join_blocked(run, plans)
    return Gate.blocked(why) if why else Gate.ready()


async def _plan_join(run: StepRun) -> Plan:
    plans = await _join_plans(run)
    if not plans:
        return Plan(nothing_to_do="every reachable replica reports Initialized=true")
    why = await _join_blocked(run, plans)
    if why:
        return Plan(blocked=why)
    return Plan(operations=[op for _, p in plans for op in p.operations],
                preview=table(["replica", "now", "after"],
                              [[name, "Initialized=false", "Raft peer, sealed (unsealed in step 2)"]
                               for name, _ in plans]))


async def _join(run: StepRun) -> Outcome:
    join, done = RaftJoin(), []
    for name, plan in await _join_plans(run):
        if plan.blocked:
            return Outcome(ok=False, summary=f"{name}: {plan.blocked}")
        out = await join.run(run.env, ReplicaParams(replica=name))
        if not out.ok:
            return out
        done.append(out.summary.split("; next:")[0])  # step 2 is the next: no pointer to the action
    return Outcome(ok=True, summary="; ".join(done) + "; unsealed in step 2")


_unseal_step = Step.from_action(
    UnsealVault(), lambda run: {"source": "secret"}, key="unseal",
    title="Unseal each sealed replica (keys from the vault-init Secret)", timeout_s=120,
    next_step="5.2 step 3: kubectl exec -n vault vault-N -- vault operator unseal <KEY> (3 of 5), "
              "or /sop fix vault-unseal source=holders")


async def _plan_unseal(run: StepRun) -> Plan:
    plan = await UnsealVault().plan(run.env, UnsealParams(source="secret"))
    joining = [s.name for s in _uninitialized(await _seal_states(run))]
    if plan.nothing_to_do and joining:  # they are sealed once step 1 re-joined them
        return Plan(operations=[f"PUT /v1/sys/unseal on {', '.join(joining)} once re-joined (step 1): "
                                "key shares from the vault-init Secret"], preview=plan.preview)
    return plan


async def _leader_addr(run: StepRun) -> str | None:
    active = await _active(run.env)
    return active[1] if active else None


async def _peers(run: StepRun) -> Outcome:
    """5.2 step 4 (raft list-peers): every configured replica a voter, autopilot healthy."""
    pool = _pool(run.env)
    if not pool.has_token:  # no use polling: fail the step now
        raise Unavailable("no Vault token: the Raft peers cannot be read (vault.token)")
    addr = await _leader_addr(run)
    if addr is None:
        return Outcome(ok=False, summary="no replica is the active node yet")
    found = await raft_peers(pool, [addr])
    return Outcome(ok=found.status is Status.ok, summary=found.summary)


async def _cert_manager(run: StepRun) -> Outcome:
    """5.2 step 5: the Vault ClusterIssuers Ready, no CertificateRequest pending on Vault."""
    found = await cert_manager_recovery(run.ctx, True)
    if not found:
        return Outcome(ok=True, summary="no cert-manager ClusterIssuer uses Vault")
    bad = [f for f in found if f.status is not Status.ok]
    if bad:
        return Outcome(ok=False, summary="; ".join(f"{f.target} {f.summary}" for f in bad))
    return Outcome(ok=True, summary="; ".join(f.summary for f in found))


@procedure
class UnsealAll(Procedure[NoParams]):
    name = "vault-unseal-all"
    title = "Vault sealed: re-join, unseal every replica, verify the peers and cert-manager"
    section = "5.2"
    params = NoParams  # risk high (the Procedure default): the bot reads every share
    enabled = staticmethod(_unseal_all_enabled)  # type: ignore[assignment]
    refuse = staticmethod(_unseal_all_refuse)
    steps = (
        Step("raft-join", "Re-join each replica reporting Initialized=false", run=_join, precondition=_joined,
             dry_run=_plan_join, timeout_s=120,
             next_step="5.2 step 2: kubectl exec -n vault vault-N -- vault operator raft join "
                       "http://vault-0.vault-internal:8200 (needs an active node: unseal a majority first)",
             runbook=("for i in 0 1 2; do kubectl exec -n vault vault-$i -- vault status | grep Initialized; done",)),
        replace(_unseal_step, dry_run=_plan_unseal),
        Step("peers", "Raft peers: every replica a voter", kind="check", run=_peers, poll_s=5, timeout_s=120,
             next_step="5.2 step 4: kubectl exec -n vault vault-0 -- vault operator raft list-peers; 5.3 if "
                       "no leader",
             runbook=("kubectl exec -n vault vault-0 -- vault operator raft list-peers",)),
        Step("cert-manager", "cert-manager recovered: Vault ClusterIssuers Ready", kind="check",
             run=_cert_manager, poll_s=10, timeout_s=300,
             next_step="5.2 step 5: kubectl describe clusterissuer vault-issuer; a refused login is 5.5",
             runbook=("sleep 30; kubectl get clusterissuers",)),
    )
