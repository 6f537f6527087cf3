"""Runbook chapter 4: TLS certificates (cert-manager with the Vault ClusterIssuer)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Action, ActionEnv, ActionParams, Answer, Finding, HandlerContext, K8sName, KubeClient,
                     NoParams, Outcome, Plan, Risk, Severity, SourceError, Status, SuggestedAction, TlsResult,
                     check_settings, condition, decision, fingerprint, parse_time, remediation_action, sop)

CM = "cert-manager.io/v1"
NOT_READY_STEP = ("4.1: kubectl describe certificate -n <ns> <name>, then its CertificateRequest's "
                  "message (Vault role, PKI)")
ISSUER_STEP = "4.2: kubectl describe clusterissuer <name>; Vault sealed (5.1) or Kubernetes auth (5.5)?"
EXPIRY_STEP = ("11.7 manual renewal: kubectl delete secret -n <ns> <secret> and watch the "
               "CertificateRequest; if it fails, 4.1")


class CertChecks(BaseModel):
    """``checks.cert-health`` in the config."""

    model_config = ConfigDict(extra="forbid")
    # The runbook's table: "not expiring in < 30 days". Leaf certificates live 30 days (11.7) and
    # are renewed at 2/3 of their life, so a healthy one is always within 30 days of expiry: a
    # certificate counts as expiring when it is inside the window AND past its renewal time.
    expiring_days: float = Field(30, gt=0)
    critical_days: float = Field(7, ge=0, description="closer than this (or expired): critical")
    max_listed: int = Field(20, ge=1)


@sop("cert-health", title="Certificates Ready, none expiring; ClusterIssuers Ready",
     sections=("4.1", "4.2", "11.7"),
     severity=Severity.P2, alerts=("CertManagerCertExpirySoon", "CertManagerCertNotReady",
                                   "CertNotReady", "ClusterIssuerNotReady"),
     causes=("the Vault PKI role does not allow the requested DNS name", "Vault is sealed",
             "cert-manager cannot log in to Vault", "ClusterIssuer not ready",
             "the issuer's ServiceAccount token expired or was invalidated", "renewal overdue"))
async def cert_health(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Every Certificate Ready=True, none expiring in < 30 days without having been renewed
    (soonest first), every ClusterIssuer Ready (runbook 11.1, 4.1, 4.2, 11.7)."""
    cfg = check_settings(ctx, "cert-health", CertChecks)
    kube = ctx.require_kube()
    certs, issuers = await asyncio.gather(kube.list(CM, "certificates"), kube.list(CM, "clusterissuers"))
    now = datetime.now(timezone.utc)
    findings: list[Finding] = []
    for issuer in issuers:
        name = issuer["metadata"]["name"]
        cond = condition(issuer, "Ready")
        if cond is None or cond.get("status") != "True":
            findings.append(Finding(status=Status.crit, target=f"clusterissuer/{name}",
                                    summary=f"Ready={(cond or {}).get('status', 'missing')}: "
                                            f"{_first_line((cond or {}).get('message', ''))}",
                                    details=(cond or {}).get("message", ""), next_step=ISSUER_STEP))
    not_ready = []
    unready_refs: list[tuple[str, str]] = []
    expiring: list[tuple[datetime, str]] = []
    soonest: tuple[datetime, str] | None = None
    for cert in certs:
        meta = cert["metadata"]
        ref = f"{meta.get('namespace', '')}/{meta['name']}"
        cond = condition(cert, "Ready")
        if cond is None or cond.get("status") != "True":
            not_ready.append(f"{ref}: {(cond or {}).get('reason', 'no Ready condition')} — "
                             f"{_first_line((cond or {}).get('message', ''))}")
            unready_refs.append((meta.get("namespace", ""), meta["name"]))
        status = cert.get("status") or {}
        not_after = parse_time(status.get("notAfter"))
        if not_after is None:
            continue
        if soonest is None or not_after < soonest[0]:
            soonest = (not_after, ref)
        renewal = parse_time(status.get("renewalTime")) or _renewal_point(cert, not_after)
        overdue = renewal <= now
        if (not_after - now).total_seconds() < cfg.expiring_days * 86400 and overdue:
            expiring.append((not_after, ref))
    if not_ready:
        findings.append(Finding(status=Status.crit if len(not_ready) == len(certs) else Status.warn,
                                target="certificates not Ready",
                                summary=f"{len(not_ready)} of {len(certs)}: {_refs(not_ready)}",
                                details="\n".join(not_ready[:cfg.max_listed]), next_step=NOT_READY_STEP))
        # 4.1's "describe the CertificateRequest": its condition names the cause, the Certificate only the symptom.
        findings.extend(await _request_causes(ctx, kube, unready_refs[:cfg.max_listed],
                                              Status.crit if len(not_ready) == len(certs) else Status.warn,
                                              {(c["metadata"].get("namespace", ""), c["metadata"]["name"]): c for c in certs},
                                              {i["metadata"]["name"]: i for i in issuers}))
    expiring.sort()
    for not_after, ref in expiring[:cfg.max_listed]:
        days = (not_after - now).total_seconds() / 86400
        findings.append(Finding(
            status=Status.crit if days < cfg.critical_days else Status.warn, target=f"certificate/{ref}",
            summary=(f"expired {-days:.0f} days ago" if days < 0 else f"expires in {days:.0f} days")
            + f" ({not_after:%Y-%m-%d}), renewal overdue", next_step=EXPIRY_STEP,
            # 11.7's manual renewal, proposed for approval.
            actions=[SuggestedAction(action="reissue-certificate", params=dict(zip(
                ("namespace", "certificate"), ref.split("/", 1))))]))
    if len(expiring) > cfg.max_listed:
        findings.append(Finding(status=Status.warn, target="certificates expiring",
                                summary=f"{len(expiring) - cfg.max_listed} more expiring", next_step=EXPIRY_STEP))
    ready = len(certs) - len(not_ready)
    head = f"{ready}/{len(certs)} certificates Ready, {len(issuers)} ClusterIssuer(s)"
    if soonest is not None:
        head += f"; soonest expiry {soonest[1]} in {(soonest[0] - now).total_seconds() / 86400:.0f} days"
    findings.insert(0, Finding(status=Status.ok, target="certificates", summary=head))
    return findings


# The runbook's listed causes (4.1), recognised in the CertificateRequest's condition message.
ROLE_CAUSE = "the Vault PKI role does not allow the requested DNS name"
SEALED_CAUSE = "Vault is sealed"
ISSUER_CAUSE = "ClusterIssuer not ready"
TOKEN_CAUSE = "the issuer's ServiceAccount token expired or was invalidated"
REQUEST_CAUSES = (
    (re.compile(r"not allowed by this role", re.I), ROLE_CAUSE,
     "4.1 step 3: vault read pki_int/roles/<DOMAIN_DOT>; allowed_domains/allow_subdomains must cover the name"),
    (re.compile(r"Vault is sealed", re.I), SEALED_CAUSE, "5.1: unseal Vault, then 5.2 step 5"),
    (re.compile(r"issuer does not have a Ready status condition|Referenced \"?ClusterIssuer\"? not found|"
                r"issuer .* is not ready", re.I), ISSUER_CAUSE,
     "4.1 step 2 / 4.2: kubectl get clusterissuer vault-issuer -o yaml; run /sop cert-issuer"),
    (TOKEN_RX := re.compile(r"service account unauthorized|deleted or recreated with a new token|token has expired|"
                            r"service account token.*expired", re.I), TOKEN_CAUSE,
     TOKEN_STEP := ("4.1 step 4: kubectl -n cert-manager delete secret vault-issuer-token; kubectl create token "
                    "vault-issuer -n cert-manager --duration=8760h; then force the re-issue (4.1 step 5)")),
    (re.compile(r"permission denied|service account.*(expired|invalid)|token.*expired", re.I),
     "cert-manager cannot log in to Vault (ServiceAccount token or Kubernetes auth role)",
     "4.1 step 4 / 5.5: check the vault-issuer token and Vault's Kubernetes auth role"),
)


