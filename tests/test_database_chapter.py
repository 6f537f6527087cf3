"""Chapter 6 and 10.5 against the sandbox: what the SOPs say beyond the scenario test (optional
Galera not deployed, the apps derived for a restart) and the CNPG actions' plans and runs —
the PITR window refusal, the recovery Cluster's manifest, the Pooler and Backup objects."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bot.approvals.actions import ACTIONS, ActionEnv
from bot.config import RemediationConfig
from bot.engine import run_sop
from bot.models import Status
from bot.registry import REGISTRY, load_handlers
from bot.runtime import build_context
from sandbox.platform import CNPG

load_handlers()


@pytest.fixture
async def sandbox(tmp_path):
    """With a real Prometheus scraping the sandbox's exporter metrics (connections, lag)."""
    from sandbox.runner import Sandbox

    async with Sandbox(workdir=tmp_path / "sandbox", prometheus=True) as sb:
        yield sb


async def env_for(sandbox):
    ctx = await build_context(sandbox.settings())
    return ctx, ActionEnv(ctx=ctx, config=RemediationConfig(enabled=True, approvers=["alice"]))


def stamp(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_galera_not_deployed_is_ok_and_says_so(sandbox) -> None:
    ctx, _ = await env_for(sandbox)
    try:
        report = await run_sop(REGISTRY.get("galera-health"), ctx)
    finally:
        await ctx.close()
    assert [(f.status, f.summary) for f in report.findings] == [
        (Status.ok, "MariaDB Galera: not deployed (no MariaDB in this namespace)")]


async def test_failover_proposes_restarting_the_apps_found_by_their_env(sandbox) -> None:
    await sandbox.apply("cnpg-primary-oomkilled")
    ctx, env = await env_for(sandbox)
    try:
        report = await run_sop(REGISTRY.get("cnpg-health"), ctx)
        bad = [f for f in report.findings if f.target == "cluster/database/harbor-pg"][0]
        assert "apps using it: harbor/harbor-core" in bad.details
        assert "pods: harbor-pg-1: primary, not ready" in bad.details
        assert [(a.action, a.params) for a in bad.actions] == [
            ("cnpg-restart-apps", {"namespace": "database", "cluster": "harbor-pg"})]
        action = ACTIONS["cnpg-restart-apps"]
        params = action.parse(bad.actions[0].params)
        plan = await action.plan(env, params)
        assert plan.operations == ["PATCH apps/v1 deployments harbor/harbor-core: "
                                   "spec.template.metadata.annotations[kubectl.kubernetes.io/restartedAt]"]
        outcome = await action.run(env, params)
        assert outcome.ok and "restarted harbor/harbor-core" in outcome.summary
    finally:
        await ctx.close()
    dep = sandbox.platform.kube.get("apps/v1", "Deployment", "harbor-core", "harbor")
    assert "kubectl.kubernetes.io/restartedAt" in dep["spec"]["template"]["metadata"]["annotations"]


async def test_pitr_refuses_a_time_outside_the_window_and_builds_the_recovery_cluster(sandbox) -> None:
    ctx, env = await env_for(sandbox)
    action = ACTIONS["cnpg-pitr"]
    first = sandbox.platform.kube.get(CNPG, "Cluster", "keycloak-pg", "database")["status"]["firstRecoverabilityPoint"]
    try:
        too_old = stamp(datetime.now(timezone.utc) - timedelta(days=9))
        plan = await action.plan(env, action.parse({"cluster": "keycloak-pg", "target_time": too_old}))
        assert plan.blocked is not None and plan.blocked.startswith(
            f"{too_old} is outside keycloak-pg's recoverability window {first} … ")
        future = stamp(datetime.now(timezone.utc) + timedelta(hours=1))
        assert "outside" in (await action.plan(env, action.parse(
            {"cluster": "keycloak-pg", "target_time": future}))).blocked
        target = stamp(datetime.now(timezone.utc) - timedelta(hours=2))
        params = action.parse({"cluster": "keycloak-pg", "target_time": target})
        plan = await action.plan(env, params)
        assert plan.blocked is None and plan.dry_run
        assert plan.operations == ["POST postgresql.cnpg.io/v1 clusters database/keycloak-pg-recovered"]
        assert f'targetTime: \'{target}\'' in plan.preview or f"targetTime: {target}" in plan.preview
        assert sandbox.platform.kube.get(CNPG, "Cluster", "keycloak-pg-recovered", "database") is None  # dry run
        assert (await action.run(env, params)).ok
        again = await action.plan(env, params)
        assert again.blocked == "cluster database/keycloak-pg-recovered already exists: choose name="
    finally:
        await ctx.close()
    made = sandbox.platform.kube.get(CNPG, "Cluster", "keycloak-pg-recovered", "database")
    spec = made["spec"]
    assert spec["bootstrap"]["recovery"] == {"source": "keycloak-pg", "recoveryTarget": {"targetTime": target}}
    ext = spec["externalClusters"][0]
    assert ext["name"] == "keycloak-pg" and ext["barmanObjectStore"]["destinationPath"] == "s3://cnpg-backups/keycloak-pg"
    # Credentials by reference only: the Secret's name and key, never a value.
    assert ext["barmanObjectStore"]["s3Credentials"]["accessKeyId"] == {"name": "keycloak-pg-backup-creds",
                                                                       "key": "ACCESS_KEY_ID"}
    assert spec["storage"] == {"size": "20Gi", "storageClass": "harvester"}
    assert spec["affinity"]["nodeSelector"] == {"workload-type": "database"} and spec["instances"] == 3


async def test_pitr_window_ends_at_the_last_base_backup_when_archiving_fails(sandbox) -> None:
    await sandbox.apply("cnpg-backup-wal-pvc-full")  # kasm-pg: ContinuousArchiving False
    last = sandbox.platform.kube.get(CNPG, "Cluster", "kasm-pg", "database")["status"]["lastSuccessfulBackup"]
    ctx, env = await env_for(sandbox)
    action = ACTIONS["cnpg-pitr"]
    try:
        after = stamp(datetime.fromisoformat(last.replace("Z", "+00:00")) + timedelta(minutes=5))
        plan = await action.plan(env, action.parse({"cluster": "kasm-pg", "target_time": after}))
    finally:
        await ctx.close()
    assert plan.blocked is not None and plan.blocked.endswith(
        f"… {last} (end: the last base backup (WAL archiving is not working))")


async def test_pooler_and_backup_actions_create_the_runbook_objects(sandbox) -> None:
    await sandbox.apply("cnpg-connections-no-pooler")
    ctx, env = await env_for(sandbox)
    try:
        report = await run_sop(REGISTRY.get("cnpg-connections"), ctx)
        finding = [f for f in report.findings if f.target == "pod/database/keycloak-pg-1"][0]
        assert [a.action for a in finding.actions] == ["cnpg-pooler"]
        pooler = ACTIONS["cnpg-pooler"]
        assert pooler.risk.value == "high"
        params = pooler.parse(finding.actions[0].params)
        plan = await pooler.plan(env, params)
        assert "poolMode: transaction" in plan.preview and "max_client_conn: '1000'" in plan.preview
        assert (await pooler.run(env, params)).ok
        assert (await pooler.plan(env, params)).nothing_to_do == "Pooler database/keycloak-pg-pooler exists"
        backup = ACTIONS["cnpg-backup"]
        bparams = backup.parse({"cluster": "keycloak-pg"})
        assert (await backup.plan(env, bparams)).dry_run
        assert (await backup.run(env, bparams)).ok
        after = await run_sop(REGISTRY.get("cnpg-connections"), ctx)
    finally:
        await ctx.close()
    made = sandbox.platform.kube.get(CNPG, "Pooler", "keycloak-pg-pooler", "database")
    assert made["spec"] == {"cluster": {"name": "keycloak-pg"}, "instances": 3, "type": "rw", "pgbouncer": {
        "poolMode": "transaction", "parameters": {"max_client_conn": "1000", "default_pool_size": "25"}}}
    backups = [b for b in sandbox.platform.kube.list(CNPG, "Backup", "database")
               if b["metadata"]["name"].startswith("keycloak-pg-manual-")]
    assert len(backups) == 1 and backups[0]["spec"] == {"cluster": {"name": "keycloak-pg"}}
    # With the Pooler there, it is no longer named as the missing piece.
    still = [f for f in after.findings if f.target == "pod/database/keycloak-pg-1"]
    assert still and "no connection pooler" not in still[0].summary and not still[0].actions


async def test_backups_without_the_credentials_grant_say_not_checkable(sandbox) -> None:
    """A 403 on the Secret's metadata is 'not checkable', never 'does not exist'."""
    await sandbox.apply("cnpg-backup-no-bucket")
    ctx, _ = await env_for(sandbox)

    async def forbidden(*args, **kwargs):
        from bot.clients.errors import SourceError
        raise SourceError("kubernetes", "secrets is forbidden", status=403)
    ctx.kube.metadata = forbidden  # type: ignore[method-assign]
    try:
        report = await run_sop(REGISTRY.get("cnpg-backups"), ctx)
    finally:
        await ctx.close()
    bad = [f for f in report.findings if f.target == "cluster/database/harbor-pg"][0]
    assert "credentials Secret harbor-pg-backup-creds not checkable (secrets is forbidden)" in bad.summary
    assert "cause: MinIO bucket does not exist" in bad.summary





async def test_sentinel_failover_proposes_restarting_harbor_core(sandbox) -> None:
    """6.5 step 3 after a failover Sentinel completed: harbor-core's stale connections."""
    await sandbox.apply("redis-sentinel-failover")
    ctx, env = await env_for(sandbox)
    try:
        report = await run_sop(REGISTRY.get("redis-sentinel"), ctx)
        f = report.findings[0]
        assert f.status is Status.warn and f.summary.startswith(
            "recent failover: the master changed in the last 30m; now harbor-redis-1 (")
        assert f.summary.endswith("agreed by 3 Sentinel(s)")
        assert [(a.action, a.params) for a in f.actions] == [
            ("restart", {"kind": "deployment", "namespace": "harbor", "name": "harbor-core"})]
        plan = await ACTIONS["restart"].plan(env, ACTIONS["restart"].parse(f.actions[0].params))
        assert plan.dry_run and plan.operations[0].startswith("PATCH apps/v1 deployments harbor/harbor-core")
    finally:
        await ctx.close()


async def test_galera_split_brain_names_the_bootstrap_node(sandbox) -> None:
    await sandbox.apply("galera-split-brain")
    ctx, _ = await env_for(sandbox)
    try:
        report = await run_sop(REGISTRY.get("galera-health"), ctx)
    finally:
        await ctx.close()
    f = report.findings[0]
    assert f.status is Status.crit and f.target == "mariadb/librenms/librenms-mariadb"
    assert "sizes librenms-mariadb-0 1, librenms-mariadb-1 2, librenms-mariadb-2 2; 3 claim Primary" in f.summary
    assert "operator: Ready=False Galera not ready" in f.summary
    assert f.next_step.startswith("6.4 (guidance") and "bootstrap from librenms-mariadb-1 (wsrep_last_committed 184301" \
        in f.next_step
    assert not f.actions  # bootstrap edits the StatefulSet by hand: guidance only


async def test_lagging_replica_names_its_node_and_resources(sandbox) -> None:
    await sandbox.apply("cnpg-replica-lag-growing")
    node = sandbox.platform.kube.get("v1", "Pod", "keycloak-pg-3", "database")["spec"]["nodeName"]
    ctx, _ = await env_for(sandbox)
    try:
        report = await run_sop(REGISTRY.get("cnpg-replica-lag"), ctx)
    finally:
        await ctx.close()
    f = [f for f in report.findings if f.target == "pod/database/keycloak-pg-3"][0]
    assert f.status is Status.crit and "replica lag growing over 10m" in f.summary and "; uses " in f.summary
    assert f"check disk I/O on {node} (SSH" in f.next_step
    assert f.details == f"PVC keycloak-pg-3: 21% used; node {node}"
