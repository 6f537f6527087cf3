"""Pod logs, events and resource metrics through the bot's clients against the sandbox API
server (the wire format kubectl reads too), and the log scan's redaction."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.clients.logscan import REDACTED, LogPattern, redact, scan
from bot.clients.resource_metrics import quantity
from bot.models import Status
from bot.runtime import build_context
from sandbox.kube.kubectl import kubectl
from sandbox.platform import add_event, add_log


@pytest.fixture
async def ctx(sandbox):
    c = await build_context(sandbox.settings())
    try:
        yield c
    finally:
        await c.close()


def registry_pod(sandbox) -> str:
    return sandbox.platform.pods("harbor", {"component": "registry"})[0]["metadata"]["name"]


async def test_logs_tail_since_previous_and_container(sandbox, ctx) -> None:
    pod = registry_pod(sandbox)
    add_log(sandbox.platform, "harbor", pod, ["old line"], ago=timedelta(hours=2))
    add_log(sandbox.platform, "harbor", pod, ["recent 1", "recent 2"], ago=timedelta(seconds=5))
    assert await ctx.logs("harbor", pod) == "old line\nrecent 1\nrecent 2\n"
    assert await ctx.logs("harbor", pod, tail=1) == "recent 2\n"
    assert await ctx.logs("harbor", pod, since=timedelta(minutes=10)) == "recent 1\nrecent 2\n"
    assert await ctx.logs("harbor", pod, "registry", tail=None) == "old line\nrecent 1\nrecent 2\n"
    _, missing = await ctx.attempt(ctx.logs("harbor", pod, previous=True), "registry log")
    assert missing is not None and missing.status is Status.unknown
    assert f'previous terminated container "registry" in pod "{pod}" not found' in missing.summary
    _, wrong = await ctx.attempt(ctx.logs("harbor", pod, "nginx"), "registry log")
    assert wrong is not None and f"container nginx is not valid for pod {pod}" in wrong.summary
    # kubectl reads the same endpoint with the same parameters
    out = await kubectl(sandbox.kubeconfig, "logs", "-n", "harbor", pod, "--since=10m", "--tail=1")
    assert out.ok() == "recent 2\n"


async def test_crashloop_scenario_previous_log_names_minio_redacted(sandbox, ctx) -> None:
    await sandbox.apply("pod-crashloop")
    pod = registry_pod(sandbox)
    add_log(sandbox.platform, "harbor", pod, ["level=error msg=\"auth failed\" password=hunter2 "
                                              "url=http://admin:s3cr3t@minio:9000"], previous=True, ago=timedelta(0))
    patterns = [LogPattern(regex=r"s3aws: .*connection refused", cause="MinIO backend unavailable"),
                LogPattern(regex=r"auth failed")]
    hits = await ctx.log_hits("harbor", pod, patterns, previous=True)
    assert [h.pattern.cause for h in hits] == ["MinIO backend unavailable", ""]
    assert hits[0].count == 2 and "dial tcp 10.43.87.12:9000: connect: connection refused" in hits[0].lines[-1]
    quoted = hits[1].lines[0]
    assert "hunter2" not in quoted and "s3cr3t" not in quoted and quoted.count(REDACTED) == 2


async def test_events_of_an_object_and_a_namespace_newest_first_one_per_reason(sandbox, ctx) -> None:
    await sandbox.apply("pvc-pending")
    p = sandbox.platform
    claim = p.kube.get("v1", "PersistentVolumeClaim", "uptime-kuma", "uptime-kuma")
    add_event(p, claim, "ProvisioningFailed", "a second failure", component="driver.harvesterhci.io", count=3)
    add_event(p, claim, "ExternalProvisioning", "waiting for a volume to be created", type_="Normal")
    found = await ctx.events("uptime-kuma", kind="PersistentVolumeClaim", name="uptime-kuma")
    assert [e.reason for e in found] == ["ExternalProvisioning", "ProvisioningFailed"]
    failed = found[1]
    assert failed.message == "a second failure" and failed.count == 4 and failed.warning
    assert failed.object == "PersistentVolumeClaim/uptime-kuma"
    warnings = await ctx.events("uptime-kuma", warnings_only=True)
    assert {e.reason for e in warnings} == {"ProvisioningFailed"}
    assert await ctx.events("uptime-kuma", window=timedelta(seconds=-1)) == []  # a window in the future


async def test_resource_metrics_match_kubectl_top(sandbox, ctx) -> None:
    nodes = {u.name: u for u in await ctx.node_usage()}
    assert len(nodes) == 6
    top = await kubectl(sandbox.kubeconfig, "top", "nodes", "--no-headers")
    for line in top.ok().splitlines():
        name, cpu, _, mem, _ = line.split()
        assert round(nodes[name].cpu_cores * 1000) == int(cpu.removesuffix("m"))
        assert int(nodes[name].memory_bytes / 2 ** 20) == int(mem.removesuffix("Mi"))
    pods = await ctx.pod_usage("vault", label_selector="app.kubernetes.io/name=vault")
    assert sorted(u.name for u in pods) == ["vault-0", "vault-1", "vault-2"]
    assert all(set(u.containers) == {"vault"} and u.memory_bytes > 0 for u in pods)
    top = await kubectl(sandbox.kubeconfig, "top", "pods", "-n", "vault", "-l", "app.kubernetes.io/name=vault")
    assert top.ok().splitlines()[0].split() == ["NAME", "CPU(cores)", "MEMORY(bytes)"]


async def test_metrics_server_missing_is_an_unknown_finding(sandbox, ctx) -> None:
    for kind in ("NodeMetrics",):
        for obj in sandbox.platform.kube.list("metrics.k8s.io/v1beta1", kind):
            sandbox.platform.kube.remove("metrics.k8s.io/v1beta1", kind, obj["metadata"]["name"])
    assert await ctx.node_usage() == []
    ctx.kube = None
    _, finding = await ctx.attempt(ctx.node_usage(), "nodes")
    assert finding is not None and finding.status is Status.unknown and "no Kubernetes access" in finding.summary


def test_quantities_as_kubernetes_writes_them() -> None:
    assert quantity("250m") == 0.25 and quantity("1.5") == 1.5 and quantity("12345678n") == pytest.approx(0.012345678)
    assert quantity("16Gi") == 16 * 2 ** 30 and quantity("512974848") == 512974848 and quantity("1k") == 1000
    with pytest.raises(ValueError):
        quantity("12 cores")


def test_redaction_and_quoting_limits() -> None:
    text = "\n".join([
        "Authorization: Bearer abcdefghijklmnop123", 'login {"password":"p4ss"} ok',
        "token=hvs.CAESIJ1234567890abcdefghijklmnop", "jwt eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        *[f"ERROR attempt {i}" for i in range(10)]])
    red = redact(text)
    for secret in ("abcdefghijklmnop123", "p4ss", "hvs.CAESIJ", "eyJhbGciOiJSUzI1NiJ9"):
        assert secret not in red
    hits = scan(text, [LogPattern(regex="^ERROR")], quote=3)
    assert hits[0].count == 10 and hits[0].lines == ["ERROR attempt 7", "ERROR attempt 8", "ERROR attempt 9"]
    assert scan(text, [LogPattern(regex="nothing like this")]) == []