async def _request_causes(ctx: HandlerContext, kube: KubeClient, refs: list[tuple[str, str]], status: Status,
                          certs: dict[tuple[str, str], dict], issuers: dict[str, dict]) -> list[Finding]:
    """For each not-Ready Certificate, its newest CertificateRequest's failing condition, named
    as a runbook cause when it matches one, with the evidence of that cause as it is now (the PKI
    role's allowed domains, Vault's seal, the issuer's condition); when the cause is gone, the
    re-issue (4.1 step 5) is proposed."""
    findings: list[Finding] = []
    by_ns: dict[str, list[str]] = {}
    for ns, name in refs:
        by_ns.setdefault(ns, []).append(name)
    for ns, names in by_ns.items():
        requests = await kube.list(CM, "certificaterequests", ns)
        for name in names:
            mine = [r for r in requests
                    if (r["metadata"].get("annotations") or {}).get("cert-manager.io/certificate-name") == name]
            if not mine:
                continue
            newest = max(mine, key=lambda r: int((r["metadata"].get("annotations") or {})
                                                 .get("cert-manager.io/certificate-revision", "0") or 0))
            failing = next((c for c in (newest.get("status") or {}).get("conditions") or []
                            if (c.get("type") in ("Denied", "InvalidRequest") and c.get("status") == "True")
                            or (c.get("type") == "Ready" and c.get("status") == "False")), None)
            if failing is None:
                continue
            message = failing.get("message", "")
            cause, step = next(((c, st) for rx, c, st in REQUEST_CAUSES if rx.search(message)),
                               ("CertificateRequest failing", NOT_READY_STEP))
            issuer = issuers.get(((newest.get("spec") or {}).get("issuerRef") or {}).get("name", ""))
            now_text, fixed = await _cause_now(ctx, cause, certs.get((ns, name)) or {}, issuer)
            findings.append(Finding(
                status=status, target=f"certificate/{ns}/{name}",
                summary=f"{cause}: certificaterequest/{newest['metadata']['name']} "
                        f"{failing.get('type')}={failing.get('status')} ({failing.get('reason', '')}): {_first_line(message)}"
                        + (f"; now: {now_text}" if now_text else ""),
                details=message, next_step="4.1 step 5: the cause is gone: force the re-issue" if fixed else step,
                actions=[SuggestedAction(action="reissue-certificate", params={"namespace": ns, "certificate": name})]
                if fixed else [SuggestedAction(action="recreate-issuer-token", params={"issuer": issuer["metadata"]["name"]})]
                if cause == TOKEN_CAUSE and issuer is not None and _token_secret_ref(issuer) else []))
    return findings


async def _cause_now(ctx: HandlerContext, cause: str, cert: dict, issuer: dict | None) -> tuple[str, bool]:
    """What the named cause looks like now, and whether it is gone (then re-issuing helps)."""
    pool = ctx.vault
    if cause == SEALED_CAUSE and pool is not None and pool.addrs:
        sealed, read = 0, 0
        for addr in pool.addrs:
            try:
                sealed += bool((await pool.seal_status(addr)).get("sealed", True))
                read += 1
            except SourceError:
                continue
        if not read:
            return "no Vault replica answers", False
        return f"{sealed} of {read} Vault replicas sealed", sealed == 0
    if cause == ISSUER_CAUSE and issuer is not None:
        cond = condition(issuer, "Ready") or {}
        ready = cond.get("status") == "True"
        return (f"clusterissuer/{issuer['metadata']['name']} Ready={cond.get('status', 'missing')} "
                f"({cond.get('reason', '')}): {_first_line(cond.get('message', ''))}"), ready
    if cause == ROLE_CAUSE and issuer is not None and pool is not None and pool.has_token:
        path = str((((issuer.get("spec") or {}).get("vault") or {}).get("path")) or "")
        mount, _, rest = path.partition("/")
        role = rest.split("/", 1)[1] if rest.startswith("sign/") and "/" in rest else ""
        if not role:
            return "", False
        try:
            data = await pool.read_data(f"{mount}/roles/{role}")
        except SourceError as exc:
            return f"Vault role {mount}/roles/{role} not read ({exc.reason})", False
        if data is None:
            return f"Vault role {mount}/roles/{role} does not exist", False
        names = list((cert.get("spec") or {}).get("dnsNames") or [])
        denied = [n for n in names if not _role_allows(data, n)]
        allowed = (f"Vault role {mount}/roles/{role} allowed_domains {data.get('allowed_domains') or []} "
                   f"(allow_subdomains {str(bool(data.get('allow_subdomains'))).lower()}, "
                   f"allow_bare_domains {str(bool(data.get('allow_bare_domains'))).lower()})")
        if denied:
            return f"{allowed} does not cover {', '.join(denied)}", False
        return f"{allowed} covers {', '.join(names)}", bool(names)
    return "", False


def _role_allows(role: dict, name: str) -> bool:
    """Vault PKI's name check for one DNS name (allow_any_name, bare domains, subdomains, globs)."""
    import fnmatch

    if role.get("allow_any_name"):
        return True
    name = name.lower().rstrip(".")
    for domain in role.get("allowed_domains") or []:
        domain = str(domain).lower()
        if name == domain and role.get("allow_bare_domains"):
            return True
        if role.get("allow_subdomains") and name.endswith("." + domain.removeprefix("*.")):
            return True
        if role.get("allow_glob_domains") and "*" in domain and fnmatch.fnmatchcase(name, domain):
            return True
    return False


def _renewal_point(cert: dict, not_after: datetime) -> datetime:
    """When cert-manager renews without a renewalTime in the status: notAfter - renewBefore, where
    renewBefore defaults to 1/3 of the lifetime (11.7: "when 2/3 of their lifetime has passed")."""
    not_before = parse_time((cert.get("status") or {}).get("notBefore"))
    before = _go_duration((cert.get("spec") or {}).get("renewBefore") or "")
    if before is None:
        before = (not_after - not_before) / 3 if not_before else timedelta(days=10)
    return not_after - before


def _go_duration(text: str) -> timedelta | None:
    """"240h0m0s" → 10 days; None when empty or not a duration."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", text.strip())
    if not text.strip() or m is None:
        return None
    h, mi, sec = m.groups()
    return timedelta(hours=int(h or 0), minutes=int(mi or 0), seconds=float(sec or 0))


def _first_line(text: str) -> str:
    """One line; cert-manager nests its errors, the cause (e.g. "* Vault is sealed") comes last,
    so a long message keeps its head and its tail."""
    text = " ".join(text.split())
    return text if len(text) <= 200 else f"{text[:80]} … {text[-110:]}"


def _tail(text: str, size: int = 100) -> str:
    """The last words of a message (cert-manager puts the cause last), cut at a word."""
    text = " ".join(text.split())
    return text if len(text) <= size else text[-size:].split(" ", 1)[-1]


def _refs(lines: list[str], limit: int = 3) -> str:
    names = [line.split(":", 1)[0] for line in lines]
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


# -- 4.5 TLS handshake: what clients are served through the LB IP --------------------------------
GATEWAY = "gateway.networking.k8s.io/v1"
TRAEFIK = "traefik.io/v1alpha1"
DEFAULT_CERT_STEP = ("4.5: Traefik serves its own TRAEFIK DEFAULT CERT: check the Gateway's TLS config "
                     "(listener certificateRefs name the TLS secret) and the TLSStore default certificate "
                     "(kubectl get tlsstore default -n kube-system -o yaml)")
GATEWAY_TLS_STEP = ("4.5: the Gateway's listener tls.certificateRefs must name the actual TLS secret "
                    "(kubectl get gateway -n {ns} {name} -o yaml | grep -A 10 'tls:'; kubectl get secret -n {ns} <name>)")
TLSSTORE_STEP = ("4.5: apply the TLSStore that makes the Vault-issued wildcard Traefik's default certificate "
                 "(services/monitoring-stack/kube-system/traefik-default-tlsstore.yaml)")
UNTRUSTED_STEP = ("4.5: clients must trust the Vault Root CA: import it into the client trust store (cluster/root-ca.pem "
                  "or credentials.txt); if the root was rotated, redistribute it (4.4 step 3c)")
SERVED_EXPIRED_STEP = "4.5 flowchart: expired certificate served — delete the TLS secret to force a re-issue (11.7)"


class TlsStoreSpec(BaseModel):
    """The TLSStore the runbook applies (traefik-default-tlsstore.yaml), from the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = "kube-system"
    name: str = "default"
    secret: str | None = Field(None, description="the wildcard TLS secret Traefik serves by default, e.g. "
                                                 "wildcard-example-com-tls; unset: the apply action is not offered")


