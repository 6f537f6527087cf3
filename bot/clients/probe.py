"""HTTP and TLS probes of the platform's own endpoints (runbook 4.2's "is Vault reachable", 4.5's
``openssl s_client -connect <lb-ip>:443 -servername <host>``).

A probe is not a way to make the bot fetch arbitrary URLs: handlers pass targets read from
cluster objects (Gateways, HTTPRoutes, Services, ClusterIssuers) or from the config, never text
typed in chat, and every address a probe connects to must lie inside ``probe.allowed_cidrs``.
``probe.address_map`` redirects a configured ``host:port`` (the LB IP, an in-cluster Service
name) to where the bot reaches it, e.g. a port-forward or the sandbox. The TCP address and the
TLS SNI / HTTP Host are set independently, so a route is probed through the LB IP with its own
name. Each probe has a timeout; every failure is a ``SourceError`` (an "unknown" finding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from bot.clients.errors import SourceError

if TYPE_CHECKING:
    from cryptography import x509

SOURCE = "probe"
# What Traefik serves when no router and no TLSStore default certificate matches (4.5).
TRAEFIK_DEFAULT_CN = "TRAEFIK DEFAULT CERT"


@dataclass(frozen=True)
class ServedCert:
    """One certificate a server presented, as ``openssl x509 -noout -subject -issuer -dates`` shows it."""

    subject: str
    subject_cn: str
    issuer: str
    issuer_cn: str
    sans: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    self_signed: bool

    @property
    def traefik_default(self) -> bool:
        return self.subject_cn == TRAEFIK_DEFAULT_CN

    def days_left(self, now: datetime | None = None) -> float:
        return (self.not_after - (now or datetime.now(timezone.utc))).total_seconds() / 86400

    def matches(self, host: str) -> bool:
        """The name is one of the SANs (a ``*.`` SAN covers one label), as clients check it."""
        host = host.lower().rstrip(".")
        for san in self.sans:
            san = san.lower()
            if san == host or (san.startswith("*.") and "." in host and host.split(".", 1)[1] == san[2:]):
                return True
        return False


@dataclass(frozen=True)
class TlsResult:
    target: str            # what was asked: "203.0.113.202:443"
    address: str           # where the bot connected (after probe.address_map)
    sni: str
    chain: tuple[ServedCert, ...]  # leaf first, as served
    verified: bool | None  # against the given CA; None when no CA was given
    verify_error: str = ""
    latency_ms: float = 0.0

    @property
    def leaf(self) -> ServedCert:
        return self.chain[0]


@dataclass(frozen=True)
class HttpResult:
    url: str
    address: str
    status: int
    reason: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""  # at most probe.max_body_bytes, decoded leniently
    latency_ms: float = 0.0


def describe(cert: x509.Certificate) -> ServedCert:
    # cryptography's x509 costs ~8 MB of RSS; an idle bot probes nothing, so load it here.
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    def cn(name: x509.Name) -> str:
        return ", ".join(str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME))

    try:
        sans = tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                     .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        sans = ()
    return ServedCert(subject=cert.subject.rfc4514_string(), subject_cn=cn(cert.subject),
                      issuer=cert.issuer.rfc4514_string(), issuer_cn=cn(cert.issuer), sans=sans,
                      not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
                      self_signed=cert.subject == cert.issuer)


class Prober:
    """Probes within the configured ranges. ``allowed_cidrs`` empty: every probe is refused."""

    def __init__(self, allowed_cidrs: list[str] | tuple[str, ...] = (), address_map: dict[str, str] | None = None,
                 timeout_s: float = 5.0, max_body_bytes: int = 65536):
        self.networks = [ipaddress.ip_network(c, strict=False) for c in allowed_cidrs]
        self.address_map = {k.lower(): v for k, v in (address_map or {}).items()}
        self.timeout_s = timeout_s
        self.max_body_bytes = max_body_bytes

    # -- where a probe may go ------------------------------------------------------------------
    def _allowed(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self.networks)

    async def resolve(self, host: str, port: int) -> tuple[str, int]:
        """The (ip, port) to connect to for ``host:port``: the mapped address when configured,
        else the host's own addresses, all of which must be inside the allowed ranges."""
        if not self.networks:
            raise SourceError(SOURCE, "no probe.allowed_cidrs configured: the bot probes nothing")
        key = f"{host.lower().strip('[]')}:{port}"
        if key in self.address_map:
            mhost, _, mport = self.address_map[key].rpartition(":")
            ip, dport = mhost.strip("[]"), int(mport)
        else:
            ip, dport = host.strip("[]"), port
        try:
            ipaddress.ip_address(ip)
            ips = [ip]
        except ValueError:
            try:
                infos = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(
                    ip, dport, type=socket.SOCK_STREAM), self.timeout_s)
            except (OSError, TimeoutError) as exc:
                raise SourceError(SOURCE, f"{host}:{port} does not resolve ({exc.__class__.__name__})") from None
            ips = sorted({str(i[4][0]) for i in infos})
        outside = [a for a in ips if not self._allowed(a)]
        if outside or not ips:
            raise SourceError(SOURCE, f"{host}:{port} is {', '.join(outside) or 'unresolved'}, outside "
                                      "probe.allowed_cidrs: not probed")
        return ips[0], dport

    # -- TLS -----------------------------------------------------------------------------------
    async def _handshake(self, ip: str, port: int, ctx: ssl.SSLContext, sni: str) -> tuple[list[bytes], float]:
        start = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(ip, port, ssl=ctx, server_hostname=sni or None)
        except TimeoutError:
            raise SourceError(SOURCE, f"TLS handshake with {ip}:{port} (SNI {sni}) timed out after "
                                      f"{self.timeout_s:g}s") from None
        try:
            obj = writer.get_extra_info("ssl_object")
            chain = _unverified_chain(obj)
            return chain, (time.monotonic() - start) * 1000
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1)
            except (OSError, TimeoutError, ssl.SSLError):
                pass

    async def tls(self, host: str, port: int = 443, *, sni: str | None = None,
                  ca_pem: str | None = None) -> TlsResult:
        """The certificate chain ``host:port`` serves for ``sni`` (default: host), and whether it
        verifies against ``ca_pem`` for that name (expiry and hostname included, as a client checks)."""
        name = sni or host
        ip, dport = await self.resolve(host, port)
        raw = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        raw.check_hostname = False
        raw.verify_mode = ssl.CERT_NONE
        try:
            chain_der, latency = await self._handshake(ip, dport, raw, name)
        except (OSError, ssl.SSLError) as exc:
            raise SourceError(SOURCE, f"TLS to {host}:{port} (SNI {name}) failed: {_why(exc)}") from None
        if not chain_der:
            raise SourceError(SOURCE, f"{host}:{port} (SNI {name}) presented no certificate")
        from cryptography import x509  # first TLS probe: see describe()

        chain = tuple(describe(x509.load_der_x509_certificate(d)) for d in chain_der)
        verified: bool | None = None
        error = ""
        if ca_pem:
            ctx = ssl.create_default_context(cadata=ca_pem)  # only the platform's root: no system CAs
            try:
                await self._handshake(ip, dport, ctx, name)
                verified = True
            except ssl.SSLCertVerificationError as exc:
                verified, error = False, str(exc.verify_message or exc.reason or exc)
            except (OSError, ssl.SSLError) as exc:
                verified, error = False, _why(exc)
        return TlsResult(target=f"{host}:{port}", address=f"{ip}:{dport}", sni=name, chain=chain,
                         verified=verified, verify_error=error, latency_ms=latency)

    # -- HTTP ----------------------------------------------------------------------------------
    async def http(self, url: str, *, connect: str | None = None, host_header: str | None = None,
                   sni: str | None = None, ca_pem: str | None = None) -> HttpResult:
        """``GET url`` (HTTP/1.1, Connection: close), the body bounded. ``connect`` (``host[:port]``)
        replaces the URL's address for the TCP connection only; Host and SNI stay the URL's host
        unless given. https is verified against ``ca_pem`` when given, else not verified."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceError(SOURCE, f"not an http(s) URL: {url[:80]!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        chost, cport = parts.hostname, port
        if connect:
            chost, _, p = connect.rpartition(":") if ":" in connect else (connect, "", "")
            cport = int(p) if p else port
        ip, dport = await self.resolve(chost, cport)
        ctx: ssl.SSLContext | None = None
        if parts.scheme == "https":
            if ca_pem:
                ctx = ssl.create_default_context(cadata=ca_pem)
            else:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
        host = host_header or parts.hostname
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        start = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                reader, writer = await asyncio.open_connection(
                    ip, dport, ssl=ctx, server_hostname=(sni or parts.hostname) if ctx else None)
                try:
                    writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: sop-bot-probe\r\n"
                                  "Accept: */*\r\nConnection: close\r\n\r\n").encode("ascii"))
                    await writer.drain()
                    head = await reader.readuntil(b"\r\n\r\n")
                    body = b""
                    while len(body) < self.max_body_bytes:  # bounded: a large answer is cut, not read whole
                        chunk = await reader.read(self.max_body_bytes - len(body))
                        if not chunk:
                            break
                        body += chunk
                finally:
                    writer.close()
        except TimeoutError:
            raise SourceError(SOURCE, f"GET {url} timed out after {self.timeout_s:g}s") from None
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, UnicodeError) as exc:
            raise SourceError(SOURCE, f"GET {url} failed: {_why(exc)}") from None
        lines = head.decode("latin-1").split("\r\n")
        try:
            _, code, *reason = lines[0].split(" ", 2)
            status = int(code)
        except ValueError:
            raise SourceError(SOURCE, f"GET {url}: not an HTTP answer") from None
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        return HttpResult(url=url, address=f"{ip}:{dport}", status=status, reason=(reason or [""])[0],
                          headers=headers, body=body.decode("utf-8", errors="replace"),
                          latency_ms=(time.monotonic() - start) * 1000)


def _unverified_chain(obj: ssl.SSLObject | None) -> list[bytes]:
    """The chain as served, leaf first (public in Python 3.13; the same call in 3.11's _ssl)."""
    if obj is None:
        return []
    getter = getattr(obj, "get_unverified_chain", None) or getattr(getattr(obj, "_sslobj", None),
                                                                   "get_unverified_chain", None)
    if getter is not None:
        try:
            chain = getter() or []
            return [c if isinstance(c, bytes) else c.public_bytes(_ssl_der()) for c in chain]
        except (AttributeError, ValueError, ssl.SSLError):
            pass
    leaf = obj.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _ssl_der() -> int:
    import _ssl

    return int(getattr(_ssl, "ENCODING_DER", 2))


def _why(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or exc.__class__.__name__
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
