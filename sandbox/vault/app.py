"""One Vault replica's HTTP API (``make_app(cluster, index)``): the sys endpoints the runbook's
`vault status` / `vault operator unseal` / `raft list-peers` use, the `pki_int` mount, and
Kubernetes auth (runbook ch. 4–5). Check order follows Vault: sealed (503) → standby
forwarding (500 without an active node) → token (403) → route (404)."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sandbox.vault.responses import envelope, pem_body, vault_error, vault_json
from sandbox.vault.state import BUILD_DATE, JoinError, UnsealError, VaultCluster

CLUSTER_KEY: web.AppKey[VaultCluster] = web.AppKey("vault_cluster", VaultCluster)
INDEX_KEY: web.AppKey[int] = web.AppKey("vault_index", int)
NO_ACTIVE = "local node not active but active cluster node not found"
ZERO_TIME = "0001-01-01T00:00:00Z"


def make_app(cluster: VaultCluster, index: int) -> web.Application:
    app = web.Application()
    app[CLUSTER_KEY] = cluster
    app[INDEX_KEY] = index
    app.router.add_route("*", "/v1/{path:.*}", _dispatch)
    return app


# -- dispatch ----------------------------------------------------------------------------------
async def _dispatch(request: web.Request) -> web.StreamResponse:
    cluster, index = request.app[CLUSTER_KEY], request.app[INDEX_KEY]
    path = request.match_info["path"].strip("/")
    while "//" in path:
        path = path.replace("//", "/")
    method = request.method
    if method == "GET" and request.query.get("list", "").lower() in ("true", "1", "t"):
        method = "LIST"

    unauthenticated = _UNAUTH_SYS.get(path)
    if unauthenticated is not None:
        return await unauthenticated(request, cluster, index, method)

    replica = cluster.replicas[index]
    if replica.sealed:
        return vault_error(503, "Vault is sealed")
    if cluster.leader is None:
        return vault_error(500, NO_ACTIVE)
    if not (_pki_public(cluster, path) or _login_path(cluster, path)) and not _token_ok(request, cluster):
        return vault_error(403, "permission denied")
    body: dict[str, Any] = {}
    if method in ("POST", "PUT"):
        try:
            raw = json.loads(await request.text() or "{}")
        except ValueError:
            return vault_error(400, "failed to parse JSON input")
        body = raw if isinstance(raw, dict) else {}
    return _logical(cluster, index, path, method, body)


def _token_ok(request: web.Request, cluster: VaultCluster) -> bool:
    token = request.headers.get("X-Vault-Token", "")
    auth = request.headers.get("Authorization", "")
    if not token and auth.startswith("Bearer "):
        token = auth[len("Bearer "):]
    return bool(token) and token == cluster.root_token


def _login_path(cluster: VaultCluster, path: str) -> bool:
    """An auth method's login is unauthenticated (the JWT is the credential)."""
    parts = path.split("/")
    return len(parts) == 3 and parts[0] == "auth" and parts[2] == "login" and (parts[1] + "/") in cluster.auth_mounts


def _pki_public(cluster: VaultCluster, path: str) -> bool:
    """PKI's CA and cert reads are unauthenticated in Vault."""
    mount, _, rest = path.partition("/")
    if cluster.secret_mounts.get(mount + "/") != "pki":
        return False
    return rest in ("ca", "ca/pem", "ca_chain", "crl", "crl/pem") or rest.startswith("cert/")


# -- unauthenticated sys endpoints (answer while sealed) ---------------------------------------
SysHandler = Callable[[web.Request, VaultCluster, int, str], Awaitable[web.StreamResponse]]


def seal_status(cluster: VaultCluster, index: int) -> dict[str, Any]:
    r = cluster.replicas[index]
    body: dict[str, Any] = {
        "type": "shamir", "initialized": r.initialized, "sealed": r.sealed,
        "t": cluster.threshold if r.initialized else 0,
        "n": cluster.shares if r.initialized else 0,
        "progress": len(r.parts), "nonce": r.nonce, "version": cluster.version,
        "build_date": BUILD_DATE, "migration": False,
    }
    if not r.sealed:
        body["cluster_name"] = cluster.cluster_name
        body["cluster_id"] = cluster.cluster_id
    body["recovery_seal"] = False
    body["storage_type"] = "raft"
    return body


