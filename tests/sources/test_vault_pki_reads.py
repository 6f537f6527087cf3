"""VaultPool's PKI reads (runbook 4.3, 5.4) against the sandbox Vault over HTTP: the CA chain as
PEM, the CA through cert/ca, the roles LIST; a missing mount or role is Vault's 404."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from cryptography import x509

from bot.clients.errors import SourceError
from bot.clients.vault import VaultPool
from sandbox.vault import VaultCluster, serve_cluster


@pytest.fixture
async def vault() -> AsyncIterator[tuple[VaultCluster, VaultPool]]:
    cluster = VaultCluster.create()
    servers = await serve_cluster(cluster)
    try:
        yield cluster, VaultPool([s.url for s in servers], token=cluster.root_token, timeout_s=3)
    finally:
        for s in servers:
            await s.stop()


async def test_chain_ca_roles_and_mounts(vault) -> None:
    cluster, pool = vault
    chain = x509.load_pem_x509_certificates((await pool.pki_ca_chain("pki_int")).encode())
    assert [c.subject.rfc4514_string() for c in chain] == [
        "CN=Example Org Intermediate CA,O=Example Org", "CN=Example Org Root CA,O=Example Org"]
    assert (await pool.pki_ca("pki_int")).strip() == cluster.pki.intermediate.pem.strip()
    assert await pool.pki_roles("pki_int") == ["example-dot-com"]
    assert (await pool.secret_mounts())["pki_int/"] == "pki"


async def test_a_sealed_first_replica_is_skipped(vault) -> None:
    cluster, pool = vault
    cluster.seal(0)
    assert await pool.pki_roles("pki_int") == ["example-dot-com"]


async def test_missing_role_list_is_empty_and_missing_mount_is_404(vault) -> None:
    cluster, pool = vault
    cluster.pki_roles.clear()
    assert await pool.pki_roles("pki_int") == []
    cluster.disable_mount("pki_int")
    assert "pki_int/" not in await pool.secret_mounts()
    with pytest.raises(SourceError) as err:
        await pool.pki_ca_chain("pki_int")
    assert err.value.status == 404 and "no handler for route" in err.value.reason


async def test_auth_methods_config_and_role_reads(vault) -> None:
    cluster, pool = vault
    assert (await pool.auth_mounts())["kubernetes/"] == "kubernetes"
    config = await pool.read_data("auth/kubernetes/config")
    assert config is not None and config["kubernetes_host"] == "https://10.43.0.1:443"
    role = await pool.read_data("auth/kubernetes/role/cert-manager-issuer")
    assert role is not None and role["bound_service_account_names"] == ["vault-issuer"]
    cluster.k8s_roles.clear()
    assert await pool.read_data("auth/kubernetes/role/cert-manager-issuer") is None  # Vault's 404


async def test_without_a_token_auth_reads_are_denied_and_pki_reads_are_public(vault) -> None:
    _, pool = vault
    anonymous = VaultPool(pool.addrs, timeout_s=3)
    with pytest.raises(SourceError) as err:
        await anonymous.auth_mounts()
    assert err.value.status == 403 and "permission denied" in err.value.reason.lower()
    assert "BEGIN CERTIFICATE" in await anonymous.pki_ca_chain("pki_int")  # unauthenticated in Vault
