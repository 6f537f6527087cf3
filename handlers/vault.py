"""Runbook chapter 5: Vault."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from bot.sdk import (Finding, HandlerContext, K8sName, LogPattern, NoParams, Severity, SOPParams, SourceError,
                     Status, SuggestedAction, check_settings, sop)

UNSEAL_STEP = ("5.2 step 3: unseal each sealed replica with 3 of the 5 keys from vault-init.json "
               "(then 5.2 step 5: check cert-manager recovers)")
JOIN_STEP = "5.2 step 2: a replica reports Initialized=false: join it to the Raft cluster"
LEADER_STEP = ("5.3: wait 30 s for Raft to elect a leader; if still none, check the pods reach "
               "each other on port 8201 and read the raft/leader lines of the Vault logs")
DOWN_STEP = "5.1: check the Vault pod of the unreachable replica (kubectl get pod -n vault)"


class VaultStatusParams(SOPParams):
    replica: K8sName | None = Field(None, description="vault-N, one replica only")

    @field_validator("replica")
    @classmethod
    def _configured(cls, v: str | None, info: ValidationInfo) -> str | None:
        # Checked against the configured replicas when the bot validates a command: a name that
        # is not one of them is the caller's mistake, answered at once, not an UNKNOWN thread.
        pool = getattr((info.context or {}).get("ctx"), "vault", None)
        if v is not None and pool is not None and pool.names and v not in pool.names:
            raise ValueError(f"no replica {v}; the replicas are {', '.join(pool.names)}")
        return v


@sop("vault-status", title="Vault seal and Raft leader status", sections=("5.1", "5.2", "5.3"),
     severity=Severity.P1, alerts=("VaultSealed", "VaultLeaderLost", "VaultDown"),
     causes=("replica sealed after a restart", "replica not initialized (must rejoin Raft)",
             "replica unreachable", "no Raft leader elected"))
async def vault_status(ctx: HandlerContext, params: VaultStatusParams) -> list[Finding]:
    """Seal state, unseal progress, HA mode and leader of every Vault replica (runbook 5.1–5.3)."""
    pool = ctx.vault
    if pool is None or not pool.addrs:
        return [Finding(status=Status.unknown, target="vault",
                        summary="no Vault replica addresses configured (vault.addrs)")]
    addrs = [a for a in pool.addrs if params.replica in (None, pool.name_of(a))]
    if not addrs:
        return [Finding(status=Status.unknown, target=params.replica or "vault",
                        summary=f"no replica named {params.replica}; known: {', '.join(pool.names)}")]
    states = await asyncio.gather(*(_replica(pool, a) for a in addrs))
    findings = [f for f, _ in states]
    seen = [s for _, s in states if s is not None]

    unsealed = [s for s in seen if not s["sealed"]]
    leaders = sorted({s["leader"] for s in unsealed if s.get("leader")})
    problems = len(addrs) - len(unsealed)
    if params.replica is None:
        if problems:
            findings.append(Finding(status=Status.crit, target="cluster",
                                    summary=f"{len(unsealed)} of {len(addrs)} replicas unsealed and reachable",
                                    next_step=UNSEAL_STEP if any(s["sealed"] for s in seen) else DOWN_STEP,
                                    # Propose 5.2 step 3 (needs approval; key source from config).
                                    actions=[SuggestedAction(action="vault-unseal")]
                                    if any(s["sealed"] for s in seen) else []))
        if unsealed and not leaders:
            findings.append(Finding(status=Status.warn, target="raft",
                                    summary="no replica reports a Raft leader", next_step=LEADER_STEP))
            findings.extend(await _raft_log_evidence(ctx, [pool.name_of(a) for a in addrs]))
        elif leaders:
            findings.append(Finding(status=Status.ok, target="raft", summary=f"leader {leaders[0]}"))
        if pool.has_token and leaders:
            # Only the active node answers raft/configuration; standbys forward or fail.
            leader_addr = next(a for a in addrs if pool.name_of(a) == leaders[0]) \
                if leaders[0] in pool.names else addrs[0]
            findings.append(await _raft_peers(pool, [leader_addr]))
    return findings


# 5.3: "read the raft/leader lines of the Vault logs"; the first match names the cause.
RAFT_PATTERNS = (
    LogPattern(regex=r"storage\.raft: failed to make requestVote RPC.*:8201.*(i/o timeout|connection refused|no route)",
               cause="Raft peers cannot reach each other on port 8201"),
    LogPattern(regex=r"storage\.raft: .*(Election timeout|heartbeat timeout)", cause="Raft elections keep timing out"),
)
VAULT_NAMESPACE = "vault"


async def _raft_log_evidence(ctx: HandlerContext, pods: list[str]) -> list[Finding]:
    """The raft lines of one replica's log (pods are named like the replicas), only read when no
    leader is elected; a log that cannot be read is an unknown finding, not a failed SOP."""
    if ctx.kube is None:
        return []
    for pod in pods:
        hits, failed = await ctx.attempt(ctx.log_hits(VAULT_NAMESPACE, pod, RAFT_PATTERNS, tail=200, quote=1),
                                         f"pod/{VAULT_NAMESPACE}/{pod} log")
        if failed is not None:
            return [failed]
        if hits:
            return [Finding(status=Status.warn, target=f"pod/{VAULT_NAMESPACE}/{pod} log",
                            summary=f"{hits[0].pattern.cause}: {hits[0].lines[-1]}", next_step=LEADER_STEP)]
    return []


async def _replica(pool: Any, addr: str) -> tuple[Finding, dict[str, Any] | None]:
    name = pool.name_of(addr)
    try:
        seal = await pool.seal_status(addr)
    except SourceError as exc:
        return Finding(status=Status.unknown, target=name, summary=f"unreachable: {exc.reason}",
                       next_step=DOWN_STEP), None
    version = seal.get("version", "?")
    if not seal.get("initialized", False):
        return Finding(status=Status.crit, target=name, summary=f"not initialized (v{version})",
                       next_step=JOIN_STEP), {"sealed": True}
    if seal.get("sealed", True):
        progress = f"{seal.get('progress', 0)}/{seal.get('t', '?')}"
        return Finding(status=Status.crit, target=name,
                       summary=f"sealed, unseal progress {progress} (v{version})",
                       next_step=UNSEAL_STEP), {"sealed": True}
    state: dict[str, Any] = {"sealed": False}
    try:
        leader = await pool.leader(addr)
    except SourceError as exc:
        return Finding(status=Status.unknown, target=name,
                       summary=f"unsealed, leader status unknown: {exc.reason}"), state
    if leader.get("is_self"):
        mode = "active (leader)"
        state["leader"] = name
    else:
        mode = "standby"
        address = leader.get("leader_address") or ""
        if address:
            state["leader"] = _leader_name(pool, address)
    return Finding(status=Status.ok, target=name, summary=f"unsealed, {mode} (v{version})"), state


def _leader_name(pool: Any, address: str) -> str:
    for addr, name in zip(pool.addrs, pool.names):
        if address.rstrip("/") == addr.rstrip("/") or name in address:
            return name
    return address


async def _raft_peers(pool: Any, addrs: list[str]) -> Finding:
    try:
        data = await pool.raft_configuration(addrs[0])
    except SourceError as exc:
        return Finding(status=Status.unknown, target="raft peers", summary=exc.reason)
    servers = (((data or {}).get("data") or {}).get("config") or {}).get("servers") or []
    voters = [s for s in servers if s.get("voter")]
    desc = ", ".join(f"{s.get('node_id')}{' (leader)' if s.get('leader') else ''}" for s in servers)
    status = Status.ok if len(voters) >= len(pool.addrs) else Status.warn
    return Finding(status=status, target="raft peers",
                   summary=f"{len(voters)} voters of {len(servers)} peers: {desc}",
                   next_step="" if status is Status.ok else JOIN_STEP)


# -- 5.4 PKI engine, 4.3 intermediate CA ------------------------------------------------------
PKI_MOUNT_STEP = ("5.4 step 1: re-enable the engine (vault secrets enable -path=pki_int pki), then "
                  "re-import the intermediate (5.4 step 2) and recreate the signing role (5.4 step 3)")
PKI_IMPORT_STEP = "5.4 step 2: re-import the intermediate CA (needs the Root CA key; deploy-cluster.sh phase 2)"
PKI_ROLE_STEP = ("5.4 step 3: recreate the signing role (vault write pki_int/roles/<DOMAIN_DOT> "
                 "allowed_domains=<DOMAIN> allow_subdomains=true max_ttl=720h)")
INTERMEDIATE_STEP = ("4.3: rotate the intermediate (11.7 procedure: new CSR in Vault, sign offline with the "
                     "Root CA, set-signed), then delete the TLS secrets so certificates reissue")


class PkiChecks(BaseModel):
    """``checks.vault-pki`` in the config."""

    model_config = ConfigDict(extra="forbid")
    mounts: list[str] = Field(default_factory=lambda: ["pki_int"], description="PKI mounts cert-manager signs with")
    # The runbook's prevention: "Set calendar reminder at year 9" of a 10-year intermediate.
    warn_days: float = Field(365, gt=0, description="a CA closer than this to notAfter: warn")


@sop("vault-pki", title="Vault PKI: engine mounted, CA chain valid, signing role present", sections=("5.4", "4.3"),
     severity=Severity.P1, causes=("PKI engine not mounted", "intermediate CA missing or expired",
                                   "no signing role"))
async def vault_pki(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Each PKI mount cert-manager uses is mounted, has its intermediate CA imported and unexpired
    (notAfter of every CA in ``ca_chain``) and at least one signing role (runbook 5.4, 4.3)."""
    cfg = check_settings(ctx, "vault-pki", PkiChecks)
    pool = ctx.vault
    if pool is None or not pool.addrs:
        return [Finding(status=Status.unknown, target="vault", summary="no Vault replica addresses configured")]
    mounts: dict[str, str] | None = None
    if pool.has_token:
        try:
            mounts = await pool.secret_mounts()
        except SourceError as exc:
            return [Finding(status=Status.unknown, target="vault secrets engines", summary=exc.reason)]
    findings = await asyncio.gather(*(_pki_mount(pool, m.strip("/"), mounts, cfg) for m in cfg.mounts))
    return [f for group in findings for f in group]