async def _seal_status(request: web.Request, cluster: VaultCluster, index: int, method: str) -> web.StreamResponse:
    if method != "GET":
        return vault_error(405)
    return vault_json(seal_status(cluster, index))


async def _init(request: web.Request, cluster: VaultCluster, index: int, method: str) -> web.StreamResponse:
    if method != "GET":
        return vault_error(405)
    return vault_json({"initialized": cluster.replicas[index].initialized})


async def _unseal(request: web.Request, cluster: VaultCluster, index: int, method: str) -> web.StreamResponse:
    if method not in ("PUT", "POST"):
        return vault_error(405)
    try:
        body = json.loads(await request.text() or "{}")
    except ValueError:
        return vault_error(400, "failed to parse JSON input")
    # Vault's UnsealRequest has no JSON tags: field names match case-insensitively.
    fields = {str(k).lower(): v for k, v in (body if isinstance(body, dict) else {}).items()}
    try:
        if fields.get("reset"):
            cluster.reset_unseal(index)
        elif not fields.get("key"):
            return vault_error(400, "'key' must be specified in request body as JSON, or 'reset' set to true")
        else:
            cluster.submit_unseal_key(index, str(fields["key"]))
    except UnsealError as exc:
        return vault_error(400, str(exc))
    return vault_json(seal_status(cluster, index))


