"""Scenarios for runbook chapter 4: certificates, issuers, CAs, TLS handshakes."""

from __future__ import annotations

import base64
from datetime import timedelta

from sandbox.platform import (CERT_MANAGER, CORE, GATEWAY, TRAEFIK, Platform, add_event, iso, now, set_certificate_ready,
                              set_condition, set_issuer_ready, sync_vault_pods)
from sandbox.scenario_model import Scenario, _vault_api_error
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
    if p.kube.get(CORE, "Secret", secret, ns) is None:  # (composed with a scenario that deleted it)
        return
    start = now() - timedelta(days=33)
    crt, key = pki.issue_leaf(["grafana.example.com"], start, start + timedelta(days=30))
    p.kube.update(CORE, "Secret", secret, ns, lambda s: s["data"].update({
        "tls.crt": _b64(crt + pki.intermediate.pem), "tls.key": _b64(key)}))


# -- 4.1 certificate not issued: the newest CertificateRequest names the cause ----------------------
def _failing_request(p: Platform, ns: str, host: str, reason: str, message: str,
                     next_key_secret: str | None = None) -> None:
    """The Certificate Ready=False, its Secret gone, a new revision's request failing with ``message``
    (as cert-manager's issuing controller leaves them; ``next_key_secret``: the status's
    nextPrivateKeySecretName, the key it generated for that revision)."""
    name = f"{host}-{p.domain.replace('.', '-')}-tls"
    if p.kube.get(CERT_MANAGER, "Certificate", name, ns) is None:  # (composed with a scenario that deleted it)
        return
    set_certificate_ready(p, ns, name, False, "DoesNotExist", "Issuing certificate as Secret does not exist")

    def issuing(cert: dict) -> None:
        set_condition(cert["status"]["conditions"], "Issuing", "True", "DoesNotExist",
                      "Issuing certificate as Secret does not exist", observedGeneration=1)
        if next_key_secret:
            cert["status"]["nextPrivateKeySecretName"] = next_key_secret
        cert["status"].pop("renewalTime", None)
    cert = p.kube.update(CERT_MANAGER, "Certificate", name, ns, issuing)
    p.kube.remove(CORE, "Secret", name, ns)
    revision = int(cert["status"].get("revision", 1)) + 1
    stamp = iso(now())
    p.kube.add({
        "apiVersion": CERT_MANAGER, "kind": "CertificateRequest",
        "metadata": {"name": f"{name}-{revision}", "namespace": ns, "annotations": {
            "cert-manager.io/certificate-name": name, "cert-manager.io/certificate-revision": str(revision)},
            "ownerReferences": [{"apiVersion": CERT_MANAGER, "kind": "Certificate", "name": name,
                                 "uid": cert["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]},
        "spec": {"issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "vault-issuer"},
                 "usages": ["digital signature", "key encipherment"], "duration": "720h0m0s"},
        "status": {"conditions": [
            {"type": "Approved", "status": "True", "reason": "cert-manager.io",
             "message": "Certificate request has been approved by cert-manager.io", "lastTransitionTime": stamp},
            {"type": "Ready", "status": "False", "reason": reason, "lastTransitionTime": stamp, "message": message}]},
    })
    add_event(p, cert, "Issuing", "Issuing certificate as Secret does not exist", type_="Normal",
              component="cert-manager-certificates-trigger")


LOGIN = "Failed to initialize Vault client: while requesting a Vault token using the Kubernetes auth: "


def _seal(p: Platform) -> None:
    p.vault.seal_all()
    sync_vault_pods(p)
    set_issuer_ready(p, "vault-issuer", False, "VaultError",
                     LOGIN + _vault_api_error("auth/kubernetes/login", "PUT", 503, "Vault is sealed"))


def _cert_vault_sealed(p: Platform) -> None:
    _seal(p)
    _failing_request(p, "mattermost", "mattermost", "Pending",
                     "Vault failed to sign certificate: failed to sign certificate by vault: "
                     + _vault_api_error("pki_int/sign/example-dot-com", "POST", 503, "Vault is sealed"))


def _cert_issuer_not_ready(p: Platform) -> None:
    set_issuer_ready(p, "vault-issuer", False, "VaultError",
                     LOGIN + _vault_api_error("auth/kubernetes/login", "PUT", 403, "permission denied"))
    # (grafana's, not keycloak's: cert-expiring owns that one and composes with this)
    _failing_request(p, "monitoring", "grafana", "Pending", "Referenced issuer does not have a Ready status condition")


def _cert_sa_token_invalid(p: Platform) -> None:
    """The issuer logs in with the long-lived token in Secret vault-issuer-token; the ServiceAccount
    was recreated since, so the token's TokenReview fails (4.1: "ServiceAccount token expired")."""
    def secret_auth(issuer: dict) -> None:
        issuer["spec"]["vault"]["auth"]["kubernetes"].pop("serviceAccountRef", None)
        issuer["spec"]["vault"]["auth"]["kubernetes"]["secretRef"] = {"name": "vault-issuer-token", "key": "token"}
    p.kube.update(CERT_MANAGER, "ClusterIssuer", "vault-issuer", "", secret_auth)
    sa = p.kube.remove(CORE, "ServiceAccount", "vault-issuer", "cert-manager") or {"metadata": {}}
    p.kube.add({"apiVersion": CORE, "kind": "ServiceAccount",  # recreated: a new uid
                "metadata": {"name": "vault-issuer", "namespace": "cert-manager",
                             "labels": dict(sa["metadata"].get("labels") or {})}})
    error = _vault_api_error("auth/kubernetes/login", "PUT", 403, "lookup failed: service account unauthorized; this "
                             "could mean it has been deleted or recreated with a new token")
    set_issuer_ready(p, "vault-issuer", False, "VaultError", LOGIN + error)
    _failing_request(p, "argocd", "argocd", "Pending",
                     "Vault failed to sign certificate: failed to initialize Vault client: " + LOGIN + error)


def _cert_role_denied(p: Platform) -> None:
    """The PKI role was narrowed to internal names: public names are refused."""
    role = p.domain.replace(".", "-dot-")
    if role in p.vault.pki_roles:  # (composed with a scenario that deleted it: nothing to narrow)
        p.vault.pki_roles[role]["allowed_domains"] = [f"internal.{p.domain}"]
    _failing_request(p, "harbor", "harbor", "Pending",
                     "Vault failed to sign certificate: failed to sign certificate by vault: "
                     + _vault_api_error(f"pki_int/sign/{role}", "POST", 400,
                                        f"common name harbor.{p.domain} not allowed by this role"))


# -- 4.2 ClusterIssuer not Ready -------------------------------------------------------------------
def _issuer_k8s_auth_off(p: Platform) -> None:
    p.vault.auth_mounts.pop("kubernetes/", None)
    set_issuer_ready(p, "vault-issuer", False, "VaultError", LOGIN + _vault_api_error(
        "auth/kubernetes/login", "PUT", 400, 'no handler for route "auth/kubernetes/login". route entry not found.'))


def _issuer_sa_missing(p: Platform) -> None:
    p.kube.remove(CORE, "ServiceAccount", "vault-issuer", "cert-manager")
    set_issuer_ready(p, "vault-issuer", False, "VaultError",
                     'Failed to initialize Vault client: while requesting a Vault token using the Kubernetes auth: '
                     'error reading Kubernetes service account token from vault-issuer: '
                     'serviceaccounts "vault-issuer" not found')


def _issuer_pki_unmounted(p: Platform) -> None:
    p.vault.disable_mount("pki_int")
    set_issuer_ready(p, "vault-issuer", False, "VaultError", "Failed to initialize Vault client: " + _vault_api_error(
        "pki_int/cert/ca_chain", "GET", 404, 'no handler for route "pki_int/cert/ca_chain". route entry not found.'))


def _issuer_role_unbound(p: Platform) -> None:
    if "cert-manager-issuer" in p.vault.k8s_roles:  # (composed with a scenario that deleted it)
        p.vault.k8s_roles["cert-manager-issuer"]["bound_service_account_names"] = ["cert-manager"]
    set_issuer_ready(p, "vault-issuer", False, "VaultError", LOGIN + _vault_api_error(
        "auth/kubernetes/login", "PUT", 403, "service account name not authorized"))


# -- 4.4 root CA --------------------------------------------------------------------------------
def _root_ca_expiring(p: Platform, days: int = 200) -> None:
    """A root CA (and the intermediate it signed) with ``days`` left: year 14 of 15 has passed."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from sandbox.vault.pki import PkiMaterial, _ca_cert, _name

    old = p.vault.pki
    assert old is not None
    t = now()
    root_key, int_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root_name = _name("Example Org Root CA")
    _, root = _ca_cert(root_name, root_name, root_key, root_key, t - timedelta(days=15 * 365 - days),
                       t + timedelta(days=days), None)
    _, inter = _ca_cert(_name("Example Org Intermediate CA"), root_name, int_key, root_key,
                        t - timedelta(days=365), t + timedelta(days=days), 0)
    p.vault.pki = PkiMaterial(root=root, intermediate=inter, kube_ca=old.kube_ca, intermediate_key=int_key)
    for cm in p.kube.list(CORE, "ConfigMap"):
        if cm["metadata"]["name"] == "vault-root-ca":
            p.kube.update(CORE, "ConfigMap", "vault-root-ca", cm["metadata"]["namespace"],
                          lambda c: c.update(data={"ca.crt": root.pem}))


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("tls-root-ca-expiring", "the root CA expires in 200 days: plan the rotation (4.4)", _root_ca_expiring,
             section="4.4", status="warn", cause="Root CA approaching expiry: 'Example Org Root CA' expires in 200 days"),
    Scenario("tls-cert-vault-sealed", "Vault sealed: mattermost's certificate request fails 'Vault is sealed' (4.1)",
             _cert_vault_sealed, section="4.1", status="crit", cause="Vault is sealed: certificaterequest/"),
    Scenario("tls-cert-issuer-not-ready", "grafana's certificate request waits on a ClusterIssuer that is not Ready (4.1)",
             _cert_issuer_not_ready, section="4.1", status="crit", cause="ClusterIssuer not ready: certificaterequest/"),
    Scenario("tls-cert-sa-token-invalid",
             "the issuer's long-lived token (Secret vault-issuer-token) no longer passes TokenReview: argocd's request fails (4.1)",
             _cert_sa_token_invalid, section="4.1", status="crit",
             cause="the issuer's ServiceAccount token expired or was invalidated"),
    Scenario("tls-cert-role-denied", "the PKI role allows only internal.example.com: harbor's request is refused (4.1)",
             _cert_role_denied, section="4.1", status="warn",
             cause="allowed_domains ['internal.example.com'] (allow_subdomains true, allow_bare_domains false) "
                   "does not cover harbor.example.com"),
    Scenario("tls-issuer-vault-sealed", "Vault sealed: the ClusterIssuer cannot log in (4.2)", _seal,
             section="4.2", status="crit", cause="Vault is sealed: http://vault.vault.svc.cluster.local:8200/v1/sys/health answered 503"),
    Scenario("tls-issuer-k8s-auth-off", "the kubernetes auth method is disabled in Vault (4.2)", _issuer_k8s_auth_off,
             section="4.2", status="crit", cause="Kubernetes auth not configured in Vault"),
    Scenario("tls-issuer-sa-missing", "the ServiceAccount vault-issuer was deleted from cert-manager (4.2)",
             _issuer_sa_missing, section="4.2", status="crit", cause="ServiceAccount vault-issuer missing in cert-manager"),
    Scenario("tls-issuer-pki-unmounted", "the pki_int engine the issuer signs with is not mounted (4.2)",
             _issuer_pki_unmounted, section="4.2", status="crit", cause="Vault PKI engine not mounted"),
    Scenario("tls-issuer-role-unbound", "the Vault role cert-manager-issuer binds another ServiceAccount (4.2)",
             _issuer_role_unbound, section="4.2", status="crit",
             cause="service account name not authorized"),
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
