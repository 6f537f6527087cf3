"""Traefik's ``websecure`` entrypoint as a client reaches it through the LB IP: a real TLS server
on 127.0.0.1 that picks the certificate for the SNI name the way Traefik does, from the live
cluster objects (so scenarios applied to a running sandbox change what it serves):

1. an HTTPS Gateway listener whose hostname matches, TLS ``Terminate``, its certificateRef Secret;
2. an IngressRoute with ``Host(`name`)`` and ``tls.secretName``;
3. else the default ``TLSStore``'s ``defaultCertificate`` Secret;
4. else Traefik's own self-signed ``CN=TRAEFIK DEFAULT CERT`` (runbook 4.5's symptom).

A Secret that is missing or holds no usable ``tls.crt``/``tls.key`` is skipped, as Traefik skips
a listener whose certificate it cannot load. It answers any request with a small 404 page (no
router matches in the sandbox), which is enough for HTTP probes through it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import ssl
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sandbox.platform import CORE, GATEWAY, TRAEFIK, Platform

HOST = "127.0.0.1"
TRAEFIK_DEFAULT_CN = "TRAEFIK DEFAULT CERT"


def traefik_default_cert() -> tuple[str, str]:
    """Traefik's generated fallback: self-signed, CN "TRAEFIK DEFAULT CERT", a random
    ``*.traefik.default`` SAN, one year (as pkg/tls/generate does)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TRAEFIK_DEFAULT_CN)])
    digest = hashlib.sha256(str(datetime.now().timestamp()).encode()).hexdigest()
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1)).not_valid_after(now + timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"{digest[:32]}.{digest[32:]}.traefik.default")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def _host_matches(pattern: str, name: str) -> bool:
    pattern, name = pattern.lower(), name.lower()
    if pattern.startswith("*."):
        return "." in name and name.split(".", 1)[1] == pattern[2:]
    return pattern == name


class TraefikTLS:
    """One listener; ``port`` once started. Certificates are written under ``workdir`` (the
    ssl module loads them from files) and cached per Secret resourceVersion."""

    def __init__(self, platform: Platform, workdir: Path, port: int = 0):
        self.platform = platform
        self.dir = workdir
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._contexts: dict[tuple[str, str, str], ssl.SSLContext] = {}
        self._default: ssl.SSLContext | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        crt, key = traefik_default_cert()
        self._default = self._context("traefik-default", crt, key)
        base = self._context("traefik-default-base", crt, key)
        base.sni_callback = self._select  # type: ignore[assignment]
        self._server = await asyncio.start_server(self._serve, HOST, self.port, ssl=base,
                                                  ssl_handshake_timeout=5)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            await server.wait_closed()

    # -- certificate choice ----------------------------------------------------------------------
    def _context(self, name: str, crt: str, key: str) -> ssl.SSLContext:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        (self.dir / f"{safe}.crt").write_text(crt)
        key_file = self.dir / f"{safe}.key"
        key_file.write_text(key)
        key_file.chmod(0o600)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.dir / f"{safe}.crt", key_file)
        return ctx

    def _secret_context(self, namespace: str, name: str) -> ssl.SSLContext | None:
        secret = self.platform.kube.get(CORE, "Secret", name, namespace)
        if secret is None:
            return None
        rv = str(secret["metadata"].get("resourceVersion", ""))
        cached = self._contexts.get((namespace, name, rv))
        if cached is not None:
            return cached
        data = secret.get("data") or {}
        try:
            crt = base64.b64decode(data.get("tls.crt", "")).decode()
            key = base64.b64decode(data.get("tls.key", "")).decode()
            ctx = self._context(f"{namespace}-{name}-{rv}", crt, key)
        except (ValueError, ssl.SSLError, OSError):
            return None  # Traefik logs "unable to load certificate" and skips it
        self._contexts[(namespace, name, rv)] = ctx
        return ctx

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        kube = self.platform.kube
        if server_name:
            for gw in kube.list(GATEWAY, "Gateway"):
                ns = gw["metadata"].get("namespace", "")
                for listener in (gw.get("spec") or {}).get("listeners") or []:
                    tls = listener.get("tls") or {}
                    if listener.get("protocol") != "HTTPS" or tls.get("mode", "Terminate") != "Terminate":
                        continue
                    if listener.get("hostname") and not _host_matches(listener["hostname"], server_name):
                        continue
                    for ref in tls.get("certificateRefs") or []:
                        ctx = self._secret_context(ref.get("namespace") or ns, ref.get("name", ""))
                        if ctx is not None:
                            return ctx
            for route in kube.list(TRAEFIK, "IngressRoute"):
                spec = route.get("spec") or {}
                secret = (spec.get("tls") or {}).get("secretName")
                hosts = [h for r in spec.get("routes") or [] for h in re.findall(r"Host\(`([^`]+)`\)", r.get("match", ""))]
                if secret and any(_host_matches(h, server_name) for h in hosts):
                    ctx = self._secret_context(route["metadata"].get("namespace", ""), secret)
                    if ctx is not None:
                        return ctx
        for store in kube.list(TRAEFIK, "TLSStore"):
            if store["metadata"]["name"] != "default":
                continue
            secret = ((store.get("spec") or {}).get("defaultCertificate") or {}).get("secretName")
            if secret:
                ctx = self._secret_context(store["metadata"].get("namespace", ""), secret)
                if ctx is not None:
                    return ctx
        assert self._default is not None
        return self._default

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        try:
            sslobj.context = self.context_for(server_name)
        except (KeyError, TypeError, AttributeError):  # an object a scenario left half-shaped
            assert self._default is not None
            sslobj.context = self._default

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         b"Content-Length: 19\r\nConnection: close\r\n\r\n404 page not found\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ssl.SSLError):
            pass
        finally:
            writer.close()