class TlsChecks(BaseModel):
    """``checks.tls-handshake`` in the config."""

    model_config = ConfigDict(extra="forbid")
    root_ca_namespace: str = Field("cert-manager", description="namespace of the root CA ConfigMap clients are given")
    root_ca_configmap: str = Field("vault-root-ca", description="the ConfigMap distribute_root_ca writes")
    root_ca_key: str = "ca.crt"
    port: int = Field(443, description="Traefik's websecure port on the LB IP")
    warn_days: float = Field(7, ge=0, description="a served certificate closer than this to notAfter: warn")
    max_hosts: int = Field(60, ge=1, description="hosts probed per run at most")
    tlsstore: TlsStoreSpec = Field(default_factory=TlsStoreSpec)


@sop("tls-handshake", title="TLS handshake through the LB IP: served certificate, chain, TLSStore default",
     sections=("4.5",), severity=Severity.P2,
     causes=("serves TRAEFIK DEFAULT CERT", "Gateway TLS configuration is incorrect",
             "TLSStore default certificate is not configured", "client does not trust the Vault Root CA",
             "serves an expired certificate"))
async def tls_handshake(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """Connect to every Gateway/HTTPRoute host through Traefik's LB IP with its name as SNI (runbook
    4.5's ``openssl s_client``): the certificate served (TRAEFIK DEFAULT CERT, expiry, name), its chain
    against the root CA ConfigMap, each listener's certificateRef, and the TLSStore default certificate."""
    from handlers.networking import TraefikChecks

    cfg = check_settings(ctx, "tls-handshake", TlsChecks)
    lb_cfg = check_settings(ctx, "traefik-lb", TraefikChecks)
    kube = ctx.require_kube()
    gateways, routes, stores, certs = await asyncio.gather(
        kube.list(GATEWAY, "gateways"), kube.list(GATEWAY, "httproutes"), _tlsstores(kube),
        kube.list(CM, "certificates"))
    findings: list[Finding] = []
    root_pem, missing = await _root_ca(kube, cfg)
    if missing:
        findings.append(missing)
    store_finding, default_ok = _tlsstore_finding(stores, certs, cfg)
    findings.append(store_finding)
    try:
        svc = await kube.get("v1", "services", lb_cfg.service, lb_cfg.namespace)
    except SourceError as exc:
        return findings + [Finding(status=Status.unknown, target=f"svc/{lb_cfg.namespace}/{lb_cfg.service}",
                                   summary=f"no LB IP to probe: {exc.reason}")]
    ips = [i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [] if i.get("ip")]
    if not ips:
        return findings + [Finding(status=Status.unknown, target=f"svc/{lb_cfg.namespace}/{lb_cfg.service}",
                                   summary="no LB IP to probe (EXTERNAL-IP pending: run traefik-lb, 3.3)")]
    hosts = _hosts(gateways, routes)
    listed = sorted(hosts)[:cfg.max_hosts]
    sem = asyncio.Semaphore(8)

    async def one(host: str) -> Finding:
        async with sem:
            result, failed = await ctx.attempt(ctx.tls_probe(ips[0], cfg.port, sni=host, ca_pem=root_pem or None),
                                               f"https://{host}")
        if failed is not None:
            return failed
        return _served_finding(host, result, hosts[host], certs, default_ok, cfg, root_pem)

    served = await asyncio.gather(*(one(h) for h in listed))
    bad = [f for f in served if f.status is not Status.ok]
    # One source failure for every host (no probes configured, the LB IP out of range) is one line.
    unknown = {f.summary for f in bad if f.status is Status.unknown}
    if len(bad) > 1 and len(unknown) == 1 and all(f.status is Status.unknown for f in bad):
        bad = [Finding(status=Status.unknown, target=f"{ips[0]}:{cfg.port}",
                       summary=f"{unknown.pop()} (all {len(bad)} hosts)")]
    findings.extend(bad)
    good = [f for f in served if f.status is Status.ok]
    if good:
        findings.append(Finding(status=Status.ok, target=f"{ips[0]}:{cfg.port}",
                                summary=f"{len(good)} of {len(listed)} hosts serve their own Vault-issued certificate"
                                        + (" that verifies against the root CA" if root_pem else ""),
                                details="\n".join(f.summary for f in good)))
    return findings


async def _tlsstores(kube: KubeClient) -> list[dict]:
    try:
        return await kube.list(TRAEFIK, "tlsstores")
    except SourceError as exc:
        if exc.status == 404:  # CRD not installed: no TLSStore at all
            return []
        raise


async def _root_ca(kube: KubeClient, cfg: TlsChecks) -> tuple[str, Finding | None]:
    target = f"configmap/{cfg.root_ca_namespace}/{cfg.root_ca_configmap}"
    try:
        cm = await kube.get("v1", "configmaps", cfg.root_ca_configmap, cfg.root_ca_namespace)
    except SourceError as exc:
        why = "missing" if exc.status == 404 else exc.reason
        return "", Finding(status=Status.unknown, target=target,
                           summary=f"root CA ConfigMap {why}: served chains not checked against the root CA")
    pem = str((cm.get("data") or {}).get(cfg.root_ca_key) or "")
    if "BEGIN CERTIFICATE" not in pem:
        return "", Finding(status=Status.unknown, target=target,
                           summary=f"no PEM under {cfg.root_ca_key}: served chains not checked against the root CA")
    return pem, None


def _tlsstore_finding(stores: list[dict], certs: list[dict], cfg: TlsChecks) -> tuple[Finding, bool]:
    """The TLSStore ``default``: present, naming a secret a Ready Certificate fills."""
    spec = cfg.tlsstore
    target = f"tlsstore/{spec.namespace}/{spec.name}"
    action = [SuggestedAction(action="apply-tlsstore")] if spec.secret else []
    store = next((s for s in stores if s["metadata"]["name"] == spec.name
                  and s["metadata"].get("namespace") == spec.namespace), None)
    secret = (((store or {}).get("spec") or {}).get("defaultCertificate") or {}).get("secretName")
    if not secret:
        what = "does not exist" if store is None else "has no defaultCertificate.secretName"
        return Finding(status=Status.warn, target=target,
                       summary=f"TLSStore default certificate is not configured: {target} {what}; names without "
                               "a certificate of their own get Traefik's self-signed TRAEFIK DEFAULT CERT",
                       next_step=TLSSTORE_STEP, actions=action), False
    filled = [c for c in certs if c["metadata"].get("namespace") == spec.namespace
              and (c.get("spec") or {}).get("secretName") == secret]
    if not filled:
        return Finding(status=Status.warn, target=target,
                       summary=f"TLSStore default certificate is not configured: it names Secret {secret}, which no "
                               f"Certificate in {spec.namespace} fills", next_step=TLSSTORE_STEP), False
    ready = (condition(filled[0], "Ready") or {}).get("status") == "True"
    return Finding(status=Status.ok if ready else Status.warn, target=target,
                   summary=f"default certificate {spec.namespace}/{secret} (Certificate {filled[0]['metadata']['name']} "
                           f"Ready={'True' if ready else 'False'})", next_step="" if ready else NOT_READY_STEP), True


def _hosts(gateways: list[dict], routes: list[dict]) -> dict[str, list[tuple[dict, dict]]]:
    """Host name → the (Gateway, HTTPS listener) pairs that should serve it: listener hostnames,
    and the hostnames of HTTPRoutes attached to a Gateway (wildcards are not probed)."""
    by_key = {(g["metadata"].get("namespace", ""), g["metadata"]["name"]): g for g in gateways}
    out: dict[str, list[tuple[dict, dict]]] = {}

    def https(gw: dict, section: str | None) -> list[dict]:
        return [ls for ls in (gw.get("spec") or {}).get("listeners") or []
                if ls.get("protocol") == "HTTPS" and section in (None, ls.get("name"))]

    for gw in gateways:
        for ls in https(gw, None):
            host = ls.get("hostname")
            if host and "*" not in host:
                out.setdefault(host.lower(), []).append((gw, ls))
    for route in routes:
        ns = route["metadata"].get("namespace", "")
        for ref in (route.get("spec") or {}).get("parentRefs") or []:
            gw = by_key.get((ref.get("namespace") or ns, ref.get("name", "")))
            if gw is None:
                continue
            for host in (route.get("spec") or {}).get("hostnames") or []:
                if "*" in host:
                    continue
                pairs = out.setdefault(host.lower(), [])
                for ls in https(gw, ref.get("sectionName")):
                    if (gw, ls) not in pairs:
                        pairs.append((gw, ls))
    return {h: p for h, p in out.items() if p}


def _listener_problem(gw: dict, ls: dict, certs: list[dict]) -> tuple[str, bool]:
    """Why a listener's certificate cannot be served: its ResolvedRefs condition (Traefik sets it
    False, InvalidCertificateRef, when the Secret is missing or not a TLS secret), else no
    Certificate filling the Secret it names (the Secret itself is not read; a hand-made Secret has
    none, so that one only counts as evidence when the wrong certificate is served).
    ``(problem, definite)``; ``("", False)`` when none."""
    refs = [r.get("name", "") for r in (ls.get("tls") or {}).get("certificateRefs") or []]
    if not refs:
        return f"listener {ls.get('name')} has no tls.certificateRefs", True
    status = next((s for s in (gw.get("status") or {}).get("listeners") or [] if s.get("name") == ls.get("name")), {})
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "ResolvedRefs"), None)
    if cond is not None and cond.get("status") == "False":
        return (f"listener {ls.get('name')} certificateRef {', '.join(refs)}: ResolvedRefs=False "
                f"({cond.get('reason', '')}): {_first_line(cond.get('message', ''))}"), True
    ns = gw["metadata"].get("namespace", "")
    if not any(c["metadata"].get("namespace") == ns and (c.get("spec") or {}).get("secretName") in refs for c in certs):
        return f"listener {ls.get('name')} certificateRef {', '.join(refs)}: no Certificate in {ns} fills that Secret", False
    return "", False


