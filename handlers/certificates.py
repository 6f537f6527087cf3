"""Runbook chapter 4: TLS certificates (cert-manager with the Vault ClusterIssuer)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel, ConfigDict, Field

from bot.sdk import (Finding, HandlerContext, KubeClient, NoParams, Severity, Status, SuggestedAction,
                     check_settings, condition, parse_time, sop)

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
