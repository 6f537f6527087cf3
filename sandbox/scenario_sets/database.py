"""Scenarios for runbook chapter 6, 10.5, 11.4/11.5: CNPG, Galera, Redis Sentinel, pools, backups.

One per root cause the runbook lists; the Prometheus-side facts (lag, backends, wsrep, Sentinel
views, WAL archiver) go into the sandbox exporter (``p.metrics``), which a real Prometheus scrapes
in the scenario test."""

from __future__ import annotations

import copy
from datetime import timedelta

from sandbox.kube.store import Obj
from sandbox.platform import (CNPG, CORE, Platform, add_event, add_log, iso, now, set_condition,
                              set_node_condition, set_pod_ready, set_pod_waiting)
from sandbox.scenario_model import Scenario

NS = "database"
GIB = 1024 ** 3


def _failing_over(p: Platform, cluster: str, reason: str) -> None:
    """CNPG promoting <cluster>-2 because <cluster>-1 (the primary) failed."""
    old, new = f"{cluster}-1", f"{cluster}-2"

    def fn(c: Obj) -> None:
        st = c["status"]
        st.update(phase="Failing over", phaseReason=f"Failing over from {old} to {new}",
                  currentPrimary=old, targetPrimary=new, targetPrimaryTimestamp=iso(now()),
                  readyInstances=st["instances"] - 1,
                  instancesStatus={"healthy": [n for n in st["instanceNames"] if n != old], "failed": [old]})
        set_condition(st["conditions"], "Ready", "False", "ClusterIsNotReady", "Cluster Is Not Ready")
    c = p.kube.update(CNPG, "Cluster", cluster, NS, fn)
    add_event(p, c, "FailingOver", f"Current primary isn't healthy ({reason}), initiating a failover to {new}",
              component="cloudnative-pg")


def _primary_oomkilled(p: Platform) -> None:
    set_pod_waiting(p, NS, "harbor-pg-1", "CrashLoopBackOff", "back-off 40s restarting failed container=postgres",
                    restart_count=3, last_exit=(137, "OOMKilled"))
    _failing_over(p, "harbor-pg", "container restarted")


def _primary_node_notready(p: Platform) -> None:
    pod = p.kube.get(CORE, "Pod", "mattermost-pg-1", NS)
    assert pod is not None
    set_node_condition(p, pod["spec"]["nodeName"], "Ready", "Unknown", "NodeStatusUnknown",
                       "Kubelet stopped posting node status.")
    set_pod_ready(p, NS, "mattermost-pg-1", False)
    _failing_over(p, "mattermost-pg", "pod unreachable")


def _primary_disk_full(p: Platform) -> None:
    add_log(p, NS, "kasm-pg-1", [
        '{"level":"info","msg":"checkpoint starting: wal"}',
        'PANIC:  could not write to file "pg_wal/xlogtemp.113": No space left on device',
        '{"level":"info","msg":"startup process (PID 23) was terminated by signal 6: Aborted"}'])
    set_pod_ready(p, NS, "kasm-pg-1", False)
    p.metrics.set("kubelet_volume_stats_used_bytes", {"namespace": NS, "persistentvolumeclaim": "kasm-pg-1"},
                  20 * GIB)
    _failing_over(p, "kasm-pg", "postgres exited")


def _replica_lag_growing(p: Platform) -> None:
    # 60 s behind and 2 s more at every scrape: a replica falling further behind.
    p.metrics.set("cnpg_pg_replication_lag", {"namespace": NS, "pod": "keycloak-pg-3"},
                  lambda n: 60 + 2.0 * n)


def _replica_pvc_full(p: Platform) -> None:
    p.metrics.set("cnpg_pg_replication_lag", {"namespace": NS, "pod": "harbor-pg-2"}, 45.0)
    p.metrics.set("kubelet_volume_stats_used_bytes", {"namespace": NS, "persistentvolumeclaim": "harbor-pg-2"},
                  19.3 * GIB)