def _served_finding(host: str, result: TlsResult, pairs: list[tuple[dict, dict]], certs: list[dict],
                    default_ok: bool, cfg: TlsChecks, root_pem: str) -> Finding:
    leaf = result.leaf
    gw, ls = pairs[0]
    gw_ref = f"gateway/{gw['metadata'].get('namespace', '')}/{gw['metadata']['name']}"
    seen = (f"subject CN={leaf.subject_cn}, issuer CN={leaf.issuer_cn}, notAfter {leaf.not_after:%Y-%m-%d}")
    found = [_listener_problem(g, listener, certs) for g, listener in pairs]
    problems = [p for p, definite in found if p and definite]
    evidence = [p for p, _ in found if p]  # with the Certificate-less refs, when the wrong certificate is served
    step = GATEWAY_TLS_STEP.format(ns=gw["metadata"].get("namespace", ""), name=gw["metadata"]["name"])
    if leaf.traefik_default:
        why = "; ".join(evidence) or "no certificate loaded for this name"
        if not default_ok:
            why += "; and the TLSStore default certificate is not configured"
        return Finding(status=Status.crit, target=f"https://{host}",
                       summary=f"serves TRAEFIK DEFAULT CERT (self-signed, {seen}): {why}",
                       details=f"{gw_ref}: {why}", next_step=DEFAULT_CERT_STEP)
    if problems:
        return Finding(status=Status.warn, target=f"https://{host}",
                       summary=f"Gateway TLS configuration is incorrect: {gw_ref} {'; '.join(problems)}; Traefik "
                               f"serves its default certificate instead ({seen})", next_step=step)
    days = leaf.days_left()
    secret = next((r.get("name") for r in (ls.get("tls") or {}).get("certificateRefs") or []), "")
    owner = next((c for c in certs if c["metadata"].get("namespace") == gw["metadata"].get("namespace")
                  and (c.get("spec") or {}).get("secretName") == secret), None)
    reissue = [SuggestedAction(action="reissue-certificate", params={
        "namespace": owner["metadata"]["namespace"], "certificate": owner["metadata"]["name"]})] if owner else []
    if days < 0:
        return Finding(status=Status.crit, target=f"https://{host}",
                       summary=f"serves an expired certificate: expired {-days:.0f} days ago ({seen})",
                       next_step=SERVED_EXPIRED_STEP, actions=reissue)
    if not leaf.matches(host):
        return Finding(status=Status.crit, target=f"https://{host}",
                       summary=f"serves a certificate for other names ({', '.join(leaf.sans) or leaf.subject_cn}; {seen})"
                               + (f": {'; '.join(evidence)}" if evidence else ""), next_step=step)
    if result.verified is False:
        return Finding(status=Status.crit, target=f"https://{host}",
                       summary=f"client does not trust the Vault Root CA: the served chain does not verify against "
                               f"configmap/{cfg.root_ca_namespace}/{cfg.root_ca_configmap} ({result.verify_error}; {seen})",
                       next_step=UNTRUSTED_STEP)
    if days < cfg.warn_days:
        return Finding(status=Status.warn, target=f"https://{host}",
                       summary=f"serves a certificate expiring in {days:.0f} days ({seen})",
                       next_step=EXPIRY_STEP, actions=reissue)
    return Finding(status=Status.ok, target=f"https://{host}", summary=f"{host}: {seen}")


class TlsStoreParams(ActionParams):
    """No arguments: the object comes from ``checks.tls-handshake.tlsstore`` in the config."""


