"""HTTP/TLS probes (bot/clients/probe.py) against the sandbox's real TLS endpoint (Traefik's
websecure entrypoint behind the LB IP) and its Vault listener: the served chain, SNI apart from
the TCP address, verification against the platform's root CA, TRAEFIK DEFAULT CERT, the
configured ranges, timeouts."""

from __future__ import annotations

import asyncio

import pytest

from bot.clients.errors import SourceError
from bot.clients.probe import Prober
from bot.runtime import build_context
from sandbox.platform import LB_IP, TRAEFIK


def prober(sandbox, **kw) -> Prober:
    cfg = sandbox.probe_config()
    return Prober(kw.pop("allowed", cfg["allowed_cidrs"]), cfg["address_map"], **{"timeout_s": 3.0, **kw})


async def test_route_host_through_the_lb_ip_serves_its_vault_issued_chain(sandbox) -> None:
    root = sandbox.platform.vault.pki.root.pem
    result = await prober(sandbox).tls(LB_IP, 443, sni="grafana.example.com", ca_pem=root)
    assert result.address == sandbox.traefik.address
    assert result.leaf.subject_cn == "grafana.example.com"
    assert result.leaf.sans == ("grafana.example.com",)
    assert result.leaf.issuer_cn == "Example Org Intermediate CA"
    assert [c.subject_cn for c in result.chain] == ["grafana.example.com", "Example Org Intermediate CA"]
    assert result.verified is True and result.verify_error == ""
    assert not result.leaf.traefik_default and 0 < result.leaf.days_left() < 31


async def test_unknown_name_gets_the_tlsstore_default_then_traefiks_own(sandbox) -> None:
    root = sandbox.platform.vault.pki.root.pem
    p = prober(sandbox)
    wildcard = await p.tls(LB_IP, 443, sni="nothing-routes-here.example.com", ca_pem=root)
    assert wildcard.leaf.sans == ("*.example.com", "example.com") and wildcard.verified is True
    sandbox.platform.kube.remove(TRAEFIK, "TLSStore", "default", "kube-system")
    fallback = await p.tls(LB_IP, 443, sni="nothing-routes-here.example.com", ca_pem=root)
    assert fallback.leaf.subject_cn == "TRAEFIK DEFAULT CERT" and fallback.leaf.traefik_default
    assert fallback.leaf.self_signed and fallback.verified is False
    assert "self-signed" in fallback.verify_error or "self signed" in fallback.verify_error
    # Routed names still get their own certificate.
    own = await p.tls(LB_IP, 443, sni="grafana.example.com", ca_pem=root)
    assert own.leaf.subject_cn == "grafana.example.com"


async def test_a_name_the_certificate_does_not_cover_fails_verification(sandbox) -> None:
    root = sandbox.platform.vault.pki.root.pem
    # An SNI Traefik routes (vault's Gateway listener) verified for another name than the one served.
    result = await prober(sandbox).tls(LB_IP, 443, sni="vault.example.com", ca_pem=root)
    assert result.verified is True
    other = await prober(sandbox).tls(LB_IP, 443, sni="vault.example.com", ca_pem=sandbox.platform.vault.pki.kube_ca.pem)
    assert other.verified is False and "unable to get local issuer certificate" in other.verify_error


async def test_http_probe_sets_host_apart_from_the_address_and_bounds_the_body(sandbox) -> None:
    p = prober(sandbox, max_body_bytes=8)
    health = await p.http("http://vault.vault.svc.cluster.local:8200/v1/sys/health")
    assert health.status == 200 and health.headers["content-type"].startswith("application/json")
    assert len(health.body) == 8
    routed = await p.http("https://harbor.example.com/api/v2.0/systeminfo", connect=f"{LB_IP}:443")
    assert routed.status == 404 and routed.address == sandbox.traefik.address


async def test_addresses_outside_the_configured_ranges_are_never_probed(sandbox) -> None:
    p = prober(sandbox)
    for host, port in (("198.51.100.7", 443), ("127.0.0.2", 443), ("10.44.0.1", 22)):
        with pytest.raises(SourceError, match="outside probe.allowed_cidrs"):
            await p.tls(host, port)
    with pytest.raises(SourceError, match="outside probe.allowed_cidrs"):
        await p.http("http://169.254.169.254/latest/meta-data/")
    # A mapped name still has to land inside the ranges.
    narrow = prober(sandbox, allowed=["203.0.113.0/24"])
    with pytest.raises(SourceError, match="127.0.0.1, outside"):
        await narrow.tls(LB_IP, 443, sni="grafana.example.com")
    with pytest.raises(SourceError, match="localhost:8200 is 127.0.0.1, outside"):  # a name is resolved first
        await narrow.http("http://localhost:8200/v1/sys/health")
    with pytest.raises(SourceError, match="no probe.allowed_cidrs"):
        await Prober([], {}).tls(LB_IP)


async def test_a_server_that_never_answers_is_a_timeout_not_a_hang(sandbox) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        p = Prober(["127.0.0.1/32"], {}, timeout_s=0.3)
        with pytest.raises(SourceError, match="timed out after 0.3s"):
            await p.tls("127.0.0.1", port, sni="x.example.com")
        with pytest.raises(SourceError, match="timed out after 0.3s"):
            await p.http(f"http://127.0.0.1:{port}/")
    finally:
        server.close()


async def test_the_context_gives_handlers_the_configured_prober(sandbox) -> None:
    ctx = await build_context(sandbox.settings())
    try:
        result = await ctx.tls_probe(LB_IP, 443, sni="keycloak.example.com")
        assert result.leaf.subject_cn == "keycloak.example.com" and result.verified is None
    finally:
        await ctx.close()
    bare = await build_context(sandbox.settings(probe={}))
    try:
        with pytest.raises(SourceError, match="no probes configured"):
            await bare.tls_probe(LB_IP)
    finally:
        await bare.close()


async def test_a_body_sent_in_pieces_is_read_up_to_the_bound_and_no_further() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"defgh" + b"x" * 100_000)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await Prober(["127.0.0.1/32"], {}, max_body_bytes=8).http(f"http://127.0.0.1:{port}/x")
    finally:
        server.close()
    assert result.status == 200 and result.reason == "OK" and result.body == "abcdefgh"


async def test_check_config_says_whether_the_mapped_probe_addresses_are_in_range(sandbox) -> None:
    from bot.runtime import check_connections

    assert (await check_connections(sandbox.settings()))["probe"] is None
    cfg = sandbox.probe_config()
    narrow = await check_connections(sandbox.settings(probe={**cfg, "allowed_cidrs": ["203.0.113.0/24"]}))
    problems = narrow["probe"].split("; ")
    assert f"{LB_IP}:443 is 127.0.0.1, outside probe.allowed_cidrs: not probed" in problems
    assert "vault.vault.svc.cluster.local:8200 is 127.0.0.1, outside probe.allowed_cidrs: not probed" in problems
    assert len(problems) == len(cfg["address_map"])  # one line per mapped address
    assert "probe" not in await check_connections(sandbox.settings(probe={}))
