"""The sandbox Vault through hvac, unmodified, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import pytest
import requests

from sandbox.vault import ReplicaServer, VaultCluster, serve_cluster

T = TypeVar("T")


@pytest.fixture
async def vault() -> AsyncIterator[tuple[VaultCluster, list[ReplicaServer]]]:
    cluster = VaultCluster.create()
    servers = await serve_cluster(cluster)
    yield cluster, servers
    for s in servers:
        await s.stop()


def client(server: ReplicaServer, token: str | None = None) -> hvac.Client:
    return hvac.Client(url=server.url, token=token, timeout=5)


async def call(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


# -- seal status and unseal ------------------------------------------------------------------
async def test_healthy_cluster_reports_unsealed_with_raft_storage(vault: Any) -> None:
    cluster, servers = vault
    status = await call(client(servers[1]).sys.read_seal_status)
    assert status["sealed"] is False and status["initialized"] is True
    assert (status["t"], status["n"], status["progress"]) == (3, 5, 0)
    assert status["type"] == "shamir" and status["storage_type"] == "raft"
    assert status["cluster_name"] == cluster.cluster_name and status["cluster_id"]
    assert await call(client(servers[1]).sys.is_sealed) is False


async def test_unseal_accumulates_distinct_keys_to_the_threshold(vault: Any) -> None:
    cluster, servers = vault
    cluster.seal(2)
    c = client(servers[2])
    sealed = await call(c.sys.read_seal_status)
    assert sealed["sealed"] is True and "cluster_id" not in sealed and sealed["nonce"] == ""
    keys = cluster.unseal_keys_hex
    first = await call(lambda: c.sys.submit_unseal_key(keys[0]))
    assert first["sealed"] is True and first["progress"] == 1 and first["nonce"]
    again = await call(lambda: c.sys.submit_unseal_key(keys[0]))  # the same share twice
    assert again["progress"] == 1 and again["nonce"] == first["nonce"]
    second = await call(lambda: c.sys.submit_unseal_key(cluster.unseal_keys_b64[3]))  # base64 form
    assert second["progress"] == 2
    done = await call(lambda: c.sys.submit_unseal_key(keys[4]))
    assert done["sealed"] is False and done["progress"] == 0 and done["nonce"] == ""
    assert await call(c.sys.is_sealed) is False


async def test_submit_unseal_keys_unseals_in_one_call(vault: Any) -> None:
    cluster, servers = vault
    cluster.seal_all()
    result = await call(lambda: client(servers[0]).sys.submit_unseal_keys(cluster.unseal_keys_hex[1:4]))
    assert result["sealed"] is False


async def test_reset_discards_progress(vault: Any) -> None:
    cluster, servers = vault
    cluster.seal(0)
    c = client(servers[0])
    await call(lambda: c.sys.submit_unseal_key(cluster.unseal_keys_hex[0]))
    reset = await call(lambda: c.sys.submit_unseal_key(reset=True))
    assert reset["progress"] == 0 and reset["sealed"] is True and reset["nonce"] == ""


async def test_reset_on_an_unsealed_replica_is_a_400(vault: Any) -> None:
    _, servers = vault
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        await call(lambda: client(servers[0]).sys.submit_unseal_key(reset=True))
    assert err.value.errors == ["vault is unsealed"]


async def test_a_wrong_share_fails_at_the_threshold_and_starts_over(vault: Any) -> None:
    cluster, servers = vault
    cluster.seal(1)
    c = client(servers[1])
    wrong = "ab" * 33
    await call(lambda: c.sys.submit_unseal_key(cluster.unseal_keys_hex[0]))
    await call(lambda: c.sys.submit_unseal_key(wrong))
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        await call(lambda: c.sys.submit_unseal_key(cluster.unseal_keys_hex[1]))
    assert err.value.errors == ["Unseal failed, invalid key"]
    assert wrong not in str(err.value) and cluster.unseal_keys_hex[1] not in str(err.value)
    status = await call(c.sys.read_seal_status)
    assert status["sealed"] is True and status["progress"] == 0


async def test_a_malformed_key_is_rejected_at_once(vault: Any) -> None:
    cluster, servers = vault
    cluster.seal(1)
    with pytest.raises(hvac.exceptions.InvalidRequest) as err:
        await call(lambda: client(servers[1]).sys.submit_unseal_key("not-a-key!"))
    assert err.value.errors == ["'key' must be a valid hex or base64 string"]
    assert (await call(client(servers[1]).sys.read_seal_status))["progress"] == 0


async def test_repr_never_shows_keys_or_root_token() -> None:
    cluster = VaultCluster.create()
    text = repr(cluster)
    assert cluster.root_token not in text
    assert not any(k in text for k in cluster.unseal_keys_hex + cluster.unseal_keys_b64)


# -- health ------------------------------------------------------------------------------------
async def test_health_codes_follow_role_and_seal_state(vault: Any) -> None:
    cluster, servers = vault
    active = await call(lambda: client(servers[0]).sys.read_health_status(method="GET"))
    assert active["standby"] is False and active["sealed"] is False  # 200 → dict
    standby = await call(lambda: client(servers[1]).sys.read_health_status(method="GET"))
    assert isinstance(standby, requests.Response) and standby.status_code == 429
    assert standby.json()["standby"] is True
    ok = await call(lambda: client(servers[1]).sys.read_health_status(standby_ok=True, method="GET"))
    assert isinstance(ok, dict) and ok["standby"] is True
    cluster.seal(2)
    sealed = await call(lambda: client(servers[2]).sys.read_health_status(method="GET"))
    assert sealed.status_code == 503 and sealed.json()["sealed"] is True
    assert "cluster_id" not in sealed.json()
    overridden = await call(lambda: client(servers[2]).sys.read_health_status(sealed_code=200, method="GET"))
    assert isinstance(overridden, dict) and overridden["sealed"] is True
    head = await call(lambda: client(servers[2]).sys.read_health_status(method="HEAD"))
    assert head.status_code == 503 and head.content == b""


async def test_health_of_an_uninitialized_replica_is_501_unless_overridden(vault: Any) -> None:
    cluster, servers = vault
    cluster.set_initialized(2, False)
    c = client(servers[2])
    resp = await call(lambda: c.sys.read_health_status(method="GET"))
    assert resp.status_code == 501 and resp.json()["initialized"] is False
    custom = await call(lambda: c.sys.read_health_status(uninit_code=299, method="GET"))
    assert custom.status_code == 299
    status = await call(c.sys.read_seal_status)
    assert status["initialized"] is False and (status["t"], status["n"]) == (0, 0)


async def test_active_code_override_applies_to_the_leader(vault: Any) -> None:
    _, servers = vault
    resp = await call(lambda: client(servers[0]).sys.read_health_status(active_code=204, method="GET"))
    assert resp.status_code == 204


# -- leader and raft ---------------------------------------------------------------------------
async def test_leader_status_names_the_active_node(vault: Any) -> None:
    cluster, servers = vault
    lead = await call(client(servers[0]).sys.read_leader_status)
    assert lead["ha_enabled"] is True and lead["is_self"] is True
    assert lead["active_time"] != "0001-01-01T00:00:00Z"
    other = await call(client(servers[2]).sys.read_leader_status)
    assert other["is_self"] is False and other["active_time"] == "0001-01-01T00:00:00Z"
    assert other["leader_address"] == "http://vault-0.vault-internal:8200"
    assert other["leader_cluster_address"] == "https://vault-0.vault-internal:8201"
    assert other["raft_committed_index"] >= other["raft_applied_index"] > 0


async def test_leader_status_of_a_sealed_replica_is_a_500(vault: Any) -> None:
    cluster, servers = vault
    cluster.seal(1)
    with pytest.raises(hvac.exceptions.InternalServerError) as err:
        await call(client(servers[1]).sys.read_leader_status)
    assert err.value.errors == ["Vault is sealed"]


async def test_a_leader_is_elected_once_a_quorum_is_unsealed(vault: Any) -> None:
    cluster, servers = vault
    cluster.seal_all()
    c0, c1 = client(servers[0]), client(servers[1])
    await call(lambda: c1.sys.submit_unseal_keys(cluster.unseal_keys_hex[:3]))
    lonely = await call(c1.sys.read_leader_status)
    assert lonely["is_self"] is False and lonely["leader_address"] == ""  # 1 of 3: no quorum
    await call(lambda: c0.sys.submit_unseal_keys(cluster.unseal_keys_hex[2:5]))
    views = [await call(c.sys.read_leader_status) for c in (c0, c1)]
    assert sum(v["is_self"] for v in views) == 1
    assert views[0]["leader_address"] == views[1]["leader_address"] != ""


async def test_raft_configuration_lists_peers_with_the_token(vault: Any) -> None:
    cluster, servers = vault
    config = await call(client(servers[1], cluster.root_token).sys.read_raft_config)
    assert {"request_id", "lease_id", "renewable", "lease_duration", "wrap_info", "warnings", "auth"} <= set(config)
    peers = config["data"]["config"]["servers"]
    assert [p["node_id"] for p in peers] == ["vault-0", "vault-1", "vault-2"]
    assert [p["leader"] for p in peers] == [True, False, False]
    assert all(p["voter"] and p["protocol_version"] == "3" for p in peers)
    assert peers[1]["address"] == "vault-1.vault-internal:8201"


async def test_raft_configuration_without_a_token_is_forbidden(vault: Any) -> None:
    _, servers = vault
    with pytest.raises(hvac.exceptions.Forbidden) as err:
        await call(client(servers[0]).sys.read_raft_config)
    assert err.value.errors == ["permission denied"]
    with pytest.raises(hvac.exceptions.Forbidden):
        await call(client(servers[0], "hvs.wrong").sys.read_raft_config)


async def test_without_a_leader_standbys_cannot_forward(vault: Any) -> None:
    cluster, servers = vault
    cluster.set_no_leader(True)
    views = [await call(client(s).sys.read_leader_status) for s in servers]
    assert not any(v["is_self"] for v in views) and all(v["leader_address"] == "" for v in views)
    with pytest.raises(hvac.exceptions.InternalServerError) as err:
        await call(client(servers[0], cluster.root_token).sys.read_raft_config)
    assert err.value.errors == ["local node not active but active cluster node not found"]
    health = await call(lambda: client(servers[0]).sys.read_health_status(method="GET"))
    assert health.status_code == 429
    cluster.set_no_leader(False)
    assert (await call(client(servers[0]).sys.read_leader_status))["is_self"] is True


async def test_step_down_hands_leadership_to_another_voter(vault: Any) -> None:
    cluster, servers = vault
    await call(client(servers[0], cluster.root_token).sys.step_down)
    views = [await call(client(s).sys.read_leader_status) for s in servers]
    assert [v["is_self"] for v in views] == [False, True, False]


# -- sealed and unreachable --------------------------------------------------------------------
async def test_a_sealed_replica_refuses_secret_reads_with_503(vault: Any) -> None:
    cluster, servers = vault
    cluster.seal(0)
    c = client(servers[0], cluster.root_token)
    with pytest.raises(hvac.exceptions.VaultDown) as err:
        await call(lambda: c.read("pki_int/roles/example-dot-com"))
    assert err.value.errors == ["Vault is sealed"]
    with pytest.raises(hvac.exceptions.VaultDown):
        await call(c.sys.list_mounted_secrets_engines)


async def test_an_unreachable_replica_refuses_connections_and_comes_back(vault: Any) -> None:
    cluster, servers = vault
    cluster.set_reachable(1, False)
    await servers[1].sync()
    with pytest.raises(requests.ConnectionError):
        await call(client(servers[1]).sys.read_seal_status)
    assert (await call(client(servers[0]).sys.read_seal_status))["sealed"] is False
    cluster.set_reachable(1, True)
    await servers[1].sync()
    assert (await call(client(servers[1]).sys.read_seal_status))["sealed"] is False


async def test_losing_the_leader_replica_moves_leadership(vault: Any) -> None:
    cluster, servers = vault
    cluster.set_reachable(0, False)
    await servers[0].sync()
    views = [await call(client(s).sys.read_leader_status) for s in servers[1:]]
    assert [v["is_self"] for v in views] == [True, False]
    assert views[1]["leader_address"] == "http://vault-1.vault-internal:8200"


# -- PKI, auth, mounts -------------------------------------------------------------------------
async def test_pki_int_ca_is_public_and_parses_as_a_certificate(vault: Any) -> None:
    from cryptography import x509

    _, servers = vault
    c = client(servers[1])
    pem = await call(lambda: c.secrets.pki.read_ca_certificate(mount_point="pki_int"))
    cert = x509.load_pem_x509_certificate(pem.encode())
    assert "Intermediate" in cert.subject.rfc4514_string()
    chain = await call(lambda: c.read("pki_int/cert/ca_chain"))
    assert chain["data"]["certificate"].count("BEGIN CERTIFICATE") == 2
    ca = await call(lambda: c.read("pki_int/cert/ca"))
    assert ca["data"]["certificate"] == pem


async def test_pki_role_needs_a_token_and_allows_the_domain(vault: Any) -> None:
    cluster, servers = vault
    with pytest.raises(hvac.exceptions.Forbidden):
        await call(lambda: client(servers[0]).read("pki_int/roles/example-dot-com"))
    role = await call(lambda: client(servers[0], cluster.root_token).read("pki_int/roles/example-dot-com"))
    assert role["data"]["allowed_domains"] == ["example.com"] and role["data"]["allow_subdomains"] is True
    listed = await call(lambda: client(servers[0], cluster.root_token).list("pki_int/roles"))
    assert listed["data"]["keys"] == ["example-dot-com"]


async def test_missing_role_and_unmounted_path_are_404(vault: Any) -> None:
    cluster, servers = vault
    c = client(servers[0], cluster.root_token)
    assert await call(lambda: c.read("pki_int/roles/nope")) is None  # hvac maps 404 to None
    with pytest.raises(hvac.exceptions.InvalidPath) as missing:
        await call(lambda: c.adapter.get("/v1/pki_int/roles/nope"))
    assert missing.value.errors == []
    cluster.disable_mount("pki_int")
    with pytest.raises(hvac.exceptions.InvalidPath) as unmounted:
        await call(lambda: c.adapter.get("/v1/pki_int/cert/ca_chain"))
    assert "no handler for route" in unmounted.value.errors[0]


async def test_kubernetes_auth_config_and_cert_manager_role(vault: Any) -> None:
    cluster, servers = vault
    c = client(servers[2], cluster.root_token)
    config = await call(lambda: c.read("auth/kubernetes/config"))
    assert config["data"]["kubernetes_host"].startswith("https://")
    assert "BEGIN CERTIFICATE" in config["data"]["kubernetes_ca_cert"]
    role = await call(lambda: c.read("auth/kubernetes/role/cert-manager-issuer"))
    assert role["data"]["bound_service_account_names"] == ["vault-issuer"]
    assert role["data"]["bound_service_account_namespaces"] == ["cert-manager"]


async def test_mount_tables_list_pki_int_and_kubernetes_auth(vault: Any) -> None:
    cluster, servers = vault
    c = client(servers[0], cluster.root_token)
    mounts = await call(c.sys.list_mounted_secrets_engines)
    assert mounts["data"]["pki_int/"]["type"] == "pki"
    auths = await call(c.sys.list_auth_methods)
    assert auths["data"]["kubernetes/"]["type"] == "kubernetes"