@remediation_action
class ApplyTlsStore(Action[TlsStoreParams]):
    name = "apply-tlsstore"
    title = "Apply the TLSStore default certificate from the config"
    section = "4.5"
    step = "Apply TLSStore if missing (traefik-default-tlsstore.yaml)"
    risk = Risk.low
    params = TlsStoreParams
    changes = "creates (or sets spec.defaultCertificate of) the TLSStore Traefik serves for names without a certificate"

    def _spec(self, env: ActionEnv) -> TlsStoreSpec:
        return check_settings(env.ctx, "tls-handshake", TlsChecks).tlsstore

    def _object(self, spec: TlsStoreSpec) -> dict:
        return {"apiVersion": TRAEFIK, "kind": "TLSStore", "metadata": {"name": spec.name, "namespace": spec.namespace},
                "spec": {"defaultCertificate": {"secretName": spec.secret}}}

    async def plan(self, env: ActionEnv, p: TlsStoreParams) -> Plan:
        spec = self._spec(env)
        runbook = ["kubectl apply -f services/monitoring-stack/kube-system/traefik-default-tlsstore.yaml",
                   f"kubectl get tlsstore {spec.name} -n {spec.namespace} -o yaml"]
        if not spec.secret:
            return Plan(blocked="checks.tls-handshake.tlsstore.secret is not set: the bot does not invent the "
                                "default certificate's Secret", runbook=runbook)
        kube = env.ctx.require_kube()
        obj = self._object(spec)
        preview = "```yaml\n" + _yaml(obj) + "```"
        try:
            current = await kube.get(TRAEFIK, "tlsstores", spec.name, spec.namespace)
        except SourceError as exc:
            if exc.status != 404:
                raise
            await kube.create(TRAEFIK, "tlsstores", obj, spec.namespace, dry_run=True)
            return Plan(operations=[f"CREATE {TRAEFIK} tlsstores {spec.namespace}/{spec.name}"],
                        preview="The API server accepted creating (dry run):\n" + preview, dry_run=True,
                        state=fingerprint(["absent"]), state_text="TLSStore absent", runbook=runbook)
        have = ((current.get("spec") or {}).get("defaultCertificate") or {}).get("secretName")
        if have == spec.secret:
            return Plan(nothing_to_do=f"TLSStore {spec.namespace}/{spec.name} already serves {have}", runbook=runbook)
        patch = {"spec": {"defaultCertificate": {"secretName": spec.secret}}}
        await kube.patch(TRAEFIK, "tlsstores", spec.name, patch, spec.namespace, dry_run=True)
        return Plan(operations=[f"PATCH {TRAEFIK} tlsstores {spec.namespace}/{spec.name}: spec.defaultCertificate"],
                    preview=f"defaultCertificate {have or '(unset)'} → {spec.secret}; the API server accepted the "
                            "patch (dry run):\n" + preview, dry_run=True,
                    state=fingerprint([current["metadata"].get("resourceVersion")]),
                    state_text=f"TLSStore resourceVersion {current['metadata'].get('resourceVersion')}", runbook=runbook)

    async def run(self, env: ActionEnv, p: TlsStoreParams) -> Outcome:
        spec = self._spec(env)
        kube = env.ctx.require_kube()
        try:
            await kube.get(TRAEFIK, "tlsstores", spec.name, spec.namespace)
        except SourceError as exc:
            if exc.status != 404:
                raise
            await kube.create(TRAEFIK, "tlsstores", self._object(spec), spec.namespace)
            return Outcome(ok=True, summary=f"created TLSStore {spec.namespace}/{spec.name} → {spec.secret}")
        await kube.patch(TRAEFIK, "tlsstores", spec.name, {"spec": {"defaultCertificate": {"secretName": spec.secret}}},
                         spec.namespace)
        return Outcome(ok=True, summary=f"set TLSStore {spec.namespace}/{spec.name} defaultCertificate to {spec.secret}")


def _yaml(obj: dict) -> str:
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


# -- 4.2 ClusterIssuer not Ready: the issuer's own path to Vault, checked step by step ------------
VAULT_REACH_STEP = ("4.2: Vault must answer at the issuer's spec.vault.server from cert-manager's namespace "
                    "(kubectl run vault-test -n cert-manager --image=curlimages/curl … /v1/sys/health); "
                    "check the vault pods and Service (5.1)")
SEALED_STEP = "4.2 step 1: unseal Vault (5.1, 5.2 step 3), then the issuer recovers on its own"
AUTH_METHOD_STEP = "4.2 step 2: vault auth list | grep kubernetes — enable and configure it (5.5 step 1)"
ROLE_STEP = ("4.2 step 3: vault read auth/{mount}/role/{role} — recreate it bound to {ns}/{sa} "
             "(vault write auth/{mount}/role/{role} bound_service_account_names={sa} "
             "bound_service_account_namespaces={ns} policies=cert-manager)")
SA_STEP = "4.2 steps 4–5: kubectl get sa {sa} -n {ns}; if missing: kubectl apply -f services/cert-manager/rbac.yaml"
PKI_STEP = "4.2 / 5.4 step 1: the PKI engine {mount} is not mounted: re-enable it, import the intermediate, recreate the role"
LOGIN_STEP = ("4.2 escalation: Vault is unsealed and Kubernetes auth is configured but the login fails: check the "
              "auth config's kubernetes_host and CA (5.5 step 1), then escalate with cert-manager's logs")


class IssuerChecks(BaseModel):
    """``checks.cert-issuer`` in the config."""

    model_config = ConfigDict(extra="forbid")
    namespace: str = Field("cert-manager", description="cert-manager's namespace (--cluster-resource-namespace): "
                                                       "where the issuer's ServiceAccount lives")
    login_test: bool = Field(False, description="log in to Vault as the issuer does, with a fresh 10-minute "
                                                "TokenRequest token of its ServiceAccount (needs the chart's "
                                                "vaultLoginTest RBAC: create serviceaccounts/token on that one SA)")
    token_seconds: int = Field(600, ge=600, le=3600, description="lifetime of the login test's token")


@sop("cert-issuer", title="ClusterIssuer to Vault: reachable, unsealed, Kubernetes auth, role, ServiceAccount, PKI, login",
     sections=("4.2",), severity=Severity.P1, alerts=("ClusterIssuerNotReady",),
     causes=("Vault is sealed", "Vault not reachable", "Kubernetes auth not configured in Vault",
             "ServiceAccount vault-issuer missing", "role not bound to the issuer's ServiceAccount",
             "Vault PKI engine not mounted", "login refused",
             "the issuer's ServiceAccount token expired or was invalidated"))