def _failed_backup(p: Platform, cluster: str, error: str, archiving: str | None = None) -> None:
    stamp = now() - timedelta(minutes=20)
    p.kube.add({"apiVersion": CNPG, "kind": "Backup",
                "metadata": {"name": f"{cluster}-daily-{stamp:%Y%m%d%H%M%S}", "namespace": NS,
                             "creationTimestamp": iso(stamp),
                             "labels": {"cnpg.io/cluster": cluster, "cnpg.io/scheduled-backup": f"{cluster}-daily"}},
                "spec": {"cluster": {"name": cluster}, "method": "barmanObjectStore"},
                "status": {"phase": "failed", "method": "barmanObjectStore", "error": error,
                           "startedAt": iso(stamp), "stoppedAt": iso(stamp + timedelta(seconds=30))}})

    def fn(c: Obj) -> None:
        st = c["status"]
        st["lastFailedBackup"] = iso(stamp)
        set_condition(st["conditions"], "LastBackupSucceeded", "False", "LastBackupFailed", error)
        if archiving:
            set_condition(st["conditions"], "ContinuousArchiving", "False", "ContinuousArchivingFailing", archiving)
    p.kube.update(CNPG, "Cluster", cluster, NS, fn)


def _minio_down(p: Platform) -> None:
    for pod in p.pods("minio", {"app": "minio"}):
        set_pod_waiting(p, "minio", pod["metadata"]["name"], "CrashLoopBackOff",
                        "back-off 5m0s restarting failed container=minio", restart_count=9, last_exit=(1, "Error"))
    _failed_backup(p, "keycloak-pg", "exit status 4: ERROR: Barman cloud WAL archiver exception: Could not connect to "
                                     'the endpoint URL: "http://minio.minio.svc.cluster.local:9000/cnpg-backups"')


def _no_bucket(p: Platform) -> None:
    _failed_backup(p, "harbor-pg", "exit status 1: botocore.errorfactory.NoSuchBucket: An error occurred (NoSuchBucket) "
                                   "when calling the ListObjectsV2 operation: The specified bucket does not exist")


def _bad_credentials(p: Platform) -> None:
    p.kube.remove(CORE, "Secret", "mattermost-pg-backup-creds", NS)
    _failed_backup(p, "mattermost-pg", 'cannot get secret "mattermost-pg-backup-creds": not found')


def _wal_pvc_full(p: Platform) -> None:
    p.metrics.set("kubelet_volume_stats_used_bytes", {"namespace": NS, "persistentvolumeclaim": "kasm-pg-1"},
                  19.9 * GIB)
    _failed_backup(p, "kasm-pg", "exit status 1: could not write backup label: No space left on device",
                   archiving="unexpected failure invoking barman-cloud-wal-archive: could not create archive status "
                             "file \"pg_wal/archive_status/000000010000000A00000042.ready\": No space left on device")


def _base_backup_stale(p: Platform) -> None:
    p.kube.update(CNPG, "Cluster", "harbor-pg", NS,
                  lambda c: c["status"].update(lastSuccessfulBackup=iso(now() - timedelta(days=3, hours=2))))


def _wal_stale(p: Platform) -> None:
    p.metrics.set("cnpg_pg_stat_archiver_seconds_since_last_archival", {"namespace": NS, "pod": "keycloak-pg-1"},
                  lambda n: 5400.0 + n * 0.25)


