"""Runbook chapter 4: TLS certificates (cert-manager with the Vault ClusterIssuer)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Action, ActionEnv, ActionParams, Finding, HandlerContext, KubeClient, NoParams, Outcome, Plan,
                     Risk, Severity, SourceError, Status, SuggestedAction, TlsResult, check_settings, condition,
                     fingerprint, parse_time, remediation_action, sop)

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
             "cert-manager cannot log in to Vault", "ClusterIssuer not ready", "renewal overdue"))
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
        findings.extend(await _request_causes(kube, unready_refs[:cfg.max_listed],
                                              Status.crit if len(not_ready) == len(certs) else Status.warn))
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
REQUEST_CAUSES = (
    (re.compile(r"not allowed by this role", re.I), "the Vault PKI role does not allow the requested DNS name",
     "4.1 step 3: vault read pki_int/roles/<DOMAIN_DOT>; allowed_domains/allow_subdomains must cover the name"),
    (re.compile(r"Vault is sealed", re.I), "Vault is sealed", "5.1: unseal Vault, then 5.2 step 5"),
    (re.compile(r"permission denied|service account.*(expired|invalid)|token.*expired", re.I),
     "cert-manager cannot log in to Vault (ServiceAccount token or Kubernetes auth role)",
     "4.1 step 4 / 5.5: check the vault-issuer token and Vault's Kubernetes auth role"),
)


async def _request_causes(kube: KubeClient, refs: list[tuple[str, str]], status: Status) -> list[Finding]:
    """For each not-Ready Certificate, its newest CertificateRequest's failing condition, named
    as a runbook cause when it matches one."""
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
            findings.append(Finding(
                status=status, target=f"certificate/{ns}/{name}",
                summary=f"{cause}: certificaterequest/{newest['metadata']['name']} "
                        f"{failing.get('type')}={failing.get('status')} ({failing.get('reason', '')}): {_first_line(message)}",
                details=message, next_step=step))
    return findings


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


def _listener_problem(gw: dict, ls: dict) -> str:
    """Why a listener's certificate cannot be served: its ResolvedRefs condition (Traefik sets it
    False, InvalidCertificateRef, when the Secret is missing or not a TLS secret)."""
    refs = [r.get("name", "") for r in (ls.get("tls") or {}).get("certificateRefs") or []]
    if not refs:
        return f"listener {ls.get('name')} has no tls.certificateRefs"
    status = next((s for s in (gw.get("status") or {}).get("listeners") or [] if s.get("name") == ls.get("name")), {})
    cond = next((c for c in status.get("conditions") or [] if c.get("type") == "ResolvedRefs"), None)
    if cond is not None and cond.get("status") == "False":
        return (f"listener {ls.get('name')} certificateRef {', '.join(refs)}: ResolvedRefs=False "
                f"({cond.get('reason', '')}): {_first_line(cond.get('message', ''))}")
    return ""


def _served_finding(host: str, result: TlsResult, pairs: list[tuple[dict, dict]], certs: list[dict],
                    default_ok: bool, cfg: TlsChecks, root_pem: str) -> Finding:
    leaf = result.leaf
    gw, ls = pairs[0]
    gw_ref = f"gateway/{gw['metadata'].get('namespace', '')}/{gw['metadata']['name']}"
    seen = (f"subject CN={leaf.subject_cn}, issuer CN={leaf.issuer_cn}, notAfter {leaf.not_after:%Y-%m-%d}")
    problems = [p for p in (_listener_problem(g, listener) for g, listener in pairs) if p]
    step = GATEWAY_TLS_STEP.format(ns=gw["metadata"].get("namespace", ""), name=gw["metadata"]["name"])
    if leaf.traefik_default:
        why = "; ".join(problems) or "no certificate loaded for this name"
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
                       summary=f"serves a certificate for other names ({', '.join(leaf.sans) or leaf.subject_cn}; {seen})",
                       next_step=step)
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
