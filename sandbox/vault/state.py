"""State of the sandbox's 3-replica Vault (Raft storage, Shamir seal), shared by all listeners.

Semantics follow Vault: an unseal share cannot be checked alone, so well-formed shares are
collected until the threshold and only then combined; a bad combination answers
"Unseal failed, invalid key" and starts over. A Raft leader needs a quorum of unsealed,
reachable, joined replicas. Keys and the root token never appear in ``repr`` or errors.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sandbox.vault.pki import PkiMaterial, make_pki

VERSION = "1.15.6"
BUILD_DATE = "2024-02-28T17:07:34Z"
KEY_BYTES = 33  # a Shamir share: 32-byte key + 1 byte x-coordinate, as Vault hands them out
DOMAIN = "example.com"


class UnsealError(Exception):
    """A 400 from sys/unseal; the message is Vault's wording and never contains the key."""


class JoinError(Exception):
    """sys/storage/raft/join refused: (status, Vault's wording)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def decode_key(key: str) -> bytes:
    """Hex first, then base64, as Vault does; ``UnsealError`` if neither fits."""
    try:
        raw = bytes.fromhex(key)
        if 16 <= len(raw) <= KEY_BYTES:
            return raw
    except ValueError:
        pass
    try:
        return base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise UnsealError("'key' must be a valid hex or base64 string") from None


@dataclass
class Replica:
    index: int
    name: str
    initialized: bool = True
    sealed: bool = False
    reachable: bool = True
    parts: list[bytes] = field(default_factory=list, repr=False)
    nonce: str = ""
    active_since: datetime | None = None

    def reset_unseal(self) -> None:
        self.parts = []
        self.nonce = ""


@dataclass
class VaultCluster:
    """Three replicas of one Vault cluster. Build with ``VaultCluster.create()``."""

    replicas: list[Replica]
    shares: int
    threshold: int
    unseal_keys: list[bytes] = field(repr=False)
    root_token: str = field(repr=False)
    cluster_name: str = ""
    cluster_id: str = ""
    version: str = VERSION
    api_addrs: list[str] = field(default_factory=list)
    cluster_addrs: list[str] = field(default_factory=list)
    no_leader: bool = False  # a scenario's "Raft cannot elect" (runbook 5.3)
    # Standbys that lost the leader's heartbeats while it still holds the active lock (a stuck
    # leader, 5.3 step 6): they report no leader until a new election (step-down).
    lost_followers: set[int] = field(default_factory=set)
    # The long-lived token_reviewer_jwt of the auth config expired (runbook 5.5: "ServiceAccount
    # token expired"): every TokenReview Vault makes with it is refused by the API server.
    reviewer_expired: bool = False
    # pki_int has its intermediate imported (runbook 5.4 step 2); False: a freshly enabled mount.
    pki_imported: bool = True
    leader: int | None = None
    raft_index: int = 4200
    secret_mounts: dict[str, str] = field(default_factory=dict)
    auth_mounts: dict[str, str] = field(default_factory=dict)
    mount_accessors: dict[str, str] = field(default_factory=dict)
    k8s_auth_config: dict[str, Any] = field(default_factory=dict)
    k8s_roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    pki_roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    pki: PkiMaterial | None = field(default=None, repr=False)
    # What Vault's Kubernetes auth asks the cluster's TokenReview API: (host, CA PEM, JWT) →
    # the token's claims, or an error in Vault's words. Wired by the sandbox platform to its
    # API server; None: every login is refused as Vault does when the review fails.
    token_reviewer: Callable[[str, str, str], dict[str, Any] | tuple[int, str]] | None = field(default=None, repr=False)
    _observers: list[Callable[[int], None]] = field(default_factory=list, repr=False)

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def create(cls, replicas: int = 3, shares: int = 5, threshold: int = 3,
               domain: str = DOMAIN) -> VaultCluster:
        """An initialized, unsealed cluster with vault-0 as Raft leader (the healthy baseline)."""
        names = [f"vault-{i}" for i in range(replicas)]
        cluster = cls(
            replicas=[Replica(i, n) for i, n in enumerate(names)],
            shares=shares, threshold=threshold,
            unseal_keys=[secrets.token_bytes(KEY_BYTES) for _ in range(shares)],
            root_token="hvs." + secrets.token_urlsafe(18),
            cluster_name="vault-cluster-" + secrets.token_hex(4),
            cluster_id=str(uuid.uuid4()),
            api_addrs=[f"http://{n}.vault-internal:8200" for n in names],
            cluster_addrs=[f"https://{n}.vault-internal:8201" for n in names],
        )
        cluster.secret_mounts = {"cubbyhole/": "cubbyhole", "identity/": "identity",
                                 "sys/": "system", "pki_int/": "pki"}
        cluster.auth_mounts = {"token/": "token", "kubernetes/": "kubernetes"}
        cluster.mount_accessors = {p: f"{t}_{secrets.token_hex(4)}" for p, t in
                                   {**cluster.secret_mounts, **cluster.auth_mounts}.items()}
        cluster.pki = make_pki()
        cluster.k8s_auth_config = {
            "disable_iss_validation": True,
            "disable_local_ca_jwt": False,
            "issuer": "https://kubernetes.default.svc.cluster.local",
            "kubernetes_ca_cert": cluster.pki.kube_ca.pem,
            "kubernetes_host": "https://10.43.0.1:443",
            "pem_keys": [],
            "token_reviewer_jwt_set": True,
            "use_annotations_as_alias_metadata": False,
        }
        cluster.k8s_roles = {"cert-manager-issuer": {
            "alias_name_source": "serviceaccount_uid",
            "bound_service_account_names": ["vault-issuer"],
            "bound_service_account_namespaces": ["cert-manager"],
            "policies": ["cert-manager"], "token_policies": ["cert-manager"],
            "ttl": 3600, "token_ttl": 3600, "max_ttl": 0, "token_max_ttl": 0,
            "token_bound_cidrs": [], "token_explicit_max_ttl": 0, "token_no_default_policy": False,
            "token_num_uses": 0, "token_period": 0, "token_type": "default",
        }}
        role = domain.replace(".", "-dot-")
        cluster.pki_roles = {role: {
            "allow_any_name": False, "allow_bare_domains": False, "allow_glob_domains": False,
            "allow_ip_sans": True, "allow_localhost": True, "allow_subdomains": True,
            "allowed_domains": [domain], "client_flag": True, "enforce_hostnames": True,
            "generate_lease": True, "key_bits": 2048, "key_type": "rsa", "max_ttl": 2592000,
            "no_store": False, "require_cn": False, "server_flag": True, "ttl": 0,
        }}
        cluster.elect()
        return cluster

    # -- secrets for the sandbox's own files (never logged) -------------------------------------
    @property
    def unseal_keys_hex(self) -> list[str]:
        return [k.hex() for k in self.unseal_keys]

    @property
    def unseal_keys_b64(self) -> list[str]:
        return [base64.b64encode(k).decode() for k in self.unseal_keys]

    def init_json(self) -> dict[str, Any]:
        """What ``vault operator init -format=json`` printed: the runbook's vault-init.json."""
        return {"unseal_keys_b64": self.unseal_keys_b64, "unseal_keys_hex": self.unseal_keys_hex,
                "unseal_shares": self.shares, "unseal_threshold": self.threshold,
                "recovery_keys_b64": [], "recovery_keys_hex": [], "recovery_keys_shares": 0,
                "recovery_keys_threshold": 0, "root_token": self.root_token}

    # -- observers (listeners follow reachability) ----------------------------------------------
    def observe(self, fn: Callable[[int], None]) -> None:
        self._observers.append(fn)

    def unobserve(self, fn: Callable[[int], None]) -> None:
        self._observers = [o for o in self._observers if o is not fn]

    def _changed(self, index: int) -> None:
        self.elect()
        for fn in list(self._observers):
            fn(index)

    # -- Raft ----------------------------------------------------------------------------------
    def voters(self) -> list[Replica]:
        """Replicas taking part in Raft: joined, unsealed and reachable."""
        return [r for r in self.replicas if r.initialized and not r.sealed and r.reachable]

    def elect(self) -> None:
        """Keep the current leader while it can lead; else the lowest eligible replica, if a
        quorum (majority of joined peers) is up and no scenario blocks the election."""
        joined = [r for r in self.replicas if r.initialized]
        voters = self.voters()
        if self.no_leader or len(voters) <= len(joined) // 2:
            new = None
        elif self.leader is not None and self.replicas[self.leader] in voters:
            new = self.leader
        else:
            new = voters[0].index
        if new != self.leader:
            for r in self.replicas:
                r.active_since = None
            if new is not None:
                self.replicas[new].active_since = now_utc()
                self.raft_index += 3  # a new term writes a few entries
            self.leader = new

    def step_down(self) -> None:
        """The active node gives up leadership; another voter takes over if one can."""
        old = self.leader
        voters = [r for r in self.voters() if r.index != old]
        if old is None or not voters or self.no_leader:
            return
        self.replicas[old].active_since = None
        self.lost_followers.clear()  # the new term's heartbeats reach everyone
        self.leader = voters[0].index
        self.replicas[self.leader].active_since = now_utc()
        self.raft_index += 3
        for fn in list(self._observers):
            fn(old)

    def is_active(self, index: int) -> bool:
        return self.leader == index

    # -- mutations used by the API and by scenarios ---------------------------------------------
    def seal(self, index: int) -> None:
        r = self.replicas[index]
        r.sealed = True
        r.reset_unseal()
        self._changed(index)

    def seal_all(self) -> None:
        for r in self.replicas:
            self.seal(r.index)

    def set_reachable(self, index: int, reachable: bool) -> None:
        self.replicas[index].reachable = reachable
        self._changed(index)

    def set_no_leader(self, blocked: bool) -> None:
        self.no_leader = blocked
        self._changed(self.leader if self.leader is not None else 0)

    def set_initialized(self, index: int, initialized: bool) -> None:
        """``False``: the replica lost its Raft data and must rejoin (runbook 5.2 step 2)."""
        r = self.replicas[index]
        r.initialized = initialized
        r.sealed = True
        r.reset_unseal()
        self._changed(index)

    def join(self, index: int, leader_api_addr: str) -> None:
        """``sys/storage/raft/join`` on a replica without Raft data: it becomes a sealed peer that
        is unsealed with the cluster's keys (Vault: "joined, answer the challenge after unseal")."""
        r = self.replicas[index]
        if r.initialized:
            raise JoinError(400, "raft storage is already initialized")
        target = next((i for i, a in enumerate(self.api_addrs) if a.rstrip("/") == leader_api_addr.rstrip("/")), None)
        if target is None or self.leader != target:
            raise JoinError(500, f"failed to join raft cluster: error during raft bootstrap init call: "
                                 f"no leader found at {leader_api_addr}")
        r.initialized = True
        r.sealed = True
        r.reset_unseal()
        self._changed(index)

    def login(self, mount: str, role_name: str, jwt: str) -> dict[str, Any] | tuple[int, str]:
        """``auth/<mount>/login`` of the Kubernetes method: the role's bindings, then the token
        reviewed by the cluster (config host and CA must be the cluster's). The auth block, or
        (status, Vault's error)."""
        role = self.k8s_roles.get(role_name)
        if role is None:
            return 400, f'invalid role name "{role_name}"'
        config = self.k8s_auth_config
        if self.token_reviewer is None or not config.get("kubernetes_host"):
            return 403, "permission denied"
        if self.reviewer_expired and config.get("token_reviewer_jwt_set"):
            return 403, "permission denied"  # the review itself answered 401 Unauthorized
        claims = self.token_reviewer(str(config.get("kubernetes_host")), str(config.get("kubernetes_ca_cert") or ""), jwt)
        if isinstance(claims, tuple):
            return claims
        if not config.get("disable_iss_validation") and config.get("issuer") and claims.get("iss") != config["issuer"]:
            return 403, "invalid issuer (iss) claim"
        k8s = claims.get("kubernetes.io") or {}
        sa, ns = (k8s.get("serviceaccount") or {}).get("name", ""), k8s.get("namespace", "")
        names = role.get("bound_service_account_names") or []
        spaces = role.get("bound_service_account_namespaces") or []
        if "*" not in names and sa not in names:
            return 403, "service account name not authorized"
        if "*" not in spaces and ns not in spaces:
            return 403, "namespace not authorized"
        return {"client_token": "hvs." + secrets.token_urlsafe(18), "accessor": secrets.token_urlsafe(12),
                "policies": ["default", *role.get("token_policies", [])],
                "token_policies": ["default", *role.get("token_policies", [])],
                "metadata": {"role": role_name, "service_account_name": sa, "service_account_namespace": ns,
                             "service_account_uid": (k8s.get("serviceaccount") or {}).get("uid", ""),
                             "service_account_secret_name": ""},
                "lease_duration": int(role.get("token_ttl") or 3600), "renewable": True,
                "entity_id": str(uuid.uuid4()), "token_type": "service", "orphan": True,
                "mfa_requirement": None, "num_uses": 0}

    def reset_unseal(self, index: int) -> None:
        r = self.replicas[index]
        if not r.sealed:
            raise UnsealError("vault is unsealed")
        r.reset_unseal()

    def submit_unseal_key(self, index: int, key: str) -> None:
        """One share towards the threshold; raises ``UnsealError`` with Vault's wording."""
        r = self.replicas[index]
        raw = decode_key(key)
        if not r.initialized:
            raise UnsealError("Vault is not initialized")
        if not r.sealed:
            return  # Vault answers the seal status unchanged
        if len(raw) < 16:
            raise UnsealError("key is shorter than minimum 16 bytes")
        if any(secrets.compare_digest(raw, p) for p in r.parts):
            return  # a repeated share does not count twice
        if not r.parts:
            r.nonce = str(uuid.uuid4())
        r.parts.append(raw)
        if len(r.parts) < self.threshold:
            return
        valid = all(any(secrets.compare_digest(p, k) for k in self.unseal_keys) for p in r.parts)
        r.reset_unseal()
        if not valid:
            raise UnsealError("Unseal failed, invalid key")
        r.sealed = False
        self._changed(index)

    def unseal(self, index: int) -> None:
        """Shortcut for scenarios and fixtures: unseal as if the operator typed the keys."""
        for key in self.unseal_keys_hex[: self.threshold]:
            self.submit_unseal_key(index, key)

    def unseal_all(self) -> None:
        for r in self.replicas:
            if r.initialized and r.sealed:
                self.unseal(r.index)

    def set_intermediate_days(self, days: int) -> None:
        """Re-issue the pki_int intermediate with ``days`` of validity left (negative: expired)."""
        self.pki = make_pki(intermediate_days=days, keep=self.pki)  # the same offline root signs it

    def disable_mount(self, path: str) -> None:
        self.secret_mounts.pop(path.rstrip("/") + "/", None)

    def enable_empty_pki(self, path: str = "pki_int") -> None:
        """``vault secrets enable -path=pki_int pki`` after the old mount was lost: mounted, but
        no issuer imported and no role (5.4 steps 2–3 still to do)."""
        key = path.rstrip("/") + "/"
        self.secret_mounts[key] = "pki"
        self.mount_accessors[key] = f"pki_{secrets.token_hex(4)}"
        self.pki_imported = False
        self.pki_roles = {}