async def cert_issuer(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """For each Vault ClusterIssuer, what it needs, read from its own spec (runbook 4.2): Vault
    answering at spec.vault.server (a probe of /v1/sys/health), unsealed, the Kubernetes auth
    method at its mountPath, its role bound to its ServiceAccount, that ServiceAccount, the PKI
    mount of its signing path, and optionally a real login with a fresh token, as cert-manager does."""
    cfg = check_settings(ctx, "cert-issuer", IssuerChecks)
    kube = ctx.require_kube()
    issuers = [i for i in await kube.list(CM, "clusterissuers") if ((i.get("spec") or {}).get("vault"))]
    if not issuers:
        return [Finding(status=Status.ok, target="clusterissuers", summary="no Vault ClusterIssuer")]
    findings: list[Finding] = []
    for issuer in issuers:
        findings.extend(await _issuer(ctx, kube, issuer, cfg))
    return findings


async def _issuer(ctx: HandlerContext, kube: KubeClient, issuer: dict, cfg: IssuerChecks) -> list[Finding]:
    name = issuer["metadata"]["name"]
    spec = issuer["spec"]["vault"]
    target = f"clusterissuer/{name}"
    k8s_auth = (spec.get("auth") or {}).get("kubernetes") or {}
    mount = str(k8s_auth.get("mountPath") or "/v1/auth/kubernetes").strip("/").removeprefix("v1/").removeprefix("auth/")
    role = str(k8s_auth.get("role") or "")
    sa = str((k8s_auth.get("serviceAccountRef") or {}).get("name") or "")
    pki_mount = str(spec.get("path") or "").split("/", 1)[0]
    cond = condition(issuer, "Ready") or {}
    ready = cond.get("status") == "True"
    out: list[Finding] = []
    # 1. Vault reachable at the server the issuer uses (probe: a target from the object, in range).
    server = str(spec.get("server") or "").rstrip("/")
    health, failed = await ctx.attempt(ctx.http_probe(f"{server}/v1/sys/health?standbyok=true"), f"{target} vault")
    if failed is not None:
        unreachable = "refused" in failed.summary or "timed out" in failed.summary or "resolve" in failed.summary
        out.append(Finding(status=Status.crit if unreachable else Status.unknown, target=f"{target} vault",
                           summary=(f"Vault not reachable at {server}: " if unreachable else "") + failed.summary,
                           next_step=VAULT_REACH_STEP if unreachable else ""))
        # Not probed (no probes configured, out of range): the replicas' own seal status still tells.
        sealed = None if unreachable else await _replicas_sealed(ctx)
        if sealed:
            out.append(Finding(status=Status.crit, target=f"{target} vault",
                               summary="Vault is sealed: every replica reports Sealed=true", next_step=SEALED_STEP,
                               actions=[SuggestedAction(action="vault-unseal")]))
    else:
        sealed = health.status == 503 or '"sealed":true' in health.body.replace(" ", "")
        if sealed:
            out.append(Finding(status=Status.crit, target=f"{target} vault",
                               summary=f"Vault is sealed: {server}/v1/sys/health answered {health.status}",
                               next_step=SEALED_STEP, actions=[SuggestedAction(action="vault-unseal")]))
        elif health.status >= 500:
            out.append(Finding(status=Status.crit, target=f"{target} vault",
                               summary=f"Vault at {server} answered {health.status} {health.reason}", next_step=VAULT_REACH_STEP))
    # 2. The ServiceAccount the issuer logs in with (metadata read, no token).
    if sa:
        try:
            await kube.get("v1", "serviceaccounts", sa, cfg.namespace)
        except SourceError as exc:
            out.append(Finding(status=Status.crit if exc.status == 404 else Status.unknown,
                               target=f"serviceaccount/{cfg.namespace}/{sa}",
                               summary=("ServiceAccount vault-issuer missing" if sa == "vault-issuer" else f"ServiceAccount {sa} missing")
                               + f" in {cfg.namespace}: the issuer has no token to log in with" if exc.status == 404 else exc.reason,
                               next_step=SA_STEP.format(sa=sa, ns=cfg.namespace) if exc.status == 404 else ""))
            sa_missing = exc.status == 404
        else:
            sa_missing = False
    else:
        sa_missing = False
    # 2b. A long-lived token Secret instead (4.1 step 4): its data is never read; the issuer's
    # condition says whether Vault still accepts it.
    token_secret = _token_secret_ref(issuer)
    if token_secret and not ready and TOKEN_RX.search(cond.get("message", "")):
        out.append(Finding(status=Status.crit, target=f"secret/{cfg.namespace}/{token_secret}",
                           summary=f"{TOKEN_CAUSE}: the issuer logs in with the token in Secret {token_secret}, which "
                                   f"Vault's TokenReview refuses (… {_tail(cond.get('message', ''))})",
                           next_step=TOKEN_STEP,
                           actions=[SuggestedAction(action="recreate-issuer-token", params={"issuer": name})]))
    # 3. Vault's side: auth method, role binding, PKI mount (token reads; not while sealed).
    pool = ctx.vault
    if sealed is False and pool is not None and pool.has_token:
        out.extend(await _vault_side(pool, target, mount, role, sa, cfg.namespace, pki_mount))
    elif sealed is False and (pool is None or not pool.has_token):
        out.append(Finding(status=Status.unknown, target=f"{target} vault",
                           summary="no Vault token configured (vault.token): auth method, role and PKI mount not read"))
    # 4. A real login, as cert-manager does it.
    if cfg.login_test and sealed is False and role and sa and not sa_missing and pool is not None:
        out.append(await _login_test(ctx, kube, pool, target, mount, role, sa, cfg))
    if not cfg.login_test and sealed is False and role and sa:
        out.append(Finding(status=Status.ok, target=f"vault auth/{mount}/login",
                           summary="login not tested (checks.cert-issuer.login_test is off)"))
    problems = [f for f in out if f.status is not Status.ok]
    if not ready:
        out.insert(0, Finding(status=Status.crit, target=target,
                              summary=f"Ready={cond.get('status', 'missing')} ({cond.get('reason', '')}): "
                                      f"{_first_line(cond.get('message', ''))}"
                                      + ("" if problems else "; every check below passed: escalate with cert-manager's logs"),
                              details=cond.get("message", ""), next_step="" if problems else LOGIN_STEP))
    elif not problems:
        out.append(Finding(status=Status.ok, target=target,
                           summary=f"Ready; Vault {server} reachable and unsealed; auth/{mount} role {role} binds "
                                   f"{cfg.namespace}/{sa}; {pki_mount} mounted"
                                   + ("; login test passed" if cfg.login_test else "")))
    return out


async def _replicas_sealed(ctx: HandlerContext) -> bool | None:
    """True when every replica that answers is sealed, False when one is unsealed, None when none answers."""
    pool = ctx.vault
    states = []
    for addr in (pool.addrs if pool is not None else []):
        try:
            states.append(bool((await pool.seal_status(addr)).get("sealed", True)))
        except SourceError:
            continue
    return all(states) if states else None


async def _vault_side(pool: Any, target: str, mount: str, role: str, sa: str, ns: str, pki_mount: str) -> list[Finding]:
    out: list[Finding] = []
    try:
        methods, engines = await asyncio.gather(pool.auth_mounts(), pool.secret_mounts())
    except SourceError as exc:
        return [Finding(status=Status.unknown, target=f"{target} vault", summary=exc.reason)]
    if methods.get(mount + "/") != "kubernetes":
        out.append(Finding(status=Status.crit, target=f"vault auth/{mount}",
                           summary=f"Kubernetes auth not configured in Vault: no kubernetes auth method at {mount}/ "
                                   f"(enabled: {', '.join(sorted(p.rstrip('/') for p in methods)) or 'none'})",
                           next_step=AUTH_METHOD_STEP))
    elif role:
        try:
            data = await pool.read_data(f"auth/{mount}/role/{role}")
        except SourceError as exc:
            data, error = None, exc
        else:
            error = None
        step = ROLE_STEP.format(mount=mount, role=role, sa=sa, ns=ns)
        if error is not None and error.status != 404:
            out.append(Finding(status=Status.unknown, target=f"vault auth/{mount}/role/{role}", summary=error.reason))
        elif data is None:
            out.append(Finding(status=Status.crit, target=f"vault auth/{mount}/role/{role}",
                               summary=f"role not bound to the issuer's ServiceAccount: role {role} does not exist",
                               next_step=step))
        else:
            names = data.get("bound_service_account_names") or []
            spaces = data.get("bound_service_account_namespaces") or []
            if sa and not ({sa, "*"} & set(names) and {ns, "*"} & set(spaces)):  # no sa: a token Secret, not read
                out.append(Finding(status=Status.crit, target=f"vault auth/{mount}/role/{role}",
                                   summary=f"role not bound to the issuer's ServiceAccount: {role} binds {names} in "
                                           f"{spaces}, not {ns}/{sa}", next_step=step))
    if pki_mount and engines.get(pki_mount + "/") != "pki":
        out.append(Finding(status=Status.crit, target=f"vault {pki_mount}",
                           summary=f"Vault PKI engine not mounted: the issuer signs at {pki_mount}/, which is not a "
                                   "mounted PKI engine", next_step=PKI_STEP.format(mount=pki_mount)))
    return out


async def _login_test(ctx: HandlerContext, kube: KubeClient, pool: Any, target: str, mount: str, role: str,
                      sa: str, cfg: IssuerChecks) -> Finding:
    """A TokenRequest for the issuer's ServiceAccount (never stored or shown), then Vault's
    Kubernetes-auth login with it: the same two calls cert-manager makes."""
    where = f"vault auth/{mount}/login"
    try:
        answer = await kube.create("v1", "serviceaccounts", {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": cfg.token_seconds}}, cfg.namespace, subresource_of=sa, subresource="token")
    except SourceError as exc:
        why = ("not permitted: enable the chart's vaultLoginTest (create serviceaccounts/token on "
               f"{cfg.namespace}/{sa})") if exc.status == 403 else exc.reason
        return Finding(status=Status.unknown, target=where, summary=f"login test: TokenRequest {why}")
    jwt = str(((answer.get("status") or {}).get("token")) or "")
    if not jwt:
        return Finding(status=Status.unknown, target=where, summary="login test: the TokenRequest returned no token")
    try:
        auth = await pool.kubernetes_login(role, jwt, mount=mount)
    except SourceError as exc:
        if exc.status is None:  # no answer from Vault: the login was not tested, not refused
            return Finding(status=Status.unknown, target=where, summary=f"login test: {exc.reason}")
        return Finding(status=Status.crit, target=where,
                       summary=f"login refused for role {role} as {cfg.namespace}/{sa}: {exc.reason}",
                       next_step=ROLE_STEP.format(mount=mount, role=role, sa=sa, ns=cfg.namespace)
                       if "not authorized" in exc.reason or "invalid role" in exc.reason else LOGIN_STEP)
    return Finding(status=Status.ok, target=where,
                   summary=f"login as {cfg.namespace}/{sa} with role {role} succeeded "
                           f"(policies {', '.join(auth.get('policies') or [])})")


# -- 4.4 root CA expiry (4.3's intermediate is vault-pki's); rotation is guidance ----------------
ROTATION_CHECKLIST = (
    "Root CA rotation (runbook 4.4) needs the offline root key and a workstation, so the bot cannot do it:",
    "1. generate the new root CA locally (openssl genrsa 4096; openssl req -x509 -days 5475)",
    "2. sign a new intermediate CSR from Vault with it (4.3 steps 2–4: intermediate/generate/internal, "
    "sign offline, intermediate/set-signed)",
    "3a. push the new root to Harvester (cluster/root-ca.pem, terraform.sh push-secrets)",
    "3b. update the Rancher registries CA bundle (configure_rancher_registries)",
    "3c. update the vault-root-ca ConfigMaps in all namespaces (distribute_root_ca)",
    "3d. distribute the new root CA to clients (browsers, OS trust stores)",
    "4. delete all TLS secrets (kubectl delete secret -A -l cert-manager.io/certificate-name) and watch them reissue",
)


INTERMEDIATE_CHECKLIST = (
    "Intermediate CA rotation (runbook 4.3, 11.7) needs the Root CA key, kept offline, so the bot cannot do it:",
    "1. make the Root CA key available (cd cluster && ./terraform.sh pull-secrets)",
    "2. generate the new intermediate CSR in Vault (vault write -field=csr pki_int/intermediate/generate/internal "
    "common_name=\"Example Org Intermediate CA\" ttl=87600h key_bits=4096)",
    "3. sign it locally with the Root CA (openssl x509 -req … -days 3650, CA:true pathlen:0)",
    "4. import the chain (intermediate + root) into Vault (vault write pki_int/intermediate/set-signed)",
    "5. delete all TLS secrets so cert-manager reissues (kubectl delete secret -A -l cert-manager.io/certificate-name)",
    "6. watch every certificate become Ready again (kubectl get certificates -A -w)",
)


class CaChecks(BaseModel):
    """``checks.ca-expiry`` in the config."""

    model_config = ConfigDict(extra="forbid")
    mount: str = Field("pki_int", description="the PKI mount whose chain ends in the root CA")
    # The runbook's prevention: "Set calendar reminder at year 14" of a 15-year root.
    warn_days: float = Field(365, gt=0, description="a root CA closer than this to notAfter: warn")
    root_ca_namespace: str = "cert-manager"
    root_ca_configmap: str = "vault-root-ca"
    root_ca_key: str = "ca.crt"


@sop("ca-expiry", title="Root CA: expiry, and the root clients are given is Vault's", sections=("4.4", "4.3"),
     severity=Severity.P1, causes=("Root CA approaching expiry", "Root CA expired",
                                   "root CA in the ConfigMap is not the chain's root"))
async def ca_expiry(ctx: HandlerContext, params: NoParams) -> list[Finding]:
    """The root CA at the end of the PKI mount's chain (Vault's ``ca_chain``): expired → crit,
    within a year → warn with 4.4's rotation checklist (guidance: the root key is offline); and the
    root CA ConfigMap clients are given holds that same root (4.4 step 3c). The intermediate's
    dates are vault-pki's (4.3)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cfg = check_settings(ctx, "ca-expiry", CaChecks)
    pool = ctx.vault
    if pool is None or not pool.addrs:
        return [Finding(status=Status.unknown, target="vault", summary="no Vault replica addresses configured")]
    mount = cfg.mount.strip("/")
    try:
        pem = await pool.pki_ca_chain(mount)
    except SourceError as exc:
        return [Finding(status=Status.unknown, target=f"pki/{mount} ca_chain", summary=exc.reason)]
    try:
        chain = x509.load_pem_x509_certificates(pem.encode()) if pem.strip() else []
    except ValueError:
        return [Finding(status=Status.unknown, target=f"pki/{mount} ca_chain", summary="CA chain is not valid PEM")]
    roots = [c for c in chain if c.subject == c.issuer]
    if not roots:
        return [Finding(status=Status.unknown, target=f"pki/{mount} ca_chain",
                        summary="the chain Vault serves holds no self-signed root CA: expiry not checkable")]
    root = roots[-1]
    cn = ", ".join(str(a.value) for a in root.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    now = datetime.now(timezone.utc)
    # 4.3: the intermediate's dates are vault-pki's finding; here only the way out, as guidance.
    due = [c for c in chain if c.subject != c.issuer
           and (c.not_valid_after_utc - now).total_seconds() / 86400 < cfg.warn_days]
    guidance = [Finding(status=Status.ok, target="intermediate CA rotation",
                        summary=f"guidance (vault-pki reports its dates): the intermediate's notAfter is "
                                f"{due[0].not_valid_after_utc:%Y-%m-%d}; rotating it needs the offline Root CA key, "
                                "see the checklist", details="\n".join(INTERMEDIATE_CHECKLIST),
                        next_step="4.3 / 11.7: Intermediate CA Rotation, by hand (checklist in details)")] if due else []
    days = (root.not_valid_after_utc - now).total_seconds() / 86400
    when = f"notAfter {root.not_valid_after_utc:%Y-%m-%d}"
    checklist = "\n".join(ROTATION_CHECKLIST)
    findings: list[Finding] = list(guidance)
    if days < 0:
        findings.append(Finding(status=Status.crit, target="root CA",
                                summary=f"Root CA expired: {cn!r} expired {-days:.0f} days ago ({when}); every chain fails",
                                details=checklist, next_step="4.4: rotate the root CA (guidance: offline key), see details"))
    elif days < cfg.warn_days:
        findings.append(Finding(status=Status.warn, target="root CA",
                                summary=f"Root CA approaching expiry: {cn!r} expires in {days:.0f} days ({when})",
                                details=checklist, next_step="4.4: plan the root CA rotation (guidance: offline key), see details"))
    else:
        findings.append(Finding(status=Status.ok, target="root CA", summary=f"{cn!r} {when} ({days / 365:.1f} years left)"))
    kube = ctx.kube
    if kube is not None:
        target = f"configmap/{cfg.root_ca_namespace}/{cfg.root_ca_configmap}"
        try:
            cm = await kube.get("v1", "configmaps", cfg.root_ca_configmap, cfg.root_ca_namespace)
        except SourceError as exc:
            findings.append(Finding(status=Status.unknown, target=target,
                                    summary="missing" if exc.status == 404 else exc.reason))
        else:
            given = str((cm.get("data") or {}).get(cfg.root_ca_key) or "")
            try:
                theirs = x509.load_pem_x509_certificates(given.encode()) if "BEGIN" in given else []
            except ValueError:
                theirs = []
            if root not in theirs:
                findings.append(Finding(status=Status.warn, target=target,
                                        summary=f"root CA in the ConfigMap is not the chain's root {cn!r}: clients given "
                                                "it refuse every certificate (4.4 step 3c not done)",
                                        next_step="4.4 step 3c: re-run distribute_root_ca"))
    return findings


# -- /sop triage tls: the decisions of chapter 4's flowchart ------------------------------------
# Registered by node id (the team's runbook and the sandbox's share the ids; labels differ).
@decision("CERT_STATUS")
async def certificates_ready(ctx: HandlerContext) -> Answer:
    """``kubectl get certificates -A``: any Certificate not Ready → Ready=False."""
    certs = await ctx.require_kube().list(CM, "certificates")
    bad = [f"{c['metadata'].get('namespace')}/{c['metadata']['name']} "
           f"({(condition(c, 'Ready') or {}).get('reason', 'no Ready condition')})"
           for c in certs if (condition(c, "Ready") or {}).get("status") != "True"]
    if bad:
        return Answer("Ready=False", f"{len(bad)} of {len(certs)} certificates not Ready: " + ", ".join(bad[:5]))
    return Answer("Ready=True", f"all {len(certs)} certificates Ready")


@decision("SERVING")
async def served_certificate(ctx: HandlerContext) -> Answer:
    """4.5's handshake through the LB IP (the tls-handshake SOP's probes): Traefik's default
    certificate anywhere first, then an expired one, then a chain clients cannot verify."""
    findings = await tls_handshake(ctx, NoParams())
    by = {key: [f for f in findings if key in f.summary] for key in
          ("serves TRAEFIK DEFAULT CERT", "serves an expired certificate", "client does not trust the Vault Root CA")}
    for key, branch in (("serves TRAEFIK DEFAULT CERT", "Traefik default cert"),
                        ("serves an expired certificate", "Expired cert"),
                        ("client does not trust the Vault Root CA", "Untrusted chain")):
        if by[key]:
            return Answer(branch, "; ".join(f"{f.target} {f.summary}" for f in by[key][:3]))
    unknown = [f for f in findings if f.status is Status.unknown]
    if unknown:
        return Answer(None, "; ".join(f"{f.target}: {f.summary}" for f in unknown[:3]))
    ok = next((f.summary for f in findings if f.target.endswith(":443") and f.status is Status.ok), "every host")
    return Answer("Correct cert", ok)


@decision("CERT_REASON")
async def not_ready_reason(ctx: HandlerContext) -> Answer:
    """Why a Certificate is not Ready, from its newest CertificateRequest: the issuer answered and
    refused (denied, invalid, Vault 4xx such as the role not allowing the name) → Failed; still
    waiting on the issuer (not Ready, Vault sealed, login failing, no request yet) → Issuing."""
    kube = ctx.require_kube()
    certs = [c for c in await kube.list(CM, "certificates") if (condition(c, "Ready") or {}).get("status") != "True"]
    if not certs:
        return Answer(None, "every certificate is Ready now")
    refused, waiting = [], []
    for cert in certs[:10]:
        ns, name = cert["metadata"].get("namespace", ""), cert["metadata"]["name"]
        requests = [r for r in await kube.list(CM, "certificaterequests", ns)
                    if (r["metadata"].get("annotations") or {}).get("cert-manager.io/certificate-name") == name]
        if not requests:
            waiting.append(f"{ns}/{name}: no CertificateRequest yet")
            continue
        newest = max(requests, key=lambda r: int((r["metadata"].get("annotations") or {})
                                                 .get("cert-manager.io/certificate-revision", "0") or 0))
        conds = (newest.get("status") or {}).get("conditions") or []
        ready = next((c for c in conds if c.get("type") == "Ready"), {})
        final = any(c.get("type") in ("Denied", "InvalidRequest") and c.get("status") == "True" for c in conds)
        message = ready.get("message", "")
        line = f"{ns}/{name}: certificaterequest/{newest['metadata']['name']} {ready.get('reason', '')}: {_first_line(message)}"
        if final or ready.get("reason") == "Failed" or re.search(r"Code: 4\d\d\.(?!.*(permission denied|"
                                                                   r"not authorized|service account))", message, re.S):
            refused.append(line)
        else:
            waiting.append(line)
    if refused:
        return Answer("Failed", "; ".join(refused[:3]))
    return Answer("Issuing", "; ".join(waiting[:3]))


@decision("VAULT_SEALED")
async def vault_is_sealed(ctx: HandlerContext) -> Answer:
    from handlers.triage import _sealed  # (section 1's seal count, the same evidence)

    if ctx.vault is None or not ctx.vault.addrs:
        return Answer(None, "no Vault replicas configured")
    sealed, text = await _sealed(ctx)
    if sealed is None:
        return Answer(None, text)
    return Answer("Yes" if sealed else "No", text, also=("Sealed",) if sealed else ("Unsealed",))


# -- 4.1 step 4: recreate the issuer's long-lived token ------------------------------------------
class IssuerTokenParams(ActionParams):
    issuer: K8sName = Field("vault-issuer", description="the ClusterIssuer whose token Secret is recreated")


def _token_secret_ref(issuer: dict) -> str:
    return str(((((issuer.get("spec") or {}).get("vault") or {}).get("auth") or {}).get("kubernetes") or {})
               .get("secretRef", {}).get("name") or "")


@remediation_action
class RecreateIssuerToken(Action[IssuerTokenParams]):
    name = "recreate-issuer-token"
    title = "Recreate the ClusterIssuer's ServiceAccount token Secret"
    section = "4.1"
    step = "4. If SA token expired, recreate: delete secret vault-issuer-token, a new token for vault-issuer"
    # It replaces the credential every certificate issuance depends on.
    risk = Risk.high
    params = IssuerTokenParams
    changes = ("deletes the issuer's service-account-token Secret and creates it again, empty: the token "
               "controller writes a fresh token bound to the ServiceAccount as it is now")

    async def _target(self, env: ActionEnv, p: IssuerTokenParams) -> tuple[str, str, dict]:
        cfg = check_settings(env.ctx, "cert-issuer", IssuerChecks)
        issuer = await env.ctx.require_kube().get(CM, "clusterissuers", p.issuer)
        return cfg.namespace, _token_secret_ref(issuer), issuer

    async def plan(self, env: ActionEnv, p: IssuerTokenParams) -> Plan:
        ns, secret, _ = await self._target(env, p)
        runbook = [f"kubectl -n {ns} delete secret {secret or 'vault-issuer-token'}",
                   f"kubectl apply -f services/cert-manager/rbac.yaml   # recreates the token Secret",
                   f"kubectl get clusterissuer {p.issuer} -w"]
        if not secret:
            return Plan(nothing_to_do=f"ClusterIssuer {p.issuer} logs in with serviceAccountRef: cert-manager "
                                      "requests a fresh token for every login, there is no token Secret to recreate",
                        runbook=runbook)
        kube = env.ctx.require_kube()
        try:
            # The answer is the Secret itself: only its metadata is used, never its data (the token).
            dry = await kube.delete("v1", "secrets", secret, ns, dry_run=True)
        except SourceError as exc:
            if exc.status != 404:
                raise
            dry = {}
        meta = dry.get("metadata") or {}
        sa = (meta.get("annotations") or {}).get("kubernetes.io/service-account.name") or "vault-issuer"
        obj = self._object(secret, ns, sa)
        return Plan(
            operations=([f"DELETE v1 secrets {ns}/{secret}"] if meta else []) + [f"CREATE v1 secrets {ns}/{secret}"],
            preview=(f"Secret {ns}/{secret} " + (f"(uid {str(meta.get('uid', ''))[:8]}…, the API server accepted "
                                                  "deleting it: dry run)" if meta else "does not exist") +
                     f" is created again for ServiceAccount {sa}; the token controller fills it:\n```yaml\n"
                     + _yaml(obj) + "```"),
            dry_run=bool(meta), state=fingerprint([meta.get("uid"), meta.get("resourceVersion")]),
            state_text=f"Secret {secret} uid {str(meta.get('uid', 'absent'))[:8]}", runbook=runbook,
            warnings=[f"until the controller has written the new token, {p.issuer} cannot log in"])

    @staticmethod
    def _object(secret: str, ns: str, sa: str) -> dict:
        return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                "metadata": {"name": secret, "namespace": ns,
                             "annotations": {"kubernetes.io/service-account.name": sa}}}

    async def run(self, env: ActionEnv, p: IssuerTokenParams) -> Outcome:
        ns, secret, _ = await self._target(env, p)
        if not secret:
            return Outcome(ok=True, summary=f"{p.issuer} uses serviceAccountRef: nothing to recreate")
        kube = env.ctx.require_kube()
        sa = "vault-issuer"
        try:
            old = await kube.delete("v1", "secrets", secret, ns)
            sa = ((old.get("metadata") or {}).get("annotations") or {}).get("kubernetes.io/service-account.name") or sa
        except SourceError as exc:
            if exc.status != 404:
                raise
        created = await kube.create("v1", "secrets", self._object(secret, ns, sa), ns)
        uid = str((created.get("metadata") or {}).get("uid", ""))
        return Outcome(ok=True, summary=f"recreated Secret {ns}/{secret} (uid {uid[:8]}…) for ServiceAccount {sa}; "
                                        f"watch clusterissuer/{p.issuer} become Ready")
