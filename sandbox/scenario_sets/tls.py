"""Scenarios for runbook chapter 4: certificates, issuers, CAs, TLS handshakes."""

from __future__ import annotations

import base64
from datetime import timedelta

from sandbox.platform import CORE, GATEWAY, TRAEFIK, Platform, now, set_condition
from sandbox.scenario_model import Scenario
from sandbox.vault.pki import make_pki


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- 4.5 TLS handshake ---------------------------------------------------------------------------
def _drop_tlsstore(p: Platform) -> None:
    p.kube.remove(TRAEFIK, "TLSStore", "default", "kube-system")


def _wrong_certificate_ref(p: Platform, ns: str = "harbor", gateway: str = "harbor-gateway",
                           secret: str = "harbor-tls") -> None:
    """The Gateway's HTTPS listener names a Secret that does not exist (a typo in the manifest);
    Traefik reports the listener's ResolvedRefs False and cannot load a certificate for it."""
    def fn(gw: dict) -> None:
        for listener in gw["spec"]["listeners"]:
            if listener.get("tls"):
                listener["tls"]["certificateRefs"] = [{"group": "", "kind": "Secret", "name": secret}]
        for status in gw["status"]["listeners"]:
            if status["name"] == "https":
                set_condition(status["conditions"], "ResolvedRefs", "False", "InvalidCertificateRef",
                              f'Error while retrieving certificate: secret {ns}/{secret} does not exist',
                              observedGeneration=gw["metadata"].get("generation", 1))
                set_condition(status["conditions"], "Programmed", "False", "Invalid",
                              "Listener is invalid, see the ResolvedRefs condition",
                              observedGeneration=gw["metadata"].get("generation", 1))
    p.kube.update(GATEWAY, "Gateway", gateway, ns, fn)


def _traefik_default_cert(p: Platform) -> None:
    _drop_tlsstore(p)
    _wrong_certificate_ref(p)


def _untrusted_root(p: Platform) -> None:
    """The root CA clients are given (distribute_root_ca's ConfigMap) is not the one that signed
    the intermediate: a root rotation whose trust-store step was never run."""
    other = make_pki().root.pem
    p.kube.update(CORE, "ConfigMap", "vault-root-ca", "cert-manager", lambda cm: cm.update(data={"ca.crt": other}))


def _served_cert_expired(p: Platform, ns: str = "monitoring", secret: str = "grafana-example-com-tls") -> None:
    """The TLS Secret Traefik serves holds a certificate past its notAfter (renewal stalled after
    the Certificate last reported Ready)."""
    pki = p.vault.pki
    assert pki is not None
    start = now() - timedelta(days=33)
    crt, key = pki.issue_leaf(["grafana.example.com"], start, start + timedelta(days=30))
    p.kube.update(CORE, "Secret", secret, ns, lambda s: s["data"].update({
        "tls.crt": _b64(crt + pki.intermediate.pem), "tls.key": _b64(key)}))


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("tls-traefik-default-cert",
             "Harbor's Gateway names a TLS secret that does not exist and there is no TLSStore default: "
             "Traefik serves its self-signed TRAEFIK DEFAULT CERT for harbor.example.com",
             _traefik_default_cert, section="4.5", status="crit", cause="serves TRAEFIK DEFAULT CERT"),
    Scenario("tls-gateway-wrong-secret",
             "Harbor's Gateway listener names the TLS secret harbor-tls, which does not exist (ResolvedRefs False); "
             "Traefik falls back to the wildcard default certificate",
             _wrong_certificate_ref, section="4.5", status="warn", cause="Gateway TLS configuration is incorrect"),
    Scenario("tls-tlsstore-missing",
             "The TLSStore default in kube-system was deleted: names without a certificate get TRAEFIK DEFAULT CERT",
             _drop_tlsstore, section="4.5", status="warn", cause="TLSStore default certificate is not configured"),
    Scenario("tls-root-ca-untrusted",
             "The vault-root-ca ConfigMap clients are given holds another root CA than the one that signed "
             "the intermediate: served chains do not verify against it",
             _untrusted_root, section="4.5", status="crit", cause="client does not trust the Vault Root CA"),
    Scenario("tls-served-cert-expired",
             "Grafana's TLS secret holds a certificate that expired 3 days ago; the Certificate still says Ready",
             _served_cert_expired, section="4.5", status="crit", cause="serves an expired certificate"),
)
