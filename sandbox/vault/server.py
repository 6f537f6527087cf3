"""A replica's listener on loopback that follows the cluster's reachability: an unreachable
replica closes its socket (clients get "connection refused", as with a dead pod) and reopens on
the same port when it comes back."""

from __future__ import annotations

import asyncio

from aiohttp import web

from sandbox.vault.app import make_app
from sandbox.vault.state import VaultCluster


class ReplicaServer:
    def __init__(self, cluster: VaultCluster, index: int, host: str = "127.0.0.1", port: int = 0):
        self.cluster = cluster
        self.index = index
        self.host = host
        self.port = port
        self._runner = web.AppRunner(make_app(cluster, index), access_log=None)
        self._site: web.TCPSite | None = None
        self._lock = asyncio.Lock()
        self._pending: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> ReplicaServer:
        await self._runner.setup()
        await self._open()  # bind once so the port is known even if the replica starts down
        self.cluster.observe(self._on_change)
        await self.sync()
        return self

    async def stop(self) -> None:
        self.cluster.unobserve(self._on_change)
        if self._pending is not None:
            await asyncio.gather(self._pending, return_exceptions=True)
        await self._runner.cleanup()
        self._site = None

    async def sync(self) -> None:
        """Open or close the listener to match the replica's reachability."""
        async with self._lock:
            reachable = self.cluster.replicas[self.index].reachable
            if reachable and self._site is None:
                await self._open()
            elif not reachable and self._site is not None:
                await self._site.stop()
                self._site = None

    async def _open(self) -> None:
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._site = site

    def _on_change(self, index: int) -> None:
        if index != self.index:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # changed outside the loop: the next sync() call applies it
        self._pending = loop.create_task(self.sync())


async def serve_cluster(cluster: VaultCluster, host: str = "127.0.0.1") -> list[ReplicaServer]:
    """Start one listener per replica on free ports. sys/leader keeps advertising the in-cluster
    api_addr (http://vault-N.vault-internal:8200), as the Helm chart configures it."""
    return [await ReplicaServer(cluster, i, host).start() for i in range(len(cluster.replicas))]
