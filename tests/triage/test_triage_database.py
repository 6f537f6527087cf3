"""``/sop triage database`` walks chapter 6's flowchart: which database shows the problem, then
the CNPG cluster's state (failover, degraded pods/PVCs, healthy → connections) or Galera's size —
each answered from the chapter's SOPs' evidence (a real Prometheus scrapes the sandbox's exporter
metrics), ending on the leaf of the cause with that section's SOPs run."""

from __future__ import annotations

import pytest

from tests.triage.test_triage_sandbox import path_of, sops_run, triage_thread

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
    shown = path_of(thread)
    at = 0
    for step in steps:
        found = shown.find(step, at)
        assert found >= 0, f"{step!r} not after position {at} in:\\n{shown}"
        at = found
    assert f":checkered_flag: **{leaf}**" in shown, shown
    assert sop_id in sops_run(thread), sops_run(thread)


async def test_a_healthy_platform_stops_with_the_question(sandbox, bot) -> None:
    thread = await triage_thread(sandbox, bot, "/sop triage database")
    shown = path_of(thread)
    assert "Which database?" in shown and "no database shows a problem" in shown, shown
