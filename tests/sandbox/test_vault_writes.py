"""The sandbox Vault's writes and Kubernetes-auth login through hvac, unmodified, over real HTTP:
raft join, step-down, PKI role and auth config/role writes, and logins reviewed against the
sandbox API server (a real TokenRequest JWT) with Vault's own error wording."""

from __future__ import annotations

import asyncio
from typing import Any

import hvac
import hvac.exceptions
import pytest

from bot.clients.kube import KubeClient


async def call(fn: Any) -> Any:
    return await asyncio.to_thread(fn)


def client(sandbox, i: int = 0, token: bool = True) -> hvac.Client:
    return hvac.Client(url=sandbox.vault_addrs[i], token=sandbox.platform.vault.root_token if token else None,
                       timeout=5)


async def fresh_jwt(sandbox, sa: str = "vault-issuer", ns: str = "cert-manager") -> str:
    kube = await KubeClient.connect(sandbox.kubeconfig)
    try:
        answer = await kube.create("v1", "serviceaccounts", {"apiVersion": "authentication.k8s.io/v1",
                                                              "kind": "TokenRequest", "spec": {"expirationSeconds": 600}},
                                   ns, subresource_of=sa, subresource="token")
    finally:
        await kube.close()
    return answer["status"]["token"]


async def test_raft_join_makes_an_uninitialized_replica_a_sealed_peer(sandbox):
    vault = sandbox.platform.vault
    vault.set_initialized(2, False)
    c = client(sandbox, 2, token=False)
    with pytest.raises(hvac.exceptions.InternalServerError, match="no leader found at http://vault-1"):
        await call(lambda: c.sys.join_raft_cluster(leader_api_addr="http://vault-1.vault-internal:8200"))
    assert await call(lambda: c.sys.join_raft_cluster(leader_api_addr="http://vault-0.vault-internal:8200")) \
        == {"joined": True}
    status = await call(c.sys.read_seal_status)
    assert status["initialized"] is True and status["sealed"] is True and status["t"] == 3
    with pytest.raises(hvac.exceptions.InvalidRequest, match="already initialized"):
        await call(lambda: c.sys.join_raft_cluster(leader_api_addr="http://vault-0.vault-internal:8200"))


async def test_step_down_needs_a_token_and_moves_the_leader(sandbox):
    with pytest.raises(hvac.exceptions.Forbidden):
        await call(client(sandbox, 0, token=False).sys.step_down)
    await call(client(sandbox).sys.step_down)
    assert (await call(client(sandbox, 1).sys.read_leader_status))["is_self"] is True


async def test_login_with_a_fresh_token_and_each_refusal_in_vaults_words(sandbox):
    vault = sandbox.platform.vault
    c = client(sandbox, 1, token=False)  # a standby answers logins too (forwarded)
    jwt = await fresh_jwt(sandbox)
    assert jwt.count(".") == 2 and jwt.startswith("eyJ")
    ok = await call(lambda: c.auth.kubernetes.login("cert-manager-issuer", jwt, use_token=False))
    assert ok["auth"]["metadata"]["service_account_name"] == "vault-issuer"
    assert ok["auth"]["policies"] == ["default", "cert-manager"] and ok["auth"]["client_token"].startswith("hvs.")
    with pytest.raises(hvac.exceptions.InvalidRequest, match='invalid role name "nope"'):
        await call(lambda: c.auth.kubernetes.login("nope", jwt, use_token=False))
    other = await fresh_jwt(sandbox, "default", "cert-manager")
    with pytest.raises(hvac.exceptions.Forbidden, match="service account name not authorized"):
        await call(lambda: c.auth.kubernetes.login("cert-manager-issuer", other, use_token=False))
    with pytest.raises(hvac.exceptions.Forbidden, match="permission denied"):
        await call(lambda: c.auth.kubernetes.login("cert-manager-issuer", "eyJx.eyJ5.zz", use_token=False))
    vault.k8s_auth_config["kubernetes_host"] = "https://10.43.0.9:443"
    with pytest.raises(hvac.exceptions.InternalServerError, match="dial tcp 10.43.0.9:443: i/o timeout"):
        await call(lambda: c.auth.kubernetes.login("cert-manager-issuer", jwt, use_token=False))


async def test_pki_role_and_auth_writes_read_back_as_vault_stores_them(sandbox):
    c = client(sandbox)
    await call(lambda: c.write_data("pki_int/roles/test-dot-org", data={
        "allowed_domains": "test.org", "allow_subdomains": True, "max_ttl": "720h", "require_cn": False}))
    role = (await call(lambda: c.read("pki_int/roles/test-dot-org")))["data"]
    assert role["allowed_domains"] == ["test.org"] and role["max_ttl"] == 2592000 and role["require_cn"] is False
    await call(lambda: c.write_data("auth/kubernetes/role/app", data={
        "bound_service_account_names": "app", "bound_service_account_namespaces": "apps",
        "policies": "app", "ttl": "1h"}))
    k8s_role = (await call(lambda: c.read("auth/kubernetes/role/app")))["data"]
    assert k8s_role["token_policies"] == ["app"] and k8s_role["token_ttl"] == 3600
    with pytest.raises(hvac.exceptions.InvalidRequest, match="no host provided"):
        await call(lambda: c.write_data("auth/kubernetes/config", data={"issuer": "x"}))
    with pytest.raises(hvac.exceptions.Forbidden):
        await call(lambda: client(sandbox, token=False).write_data("pki_int/roles/x", data={"allowed_domains": "x"}))


async def test_autopilot_state_reports_a_sealed_peer_unhealthy(sandbox):
    c = client(sandbox)
    healthy = (await call(lambda: c.read("sys/storage/raft/autopilot/state")))["data"]
    assert healthy["healthy"] is True and healthy["failure_tolerance"] == 1 and healthy["leader"] == "vault-0"
    assert healthy["servers"]["vault-1"]["status"] == "voter" and healthy["voters"] == ["vault-0", "vault-1", "vault-2"]
    sandbox.platform.vault.seal(2)
    state = (await call(lambda: c.read("sys/storage/raft/autopilot/state")))["data"]
    assert state["healthy"] is False and state["failure_tolerance"] == 0
    assert state["servers"]["vault-2"]["healthy"] is False and state["servers"]["vault-2"]["last_contact"] == "47.3s"
