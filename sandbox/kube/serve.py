"""Run the sandbox API server on a free loopback port with TLS and a kubeconfig next to it."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from sandbox.kube.server import make_app, write_kubeconfig
from sandbox.kube.store import ObjectStore
from sandbox.kube.tls import create_server_tls


@dataclass(frozen=True)
class RunningKube:
    url: str  # https://127.0.0.1:<port>
    token: str
    kubeconfig: Path
    ca_file: Path
    store: ObjectStore


@asynccontextmanager
async def serve_kube(store: ObjectStore, workdir: Path, token: str | None = None,
                     context: str = "sandbox",
                     kubeconfig_name: str = "kubeconfig",
                     continue_ttl_s: float | None = 300.0) -> AsyncIterator[RunningKube]:
    """Serve ``store`` on 127.0.0.1:<free port> over TLS; writes ``workdir/<kubeconfig_name>``
    and the CA under ``workdir/kube-tls-<context>/``."""
    token = token or secrets.token_urlsafe(24)
    tls = create_server_tls(workdir / f"kube-tls-{context}")
    runner = web.AppRunner(make_app(store, token, continue_ttl_s=continue_ttl_s), shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.ssl_context())
    await site.start()
    port = runner.addresses[0][1]
    url = f"https://127.0.0.1:{port}"
    kubeconfig = workdir / kubeconfig_name
    write_kubeconfig(kubeconfig, url, token, context=context, ca_file=tls.ca_file)
    try:
        yield RunningKube(url, token, kubeconfig, tls.ca_file, store)
    finally:
        await runner.cleanup()
