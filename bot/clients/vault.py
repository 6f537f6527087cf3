"""Vault replicas through hvac. hvac is synchronous: each call runs in a worker thread with a
timeout, one client per replica address (each replica must be asked about itself)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bot.clients.errors import SourceError

if TYPE_CHECKING:
    import hvac

T = TypeVar("T")


class VaultPool:
    def __init__(self, addrs: list[str], token: str | None = None, timeout_s: float = 5.0,
                 verify: bool | str = True, names: list[str] | None = None):
        self.addrs = list(addrs)
        self.names = names or [f"vault-{i}" for i in range(len(addrs))]
        self.timeout_s = timeout_s
        self._token, self._verify = token, verify
        self._clients: dict[str, hvac.Client] = {}  # made at first call: see _client
        self.has_token = token is not None

    def _client(self, addr: str) -> hvac.Client:
        if addr not in self._clients:
            # hvac and requests cost ~5 MB of RSS: an idle bot has not asked Vault anything yet.
            import hvac

            self._clients[addr] = hvac.Client(url=addr, token=self._token, timeout=self.timeout_s,
                                              verify=self._verify)
        return self._clients[addr]

    def name_of(self, addr: str) -> str:
        return self.names[self.addrs.index(addr)]

    async def call(self, addr: str, fn: Callable[[hvac.Client], T]) -> T:
        """Run ``fn(client)`` for one replica; failures become SourceError naming the replica."""
        import hvac.exceptions  # loaded by _client below anyway; here for the except clauses
        import requests

        name = self.name_of(addr)
        try:
            async with asyncio.timeout(self.timeout_s + 1):
                return await asyncio.to_thread(fn, self._client(addr))
        except TimeoutError:
            raise SourceError(name, f"no answer within {self.timeout_s:g}s") from None
        except requests.ConnectionError:
            raise SourceError(name, f"unreachable at {addr}") from None
        except requests.Timeout:
            raise SourceError(name, f"no answer within {self.timeout_s:g}s") from None
        except hvac.exceptions.VaultError as exc:
            # hvac puts the server's "errors" list in the message; never request data.
            status = getattr(exc, "status_code", None) or _status_of(exc)
            reason = str(exc).split(", on ")[0] or exc.__class__.__name__
            raise SourceError(name, f"{exc.__class__.__name__}: {reason}", status=status) from None

    async def seal_status(self, addr: str) -> dict[str, Any]:
        return await self.call(addr, lambda c: c.sys.read_seal_status())

    async def leader(self, addr: str) -> dict[str, Any]:
        return await self.call(addr, lambda c: c.sys.read_leader_status())

    async def raft_configuration(self, addr: str) -> dict[str, Any]:
        return await self.call(addr, lambda c: c.sys.read_raft_config())

    async def autopilot_state(self, addr: str) -> dict[str, Any]:
        """``sys/storage/raft/autopilot/state`` (active node): each server's health and last contact."""
        answer = await self.call(addr, lambda c: c.read("sys/storage/raft/autopilot/state"))
        return dict((answer or {}).get("data") or {})

    async def first(self, fn: Callable[[hvac.Client], T]) -> T:
        """``fn`` on the first replica that answers (a standby serves reads or forwards them);
        the last replica's SourceError when none does."""
        error: SourceError | None = None
        for addr in self.addrs:
            try:
                return await self.call(addr, fn)
            except SourceError as exc:
                if exc.status in (400, 403, 404):  # an answer about the path, not the replica
                    raise
                error = exc
        raise error or SourceError("vault", "no Vault replica addresses configured")

    # -- PKI and auth reads (runbook 4.3, 5.4, 5.5); all read-only ---------------------------
    async def secret_mounts(self) -> dict[str, str]:
        """``sys/mounts``: mount path (``pki_int/``) → engine type (needs a token)."""
        data = await self.first(lambda c: c.sys.list_mounted_secrets_engines())
        table = data.get("data", data) if isinstance(data, dict) else {}
        return {path: str(m.get("type", "")) for path, m in table.items()
                if isinstance(m, dict) and "type" in m}

    async def pki_ca_chain(self, mount: str) -> str:
        """``GET /v1/<mount>/ca_chain``: the issuing CA and its parents as PEM (unauthenticated)."""
        return await self.first(lambda c: c.secrets.pki.read_ca_certificate_chain(mount_point=mount))

    async def pki_ca(self, mount: str) -> str:
        """``GET /v1/<mount>/cert/ca``: the issuing CA certificate (PEM, "" when none imported)."""
        data = await self.first(lambda c: c.read(f"{mount}/cert/ca"))
        return str(((data or {}).get("data") or {}).get("certificate") or "")

    async def pki_roles(self, mount: str) -> list[str]:
        """``LIST /v1/<mount>/roles``, sent as ``GET ?list=true`` (Vault's documented equivalent,
        which HTTP servers and proxies that reject the LIST verb pass); 404 when there is none."""
        try:
            data = await self.first(lambda c: c.adapter.get(f"/v1/{mount}/roles", params={"list": "true"}))
        except SourceError as exc:
            if exc.status == 404:
                return []
            raise
        return [str(k) for k in ((data or {}).get("data") or {}).get("keys") or []]

    async def auth_mounts(self) -> dict[str, str]:
        """``sys/auth``: auth method path (``kubernetes/``) → type (needs a token)."""
        data = await self.first(lambda c: c.sys.list_auth_methods())
        table = data.get("data", data) if isinstance(data, dict) else {}
        return {path: str(m.get("type", "")) for path, m in table.items()
                if isinstance(m, dict) and "type" in m}

    async def read_data(self, path: str) -> dict[str, Any] | None:
        """A logical read's ``data`` (``auth/kubernetes/config``, ``…/role/<name>``); None on 404."""
        answer = await self.first(lambda c: c.read(path))
        return (answer or {}).get("data") if answer is not None else None

    # -- writes (remediation actions only) ---------------------------------------------------
    async def raft_join(self, addr: str, leader_api_addr: str) -> dict[str, Any]:
        """``POST sys/storage/raft/join`` on a replica without Raft data (runbook 5.2 step 2);
        unauthenticated, as on an uninitialized node. ``{"joined": true}``."""
        answer = await self.call(addr, lambda c: c.sys.join_raft_cluster(leader_api_addr=leader_api_addr))
        return answer if isinstance(answer, dict) else {}

    async def step_down(self, addr: str) -> None:
        """``PUT sys/step-down`` on the active node (runbook 5.3 step 6; needs a token)."""
        await self.call(addr, lambda c: c.sys.step_down())

    async def write(self, path: str, data: dict[str, Any]) -> None:
        """A logical write (``pki_int/roles/<name>``, ``auth/kubernetes/config``…) on the first
        replica that answers; a standby forwards it to the active node."""
        await self.first(lambda c: c.write_data(path, data=data))

    async def kubernetes_login(self, role: str, jwt: str, mount: str = "kubernetes") -> dict[str, Any]:
        """``POST auth/<mount>/login`` with a ServiceAccount JWT: what cert-manager's Vault issuer
        does (runbook 4.2, 5.5). Returns the ``auth`` block's metadata and policies only; the
        Vault token it grants is revoked-by-TTL and never returned, logged or kept."""
        answer = await self.first(lambda c: c.auth.kubernetes.login(role=role, jwt=jwt, use_token=False,
                                                                    mount_point=mount))
        auth = (answer or {}).get("auth") or {}
        return {"policies": list(auth.get("policies") or []), "metadata": dict(auth.get("metadata") or {}),
                "lease_duration": auth.get("lease_duration", 0)}

    async def unseal(self, addr: str, key: str) -> dict[str, Any]:
        # The key never appears in an exception text we raise: SourceError is built from the
        # server's answer only.
        return await self.call(addr, lambda c: c.sys.submit_unseal_key(key=key))


def _status_of(exc: Exception) -> int | None:
    import hvac.exceptions  # already loaded: exc is one of them

    return {
        hvac.exceptions.InvalidRequest: 400,
        hvac.exceptions.Unauthorized: 401,
        hvac.exceptions.Forbidden: 403,
        hvac.exceptions.InvalidPath: 404,
        hvac.exceptions.RateLimitExceeded: 429,
        hvac.exceptions.InternalServerError: 500,
        hvac.exceptions.VaultNotInitialized: 501,
        hvac.exceptions.VaultDown: 503,
    }.get(type(exc))