def _galera_split_brain(p: Platform) -> None:
    """LibreNMS's 3-node Galera, partitioned: -0 alone, -1 and -2 together, each side Primary."""
    ns, name = "librenms", "librenms-mariadb"
    p.kube.add({"apiVersion": CORE, "kind": "Namespace", "metadata": {"name": ns, "labels": {
        "kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
    p.kube.add({"apiVersion": "k8s.mariadb.com/v1alpha1", "kind": "MariaDB",
                "metadata": {"name": name, "namespace": ns, "creationTimestamp": iso(now() - timedelta(days=40))},
                "spec": {"replicas": 3, "galera": {"enabled": True}, "storage": {"size": "10Gi"}},
                "status": {"currentPrimary": f"{name}-0", "conditions": [
                    {"type": "Ready", "status": "False", "reason": "GaleraNotReady",
                     "message": "Galera not ready", "lastTransitionTime": iso(now() - timedelta(minutes=12))}]}})
    template = p.pods("harbor", {"app": "harbor-redis"})[0]
    for i, (size, seqno) in enumerate(((1, 184210), (2, 184301), (2, 184299))):
        pod = copy.deepcopy(template)
        pod["metadata"] = {"name": f"{name}-{i}", "namespace": ns, "uid": f"mdb-{i}",
                           "creationTimestamp": iso(now() - timedelta(days=40)),
                           "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": name,
                                      "statefulset.kubernetes.io/pod-name": f"{name}-{i}"}}
        pod["spec"]["containers"][0].update(name="mariadb", image="mariadb:11.4")
        for cs in pod["status"].get("containerStatuses", []):
            cs.update(name="mariadb", image="mariadb:11.4")
        p.kube.add(pod)
        labels = {"namespace": ns, "pod": f"{name}-{i}"}
        p.metrics.set("mysql_global_status_wsrep_cluster_size", labels, size)
        p.metrics.set("mysql_global_status_wsrep_cluster_status", labels, 1)  # both sides think they are Primary
        p.metrics.set("mysql_global_status_wsrep_last_committed", labels, seqno)


def _sentinel_view(p: Platform, sentinel: int, redis_pod: str) -> None:
    pod = p.kube.get(CORE, "Pod", redis_pod, "harbor")
    assert pod is not None
    address = f"{pod['status']['podIP']}:6379"
    labels = {"namespace": "harbor", "pod": f"harbor-redis-sentinel-{sentinel}", "master_name": "mymaster"}
    for metric in ("redis_sentinel_master_status", "redis_sentinel_master_ok_sentinels",
                   "redis_sentinel_master_ok_slaves"):
        p.metrics.remove(metric, pod=labels["pod"])
    p.metrics.set("redis_sentinel_master_status", {**labels, "master_address": address, "master_status": "ok"}, 1)
    p.metrics.set("redis_sentinel_master_ok_sentinels", {**labels, "master_address": address}, 3)


def _sentinel_disagree(p: Platform) -> None:
    _sentinel_view(p, 0, "harbor-redis-1")


def _redis_master_down(p: Platform) -> None:
    set_pod_ready(p, "harbor", "harbor-redis-0", False)


def _sentinel_failover(p: Platform) -> None:
    for i in range(3):
        _sentinel_view(p, i, "harbor-redis-1")


def _backends(p: Platform, pod: str, states: dict[str, int]) -> None:
    dbname = {"keycloak": "keycloak", "mattermost": "mattermost", "harbor": "registry", "kasm": "kasm"}[pod.split("-")[0]]
    p.metrics.remove("cnpg_backends_total", pod=pod)
    for state, n in states.items():
        p.metrics.set("cnpg_backends_total", {"namespace": NS, "pod": pod, "datname": dbname, "usename": dbname,
                                              "application_name": "", "state": state}, n)


def _connections_no_pooler(p: Platform) -> None:
    _backends(p, "keycloak-pg-1", {"active": 84, "idle": 8})


def _connections_leak(p: Platform) -> None:
    _backends(p, "mattermost-pg-1", {"active": 15, "idle in transaction": 70})
    # A Pooler exists already: the leak is the cause, not the missing pooler.
    p.kube.add({"apiVersion": CNPG, "kind": "Pooler",
                "metadata": {"name": "mattermost-pg-pooler", "namespace": NS, "creationTimestamp": iso(now())},
                "spec": {"cluster": {"name": "mattermost-pg"}, "instances": 3, "type": "rw",
                         "pgbouncer": {"poolMode": "transaction"}}})


def _max_connections_low(p: Platform) -> None:
    for i in (1, 2, 3):
        p.metrics.set("cnpg_pg_settings_setting", {"namespace": NS, "pod": f"harbor-pg-{i}", "name": "max_connections"}, 50)
    _backends(p, "harbor-pg-1", {"active": 38, "idle": 6})
    p.kube.update(CNPG, "Cluster", "harbor-pg", NS,
                  lambda c: c["spec"]["postgresql"]["parameters"].update(max_connections="50"))


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("cnpg-primary-oomkilled", "harbor-pg's primary OOMKilled, CNPG failing over to harbor-pg-2 (6.1)",
             _primary_oomkilled, section="6.1", status="warn", cause="harbor-pg-1 was OOMKilled (exit code 137"),
    Scenario("cnpg-primary-node-notready", "mattermost-pg's primary on a NotReady node, failing over (6.1)",
             _primary_node_notready, section="6.1", status="warn",
             cause="NotReady: Kubelet stopped posting node status."),
    Scenario("cnpg-primary-disk-full", "kasm-pg's primary PANICs on a full volume, failing over (6.1)",
             _primary_disk_full, section="6.1", status="warn",
             cause='storage full on kasm-pg-1: PANIC:  could not write to file "pg_wal/xlogtemp.113": No space left on device'),
    Scenario("cnpg-replica-lag-growing", "keycloak-pg-3 60 s behind and falling further behind (6.2)",
             _replica_lag_growing, section="6.2", status="crit", cause="replica lag growing over 10m"),
    # Its lag rose from 0.4 s to 45 s within the window: growing, hence critical.
    Scenario("cnpg-replica-pvc-full", "harbor-pg-2 45 s behind with its PVC 97% full (6.2)",
             _replica_pvc_full, section="6.2", status="crit", cause="replica PVC nearly full: harbor-pg-2 97% used"),
    Scenario("cnpg-backup-minio-down", "MinIO crash-looping; keycloak-pg's backup cannot reach it (6.3)",
             _minio_down, section="6.3", status="warn", cause="cause: MinIO unreachable"),
    Scenario("cnpg-backup-no-bucket", "harbor-pg's backup fails: the bucket does not exist (6.3)",
             _no_bucket, section="6.3", status="warn", cause="cause: MinIO bucket does not exist"),
    Scenario("cnpg-backup-bad-credentials", "mattermost-pg's backup credentials Secret is gone (6.3)",
             _bad_credentials, section="6.3", status="warn",
             cause="credentials Secret mattermost-pg-backup-creds does not exist"),
    Scenario("cnpg-backup-wal-pvc-full", "kasm-pg's WAL archiving fails on a full volume (6.3)",
             _wal_pvc_full, section="6.3", status="warn", cause="cause: PVC full preventing WAL archival"),
    Scenario("cnpg-base-backup-stale", "harbor-pg's last base backup is 3 days old (11.5)",
             _base_backup_stale, section="11.5", status="warn", cause="base backup older than the schedule: 3.1 days old"),
    Scenario("cnpg-wal-archiving-stale", "keycloak-pg archived no WAL for 90 minutes (11.5)",
             _wal_stale, section="11.5", status="warn", cause="WAL archiving stale: last WAL archived 90 min ago on keycloak-pg-1"),
    Scenario("galera-split-brain", "LibreNMS Galera partitioned into two Primary components (6.4)",
             _galera_split_brain, section="6.4", status="crit",
             cause="most recent data on librenms-mariadb-1 (wsrep_last_committed 184301)"),
    Scenario("redis-sentinel-disagree", "one Harbor Sentinel names a different master (6.5)",
             _sentinel_disagree, section="6.5", status="warn", cause="Sentinels disagree on the master"),
    Scenario("redis-master-down", "Harbor's Redis master not ready, Sentinels still name it (6.5)",
             _redis_master_down, section="6.5", status="crit",
             cause="Redis master pod crashed or unreachable: the Sentinels name harbor-redis-0"),
    Scenario("redis-sentinel-failover", "Sentinel promoted harbor-redis-1 after harbor-redis-0 crashed (6.5)",
             _sentinel_failover, section="6.5", status="warn", cause="recent failover: the master changed"),
    Scenario("cnpg-connections-no-pooler", "keycloak-pg at 92% of max_connections, no Pooler (6.6)",
             _connections_no_pooler, section="6.6", status="warn",
             cause="no connection pooler: no PgBouncer Pooler for keycloak-pg"),
    Scenario("cnpg-connections-leak", "mattermost-pg's connections held idle in transaction (6.6)",
             _connections_leak, section="6.6", status="warn",
             cause="connection leak (idle in transaction): 70 of 85 backends"),
    Scenario("cnpg-max-connections-low", "harbor-pg's max_connections is 50 (6.6)",
             _max_connections_low, section="6.6", status="warn", cause="max_connections set too low: 50"),
)

