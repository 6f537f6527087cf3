"""The sandbox's Alertmanager API v2: what the platform's state implies is firing, read with the
bot's own client; silences suppress and expire as in Alertmanager; the bot config points at it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import yaml

from bot.clients.alertmanager import AlertmanagerClient, SilenceMatcher


async def names(client: AlertmanagerClient, **kwargs) -> list[str]:
    return sorted(a.labels["alertname"] for a in await client.alerts(**kwargs))


async def test_a_healthy_platform_fires_only_the_watchdog(sandbox):
    client = AlertmanagerClient(sandbox.alertmanager_url)
    try:
        assert await names(client) == ["Watchdog"]
        assert (await client.status())["cluster"]["status"] in ("ready", "disabled")
    finally:
        await client.close()


async def test_a_scenario_fires_its_alerts_with_a_stable_start_time(sandbox):
    await sandbox.apply("vault-sealed", "coredns-down")
    client = AlertmanagerClient(sandbox.alertmanager_url)
    try:
        first = await client.alerts(filters=['alertname="VaultSealed"'])
        assert sorted(a.labels["pod"] for a in first) == ["vault-0", "vault-1", "vault-2"]
        assert {a.labels["severity"] for a in first} == {"critical"}
        again = await client.alerts(filters=['alertname="VaultSealed"'])
        assert [a.startsAt for a in again] == [a.startsAt for a in first]
        assert all(a.endsAt > a.startsAt for a in first)
        crash = await client.alerts(filters=['alertname=~"KubePod.*"', 'namespace="kube-system"'])
        assert len(crash) == 2 and all(a.labels["alertname"] == "KubePodCrashLooping" for a in crash)
    finally:
        await client.close()


async def test_silences_suppress_until_expired(sandbox):
    await sandbox.apply("pvc-pending")
    client = AlertmanagerClient(sandbox.alertmanager_url)
    now = datetime.now(timezone.utc)
    try:
        sid = await client.create_silence(
            [SilenceMatcher(name="alertname", value="KubePersistentVolumeClaimPending")],
            now - timedelta(minutes=1), now + timedelta(hours=1), "alice", "storage being extended")
        assert "KubePersistentVolumeClaimPending" not in await names(client, silenced=False)
        [silenced] = await client.alerts(filters=['alertname="KubePersistentVolumeClaimPending"'])
        assert silenced.status.state == "suppressed" and silenced.status.silencedBy == [sid]
        async with httpx.AsyncClient(base_url=sandbox.alertmanager_url) as http:
            [listed] = (await http.get("/api/v2/silences")).json()
            assert listed["id"] == sid and listed["status"]["state"] == "active"
            assert (await http.delete(f"/api/v2/silence/{sid}")).status_code == 200
            assert (await http.get(f"/api/v2/silence/{sid}")).json()["status"]["state"] == "expired"
            bad = await http.post("/api/v2/silences", json={
                "matchers": [], "startsAt": now.isoformat(), "endsAt": now.isoformat(),
                "createdBy": "x", "comment": "x"})
            assert bad.status_code == 400
        assert "KubePersistentVolumeClaimPending" in await names(client, silenced=False)
    finally:
        await client.close()


def test_the_generated_bot_config_reads_the_sandbox_alertmanager(sandbox):
    cfg = yaml.safe_load((sandbox.workdir / "sopbot.yaml").read_text())
    assert cfg["alertmanager"]["url"] == sandbox.alertmanager_url
    env = (sandbox.workdir / "env").read_text()
    assert f"export ALERTMANAGER_URL={sandbox.alertmanager_url}" in env


def test_every_scenario_at_once_fires_the_alerts_of_its_failures():
    from sandbox.alertmanager.rules import firing
    from sandbox.scenarios import SCENARIOS, apply_scenarios
    from sandbox.world import build_platform

    platform = build_platform()
    apply_scenarios(platform, [n for n in SCENARIOS if n != "healthy"])
    fired = {a.labels["alertname"] for a in firing(platform)}
    # (NodeDiskPressure is gone: nodes-not-ready-together later silences that node's kubelet, and
    # an Unknown node reports no pressure, as kube-state-metrics would show it)
    assert fired >= {"VaultDown", "VaultSealed", "KubeNodeNotReady",
                     "KubePodCrashLooping", "KubePodNotReady", "KubePersistentVolumeClaimPending",
                     "TraefikLoadBalancerPending", "ClusterIssuerNotReady", "CertManagerCertNotReady",
                     "CertManagerCertExpirySoon", "CNPGClusterNotHealthy", "Watchdog"}


def test_disk_pressure_alone_fires_node_disk_pressure_for_that_node():
    from sandbox.alertmanager.rules import firing
    from sandbox.scenarios import apply_scenarios
    from sandbox.world import build_platform

    platform = build_platform()
    assert not [a for a in firing(platform) if a.labels["alertname"] == "NodeDiskPressure"]
    apply_scenarios(platform, ["node-disk-pressure"])
    [alert] = [a for a in firing(platform) if a.labels["alertname"] == "NodeDiskPressure"]
    assert alert.labels["node"] == "rke2-general-1"