async def _pki_mount(pool: Any, mount: str, mounts: dict[str, str] | None, cfg: PkiChecks) -> list[Finding]:
    target = f"pki/{mount}"
    if mounts is not None and mounts.get(mount + "/") != "pki":
        return [Finding(status=Status.crit, target=target,
                        summary=f"PKI engine {mount} is not mounted (disabled or deleted); "
                                f"mounted: {', '.join(sorted(p.rstrip('/') for p in mounts)) or 'none'}",
                        next_step=PKI_MOUNT_STEP)]
    try:
        ca, chain, roles = await asyncio.gather(pool.pki_ca(mount), pool.pki_ca_chain(mount), pool.pki_roles(mount))
    except SourceError as exc:
        if exc.status == 404:
            return [Finding(status=Status.crit, target=target, summary=f"PKI engine {mount} not responding: {exc.reason}",
                            next_step=PKI_MOUNT_STEP)]
        return [Finding(status=Status.unknown, target=target, summary=exc.reason)]
    findings: list[Finding] = []
    if not ca.strip():
        findings.append(Finding(status=Status.crit, target=target,
                                summary=f"no CA certificate in {mount}: intermediate CA not imported",
                                next_step=PKI_IMPORT_STEP))
    findings.extend(_chain_findings(target, chain or ca, cfg))
    if not roles:
        findings.append(Finding(status=Status.crit, target=f"{target} roles",
                                summary=f"no signing role in {mount}: cert-manager cannot sign",
                                next_step=PKI_ROLE_STEP))
    if not any(f.status is not Status.ok for f in findings):
        findings.append(Finding(status=Status.ok, target=target,
                                summary=f"mounted, CA chain valid, role(s): {', '.join(roles)}"))
    return findings


