"""What Vault's Kubernetes auth does with a login's JWT: a TokenReview against the API server
its config names (``kubernetes_host``, trusted through ``kubernetes_ca_cert``). The sandbox Vault
reaches the sandbox cluster only if that config is the cluster's own: the ``kubernetes``
Service's ClusterIP and the CA in ``kube-root-ca.crt``; otherwise the review fails the way the
Go HTTP client words it."""

from __future__ import annotations

from typing import Any

from sandbox.kube.store import ObjectStore

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"


def cluster_host(store: ObjectStore) -> str:
    svc = store.get("v1", "Service", "kubernetes", "default") or {}
    return f"https://{(svc.get('spec') or {}).get('clusterIP', '')}:443"


def cluster_ca(store: ObjectStore) -> str:
    cm = store.get("v1", "ConfigMap", "kube-root-ca.crt", "default") or {}
    return str((cm.get("data") or {}).get("ca.crt") or "")


def _host_port(host: str) -> str:
    host = host.rstrip("/")
    return host if host.count(":") >= 2 else host + ":443"


def review(store: ObjectStore, host: str, ca_pem: str, jwt: str) -> dict[str, Any] | tuple[int, str]:
    """The token's claims, or (status, Vault's error)."""
    url = _host_port(host)
    if url != cluster_host(store):
        addr = url.split("://", 1)[-1]
        return 500, f'Post "{url}{REVIEW_PATH}": dial tcp {addr}: i/o timeout'
    if ca_pem.strip() and ca_pem.strip() != cluster_ca(store).strip():
        return 500, (f'Post "{url}{REVIEW_PATH}": tls: failed to verify certificate: '
                     "x509: certificate signed by unknown authority")
    claims = store.tokens.review(jwt)
    if claims is None:
        return 403, "permission denied"
    k8s = claims["kubernetes.io"]
    sa = store.get("v1", "ServiceAccount", k8s["serviceaccount"]["name"], k8s["namespace"])
    if sa is None or sa["metadata"].get("uid") != k8s["serviceaccount"]["uid"]:
        return 403, ("lookup failed: service account unauthorized; this could mean it has been "
                     "deleted or recreated with a new token")
    return claims
