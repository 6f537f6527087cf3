"""``/sop triage database`` walks chapter 6's flowchart: which database shows the problem, then
the CNPG cluster's state (failover, degraded pods/PVCs, healthy → connections) or Galera's size —
each answered from the chapter's SOPs' evidence (a real Prometheus scrapes the sandbox's exporter
metrics), ending on the leaf of the cause with that section's SOPs run."""

from __future__ import annotations

import pytest

from tests.triage.support import assert_reaches, assert_shows, path_of, team_book, triage_thread, triage_with_runbook

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def sandbox(tmp_path):
    from sandbox.runner import Sandbox

    async with Sandbox(workdir=tmp_path / "sandbox", prometheus=True) as sb:
        yield sb


CASES = {
    "cnpg-primary-oomkilled": (["**Which database?** → **CNPG PostgreSQL** — cnpg clusters: 3/4 CNPG clusters Ready",
                                "**Cluster status?** → **Failover in progress** — harbor-pg: Failing over from "
                                "harbor-pg-1 to harbor-pg-2"],
                               "Wait 1-2 min for the promotion - Section 6.1", "cnpg-health"),
    "cnpg-connections-no-pooler": (["**Which database?** → **CNPG PostgreSQL** — pod/database/keycloak-pg-1: 92/100",
                                    "**Cluster status?** → **Healthy** — 4 CNPG cluster(s) in healthy state"],
                                   "Check connections, lag and backups - Section 6.6", "cnpg-connections"),
    "galera-split-brain": (["**Which database?** → **MariaDB Galera** — mariadb/librenms/librenms-mariadb: split brain",
                            "**Cluster size?** → **Split brain** — split brain"],
                           "Bootstrap from the most recent node - Section 6.4", "galera-health"),
    "redis-sentinel-disagree": (["**Which database?** → **Redis Sentinel** — sentinel/harbor/mymaster: Sentinels "
                                 "disagree on the master"],
                                "Check the master each Sentinel names - Section 6.5", "redis-sentinel"),
}


@pytest.mark.parametrize("scenario", sorted(CASES))
async def test_triage_database_reaches_the_leaf_of_the_cause(sandbox, bot, scenario: str) -> None:
    steps, leaf, sop_id = CASES[scenario]
    await sandbox.apply(scenario)
    thread = await triage_thread(sandbox, bot, "/sop triage database")
    assert_reaches(thread, steps, leaf, sop_id)


async def test_a_healthy_platform_stops_with_the_question(sandbox, bot) -> None:
    thread = await triage_thread(sandbox, bot, "/sop triage database")
    shown = path_of(thread)
    assert "Which database?" in shown and "no database shows a problem" in shown, shown


# The team runbook's own chapter-6 flowchart, as written there (node ids, words, leaves without sections).
TEAM_DB = '''## 6. Database Issues

### Database Diagnostic Flowchart

```mermaid
graph TD
    DB_START["Database Issue"] --> DB_TYPE{"Which database?"}

    DB_TYPE -->|"CNPG PostgreSQL"| CNPG_CHECK["kubectl get clusters -n database"]
    DB_TYPE -->|"MariaDB Galera"| GALERA_CHECK["kubectl get mariadbs -n librenms"]
    DB_TYPE -->|"Redis Sentinel"| REDIS_CHECK["kubectl get redissentinels -A"]

    CNPG_CHECK --> CNPG_STATUS{"Cluster status?"}
    CNPG_STATUS -->|"Healthy"| CNPG_CONN["Check application connections"]
    CNPG_STATUS -->|"Failover in progress"| CNPG_WAIT["Wait 1-2 min for promotion"]
    CNPG_STATUS -->|"Degraded"| CNPG_PODS["Check pod status + PVCs"]

    CNPG_PODS -->|"PVC Pending"| STORAGE_FIX["Check StorageClass + capacity"]
    CNPG_PODS -->|"Pod CrashLoop"| CNPG_LOGS["Check PostgreSQL logs"]

    GALERA_CHECK --> GALERA_STATUS{"Cluster size?"}
    GALERA_STATUS -->|"All nodes"| GALERA_OK["Check application connections"]
    GALERA_STATUS -->|"Split brain"| GALERA_BOOTSTRAP["Bootstrap from most recent node"]
```

### 6.1 CNPG Primary Failover
'''


def _degraded_with_crashloop(p) -> None:
    """A replica crash-looping, no failover: the cluster is degraded, not failing over."""
    from sandbox.platform import CNPG, set_condition, set_pod_waiting

    set_pod_waiting(p, "database", "keycloak-pg-3", "CrashLoopBackOff",
                    "back-off 1m20s restarting failed container=postgres", restart_count=4, last_exit=(1, "Error"))

    def fn(c) -> None:
        c["status"].update(phase="Waiting for the instances to become active", readyInstances=2)
        set_condition(c["status"]["conditions"], "Ready", "False", "ClusterIsNotReady", "Cluster Is Not Ready")
    p.kube.update(CNPG, "Cluster", "keycloak-pg", "database", fn)


@pytest.mark.parametrize("breaks, path, leaf", [
    ("galera-split-brain", ["**Which database?** → **MariaDB Galera**", "**Cluster size?** → **Split brain**"],
     "Bootstrap from most recent node"),
    (_degraded_with_crashloop, ["**Which database?** → **CNPG PostgreSQL**", "**Cluster status?** → **Degraded**",
                                "**Check pod status + PVCs** → **Pod CrashLoop** — CrashLoopBackOff: keycloak-pg-3"],
     "Check PostgreSQL logs"),
], ids=["galera", "cnpg-degraded"])
async def test_the_teams_chapter_6_flowchart_walks_the_same_way(sandbox, tmp_path, breaks, path, leaf) -> None:
    if callable(breaks):
        breaks(sandbox.platform)
    else:
        await sandbox.apply(breaks)
    thread = await triage_with_runbook(sandbox, team_book(tmp_path, TEAM_DB), "/sop triage database")
    assert_shows(path_of(thread), path, leaf)