def _chain_findings(target: str, pem: str, cfg: PkiChecks) -> list[Finding]:
    """notAfter of each CA in the chain: expired → crit (4.3), inside warn_days → warn."""
    try:
        certs = x509.load_pem_x509_certificates(pem.encode()) if pem.strip() else []
    except ValueError:
        return [Finding(status=Status.unknown, target=target, summary="CA chain is not valid PEM")]
    now = datetime.now(timezone.utc)
    out: list[Finding] = []
    for cert in certs:
        cn = ", ".join(a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)) or cert.subject.rfc4514_string()
        days = (cert.not_valid_after_utc - now).total_seconds() / 86400
        when = f"notAfter {cert.not_valid_after_utc:%Y-%m-%d}"
        if days < 0:
            out.append(Finding(status=Status.crit, target=f"{target} CA",
                               summary=f"intermediate CA expired: {cn!r} expired {-days:.0f} days ago ({when}); "
                                       "new certificate requests fail", next_step=INTERMEDIATE_STEP))
        elif days < cfg.warn_days:
            out.append(Finding(status=Status.warn, target=f"{target} CA",
                               summary=f"{cn!r} expires in {days:.0f} days ({when})", next_step=INTERMEDIATE_STEP))
    return out


# -- 5.5 Kubernetes auth (and 4.2's "Kubernetes auth not configured in Vault") ----------------
K8S_AUTH_ENABLE_STEP = "5.5 step 1: enable and configure the auth method (vault auth enable kubernetes; vault write auth/kubernetes/config …)"
K8S_AUTH_CONFIG_STEP = ("5.5 step 1: refresh the Kubernetes auth config (kubernetes_host = the kubernetes "
                        "service's ClusterIP, kubernetes_ca_cert = the cluster CA)")