def _status_param(request: web.Request, name: str, default: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        return None


def _bool_param(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return False
    lowered = raw.strip().lower()
    if lowered in ("1", "t", "true", "yes", "y", "on", ""):
        return True
    if lowered in ("0", "f", "false", "no", "n", "off"):
        return False
    return None


async def _health(request: web.Request, cluster: VaultCluster, index: int, method: str) -> web.StreamResponse:
    if method not in ("GET", "HEAD"):
        return vault_error(405)
    standby_ok = _bool_param(request, "standbyok")
    perf_ok = _bool_param(request, "perfstandbyok")
    codes = {name: _status_param(request, name, default) for name, default in (
        ("uninitcode", 501), ("sealedcode", 503), ("standbycode", 429), ("activecode", 200),
        ("drsecondarycode", 472), ("performancestandbycode", 473))}
    if standby_ok is None or perf_ok is None or any(c is None for c in codes.values()):
        return vault_error(400)
    r = cluster.replicas[index]
    standby = r.sealed or not cluster.is_active(index)
    if not r.initialized:
        code = codes["uninitcode"]
    elif r.sealed:
        code = codes["sealedcode"]
    elif standby and not standby_ok:
        code = codes["standbycode"]
    else:
        code = codes["activecode"]
    body: dict[str, Any] = {
        "initialized": r.initialized, "sealed": r.sealed, "standby": standby,
        "performance_standby": False, "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled", "server_time_utc": int(time.time()),
        "version": cluster.version,
    }
    if not r.sealed:
        body["cluster_name"] = cluster.cluster_name
        body["cluster_id"] = cluster.cluster_id
    if r.initialized and not r.sealed and not standby:
        body["last_wal"] = cluster.raft_index
    return vault_json(body, int(code or 200))


async def _leader(request: web.Request, cluster: VaultCluster, index: int, method: str) -> web.StreamResponse:
    if method != "GET":
        return vault_error(405)
    r = cluster.replicas[index]
    if r.sealed:
        return vault_error(500, "Vault is sealed")
    leader = cluster.leader
    active = leader == index
    if not active and index in cluster.lost_followers:
        leader = None
    since = cluster.replicas[index].active_since
    return vault_json({
        "ha_enabled": True, "is_self": active,
        "active_time": since.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if active and since else ZERO_TIME,
        "leader_address": cluster.api_addrs[leader] if leader is not None else "",
        "leader_cluster_address": cluster.cluster_addrs[leader] if leader is not None else "",
        "performance_standby": False, "performance_standby_last_remote_wal": 0,
        "raft_committed_index": cluster.raft_index, "raft_applied_index": cluster.raft_index,
    })


async def _raft_join(request: web.Request, cluster: VaultCluster, index: int, method: str) -> web.StreamResponse:
    """``POST sys/storage/raft/join``: answered by a node that has no Raft data yet (no token:
    an uninitialized node has none to check)."""
    if method not in ("PUT", "POST"):
        return vault_error(405)
    try:
        body = json.loads(await request.text() or "{}")
    except ValueError:
        return vault_error(400, "failed to parse JSON input")
    leader = str((body if isinstance(body, dict) else {}).get("leader_api_addr") or "")
    if not leader:
        return vault_error(400, "leader_api_addr or auto_join is required")
    try:
        cluster.join(index, leader)
    except JoinError as exc:
        return vault_error(exc.status, str(exc))
    return vault_json({"joined": True})


_UNAUTH_SYS: dict[str, SysHandler] = {
    "sys/storage/raft/join": _raft_join,
    "sys/seal-status": _seal_status,
    "sys/init": _init,
    "sys/unseal": _unseal,
    "sys/health": _health,
    "sys/leader": _leader,
}


# -- logical paths (unsealed, active node reachable, token checked) ----------------------------
def _logical(cluster: VaultCluster, index: int, path: str, method: str,
             body: dict[str, Any] | None = None) -> web.StreamResponse:
    body = body or {}
    if path.startswith("sys/"):
        return _sys(cluster, index, path, method)
    if path.startswith("auth/"):
        return _auth(cluster, path, method, body)
    mount, _, rest = path.partition("/")
    kind = cluster.secret_mounts.get(mount + "/")
    if kind == "pki":
        return _pki(cluster, rest, method, body)
    if kind is None:
        return vault_error(404, f'no handler for route "{path}". route entry not found.')
    return vault_error(404)


def _sys(cluster: VaultCluster, index: int, path: str, method: str) -> web.StreamResponse:
    if path == "sys/storage/raft/configuration" and method == "GET":
        servers = [{
            "node_id": r.name,
            "address": cluster.cluster_addrs[r.index].split("://", 1)[-1],
            "leader": cluster.leader == r.index,
            "protocol_version": "3",
            "voter": True,
        } for r in cluster.replicas if r.initialized]
        return vault_json(envelope({"config": {"index": cluster.raft_index, "servers": servers}}))
    if path == "sys/storage/raft/autopilot/state" and method == "GET":
        return vault_json(envelope(_autopilot_state(cluster)))
    if path == "sys/mounts" and method == "GET":
        return vault_json(_mount_table(cluster, cluster.secret_mounts))
    if path == "sys/auth" and method == "GET":
        return vault_json(_mount_table(cluster, cluster.auth_mounts))
    if path == "sys/seal" and method in ("PUT", "POST"):
        cluster.seal(index)
        return web.Response(status=204)
    if path == "sys/step-down" and method in ("PUT", "POST"):
        cluster.step_down()
        return web.Response(status=204)
    return vault_error(404, "1 error occurred:\n\t* unsupported path\n\n")


def _autopilot_state(cluster: VaultCluster) -> dict[str, Any]:
    """What the active node's autopilot reports about each Raft server: healthy when it is
    unsealed, reachable and hearing the leader (a sealed or cut-off peer's last contact grows)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 3600))
    servers: dict[str, Any] = {}
    for r in cluster.replicas:
        if not r.initialized:
            continue
        leader = cluster.leader == r.index
        healthy = r.reachable and not r.sealed and r.index not in cluster.lost_followers
        servers[r.name] = {
            "id": r.name, "name": r.name, "address": cluster.cluster_addrs[r.index].split("://", 1)[-1],
            "node_status": "alive", "node_type": "voter", "status": "leader" if leader else "voter",
            "last_contact": "0s" if leader else ("612.4ms" if healthy else "47.3s"),
            "last_term": 3, "last_index": cluster.raft_index if healthy else cluster.raft_index - 40,
            "healthy": healthy, "stable_since": stamp if healthy else ZERO_TIME, "version": cluster.version,
            "meta": None}
    voters = sorted(servers)
    healthy_voters = sum(1 for v in servers.values() if v["healthy"])
    return {"healthy": all(v["healthy"] for v in servers.values()),
            "failure_tolerance": max(0, healthy_voters - (len(voters) // 2 + 1)),
            "leader": cluster.replicas[cluster.leader].name if cluster.leader is not None else "",
            "servers": servers, "voters": voters, "non_voters": None}


def _mount_table(cluster: VaultCluster, mounts: dict[str, str]) -> dict[str, Any]:
    table = {path: {
        "accessor": cluster.mount_accessors.get(path, ""),
        "config": {"default_lease_ttl": 0, "force_no_cache": False, "max_lease_ttl": 0},
        "description": "", "external_entropy_access": False, "local": path == "cubbyhole/",
        "options": None, "plugin_version": "", "running_plugin_version": f"v{cluster.version}+builtin.vault",
        "running_sha256": "", "seal_wrap": False, "type": kind, "uuid": cluster.mount_accessors.get(path, ""),
    } for path, kind in sorted(mounts.items())}
    # Vault still mirrors the table at the top level for old clients.
    return {**table, **envelope(table)}


# Fields `vault write auth/kubernetes/config` accepts (the rest of the read answer is derived).
K8S_CONFIG_FIELDS = ("kubernetes_host", "kubernetes_ca_cert", "issuer", "disable_iss_validation",
                     "disable_local_ca_jwt", "pem_keys", "token_reviewer_jwt", "use_annotations_as_alias_metadata")
K8S_ROLE_LISTS = ("bound_service_account_names", "bound_service_account_namespaces", "policies", "token_policies",
                  "token_bound_cidrs")


def _ttl(value: Any) -> int:
    """Vault durations: seconds, or "1h"/"30m"/"720h"."""
    text = str(value).strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return int(text[:-1]) * units[text[-1]]
    return int(text) if text.isdigit() else 0


def _as_list(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _write_k8s_role(cluster: VaultCluster, name: str, body: dict[str, Any]) -> None:
    role = dict(cluster.k8s_roles.get(name) or {
        "alias_name_source": "serviceaccount_uid", "bound_service_account_names": [],
        "bound_service_account_namespaces": [], "policies": [], "token_policies": [], "ttl": 0,
        "token_ttl": 0, "max_ttl": 0, "token_max_ttl": 0, "token_bound_cidrs": [],
        "token_explicit_max_ttl": 0, "token_no_default_policy": False, "token_num_uses": 0,
        "token_period": 0, "token_type": "default"})
    for key, value in body.items():
        if key in K8S_ROLE_LISTS:
            role[key] = _as_list(value)
        elif key in ("ttl", "token_ttl", "max_ttl", "token_max_ttl"):
            role[key] = _ttl(value)
        elif key == "alias_name_source":
            role[key] = str(value)
    # Vault keeps the legacy and the token_ fields in step.
    if "policies" in body:
        role["token_policies"] = role["policies"]
    if "ttl" in body:
        role["token_ttl"] = role["ttl"]
    cluster.k8s_roles[name] = role


def _auth(cluster: VaultCluster, path: str, method: str, body: dict[str, Any]) -> web.StreamResponse:
    parts = path.split("/")
    if len(parts) < 2 or cluster.auth_mounts.get(parts[1] + "/") is None:
        return vault_error(404, f'no handler for route "{path}". route entry not found.')
    if cluster.auth_mounts[parts[1] + "/"] != "kubernetes":
        return vault_error(404, "1 error occurred:\n\t* unsupported path\n\n")
    rest = "/".join(parts[2:])
    if rest == "config" and method == "GET":
        return vault_json(envelope(cluster.k8s_auth_config, mount_type="kubernetes"))
    if rest == "config" and method in ("PUT", "POST"):
        if not body.get("kubernetes_host"):
            return vault_error(400, "no host provided")
        config = dict(cluster.k8s_auth_config)
        for key in K8S_CONFIG_FIELDS:
            if key in body:
                config[key] = body[key]
        config["token_reviewer_jwt_set"] = bool(config.pop("token_reviewer_jwt", None)) or \
            bool(cluster.k8s_auth_config.get("token_reviewer_jwt_set"))
        cluster.k8s_auth_config = config
        return web.Response(status=204)
    if rest.startswith("role/") and method in ("PUT", "POST"):
        name = rest[len("role/"):]
        if not name or "/" in name:
            return vault_error(404)
        if not body.get("bound_service_account_names") and name not in cluster.k8s_roles:
            return vault_error(400, '"bound_service_account_names" can not be empty')
        _write_k8s_role(cluster, name, body)
        return web.Response(status=204)
    if rest == "login" and method in ("PUT", "POST"):
        if not body.get("role"):
            return vault_error(400, "missing role")
        if not body.get("jwt"):
            return vault_error(400, "missing jwt")
        answer = cluster.login(parts[1], str(body["role"]), str(body["jwt"]))
        if isinstance(answer, tuple):
            return vault_error(*answer)
        return vault_json({**envelope(None, mount_type="kubernetes"), "auth": answer})
    if rest == "role" and method == "LIST":
        return vault_json(envelope({"keys": sorted(cluster.k8s_roles)}, mount_type="kubernetes"))
    if rest.startswith("role/") and method == "GET":
        role = cluster.k8s_roles.get(rest[len("role/"):])
        if role is None:
            return vault_error(404)
        return vault_json(envelope(role, mount_type="kubernetes"))
    return vault_error(405 if rest in ("config", "login") else 404)


PKI_ROLE_BOOLS = ("allow_any_name", "allow_bare_domains", "allow_glob_domains", "allow_ip_sans", "allow_localhost",
                  "allow_subdomains", "client_flag", "enforce_hostnames", "generate_lease", "no_store",
                  "require_cn", "server_flag")


def _write_pki_role(cluster: VaultCluster, name: str, body: dict[str, Any]) -> None:
    """``vault write pki_int/roles/<name>``: unset fields take Vault's defaults."""
    role = dict(cluster.pki_roles.get(name) or {
        "allow_any_name": False, "allow_bare_domains": False, "allow_glob_domains": False,
        "allow_ip_sans": True, "allow_localhost": True, "allow_subdomains": False, "allowed_domains": [],
        "client_flag": True, "enforce_hostnames": True, "generate_lease": False, "key_bits": 2048,
        "key_type": "rsa", "max_ttl": 0, "no_store": False, "require_cn": True, "server_flag": True, "ttl": 0})
    for key, value in body.items():
        if key == "allowed_domains":
            role[key] = _as_list(value)
        elif key in PKI_ROLE_BOOLS:
            role[key] = value if isinstance(value, bool) else str(value).lower() in ("1", "t", "true")
        elif key in ("ttl", "max_ttl"):
            role[key] = _ttl(value)
    cluster.pki_roles[name] = role


def _pki(cluster: VaultCluster, rest: str, method: str, body: dict[str, Any]) -> web.StreamResponse:
    pki = cluster.pki
    assert pki is not None
    chain = pki.intermediate.pem + pki.root.pem
    if not cluster.pki_imported and method == "GET" and rest in ("ca", "ca/pem", "ca_chain", "cert/ca", "cert/ca_chain"):
        return vault_error(400, "no default issuer currently configured")
    if method == "GET" and rest == "ca/pem":
        return pem_body(pki.intermediate.pem)
    if method == "GET" and rest == "ca_chain":
        return pem_body(chain)
    if method == "GET" and rest in ("cert/ca", "cert/ca_chain"):
        data = {"certificate": pki.intermediate.pem if rest == "cert/ca" else chain,
                "revocation_time": 0, "revocation_time_rfc3339": "",
                "ca_chain": [pki.intermediate.pem, pki.root.pem]}
        return vault_json(envelope(data, mount_type="pki"))
    if method == "LIST" and rest in ("roles", "roles/"):
        if not cluster.pki_roles:  # Vault answers an empty LIST with a bare 404
            return vault_error(404)
        return vault_json(envelope({"keys": sorted(cluster.pki_roles)}, mount_type="pki"))
    if method == "GET" and rest.startswith("roles/"):
        role = cluster.pki_roles.get(rest[len("roles/"):])
        if role is None:
            return vault_error(404)
        return vault_json(envelope(role, mount_type="pki"))
    if method in ("PUT", "POST") and rest.startswith("roles/") and "/" not in rest[len("roles/"):]:
        _write_pki_role(cluster, rest[len("roles/"):], body)
        return web.Response(status=204)
    return vault_error(404)