K8S_AUTH_ROLE_STEP = ("5.5 step 2: recreate the role (vault write auth/kubernetes/role/{role} "
                      "bound_service_account_names={sa} bound_service_account_namespaces={ns} policies=cert-manager)")
K8S_SA_STEP = "4.2: the ServiceAccount {sa} is missing in {ns}: re-apply cert-manager's Vault issuer manifests"


class K8sAuthChecks(BaseModel):
    """``checks.vault-k8s-auth`` in the config: the login cert-manager's ClusterIssuer uses."""

    model_config = ConfigDict(extra="forbid")
    mount: str = "kubernetes"
    role: str = "cert-manager-issuer"
    service_account: str = "vault-issuer"
    namespace: str = "cert-manager"


@sop("vault-k8s-auth", title="Vault Kubernetes auth for cert-manager: method, config, role, ServiceAccount",
     sections=("5.5", "4.2"), severity=Severity.P2,
     causes=("Kubernetes auth not configured in Vault", "role missing or binding mismatch",
             "ServiceAccount vault-issuer missing"))
async def vault_k8s_auth(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """The Kubernetes auth method is enabled and configured, cert-manager's role exists and binds
    its ServiceAccount, and that ServiceAccount exists (runbook 5.5, 4.2). Read-only: no login."""
    cfg = check_settings(ctx, "vault-k8s-auth", K8sAuthChecks)
    pool = ctx.vault
    if pool is None or not pool.addrs:
        return [Finding(status=Status.unknown, target="vault", summary="no Vault replica addresses configured")]
    if not pool.has_token:
        return [Finding(status=Status.unknown, target="vault", summary="no Vault token configured (vault.token): "
                                                                       "auth config and roles need one")]
    mount = cfg.mount.strip("/")
    target = f"auth/{mount}"
    try:
        methods = await pool.auth_mounts()
        if methods.get(mount + "/") != "kubernetes":
            return [Finding(status=Status.crit, target=target,
                            summary=f"Kubernetes auth not configured in Vault: no kubernetes auth method at {mount}/",
                            next_step=K8S_AUTH_ENABLE_STEP)]
        config, role = await asyncio.gather(pool.read_data(f"auth/{mount}/config"),
                                            pool.read_data(f"auth/{mount}/role/{cfg.role}"))
    except SourceError as exc:
        return [Finding(status=Status.unknown, target=target, summary=exc.reason)]
    findings: list[Finding] = []
    if not config or not config.get("kubernetes_host"):
        findings.append(Finding(status=Status.crit, target=f"{target}/config",
                                summary="Kubernetes auth has no kubernetes_host configured",
                                next_step=K8S_AUTH_CONFIG_STEP))
    step = K8S_AUTH_ROLE_STEP.format(role=cfg.role, sa=cfg.service_account, ns=cfg.namespace)
    if role is None:
        findings.append(Finding(status=Status.crit, target=f"{target}/role/{cfg.role}",
                                summary=f"Vault Kubernetes auth role {cfg.role} does not exist: cert-manager's "
                                        "login is denied (permission denied)", next_step=step))
    else:
        names, spaces = role.get("bound_service_account_names") or [], role.get("bound_service_account_namespaces") or []
        if not ({cfg.service_account, "*"} & set(names) and {cfg.namespace, "*"} & set(spaces)):
            findings.append(Finding(status=Status.crit, target=f"{target}/role/{cfg.role}",
                                    summary=f"role binding mismatch: binds {names} in {spaces}, not "
                                            f"{cfg.namespace}/{cfg.service_account}", next_step=step))
    if ctx.kube is not None:
        try:
            await ctx.kube.get("v1", "serviceaccounts", cfg.service_account, cfg.namespace)
        except SourceError as exc:
            if exc.status == 404:
                findings.append(Finding(status=Status.crit, target=f"serviceaccount/{cfg.namespace}/{cfg.service_account}",
                                        summary="ServiceAccount missing: cert-manager has no token to log in with",
                                        next_step=K8S_SA_STEP.format(sa=cfg.service_account, ns=cfg.namespace)))
            else:
                findings.append(Finding(status=Status.unknown, target=f"serviceaccount/{cfg.namespace}/"
                                        f"{cfg.service_account}", summary=exc.reason))
    if not any(f.status is not Status.ok for f in findings):
        findings.append(Finding(status=Status.ok, target=target,
                                summary=f"configured ({(config or {}).get('kubernetes_host')}); role {cfg.role} binds "
                                        f"{cfg.namespace}/{cfg.service_account}"))
    return findings
