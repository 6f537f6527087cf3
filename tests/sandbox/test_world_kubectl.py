"""The runbook's quick diagnostic commands (ch. 1) and daily checks (11.1), run with kubectl
against the healthy world served by the sandbox API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandbox.kube.kubectl import kubectl as run_kubectl
from sandbox.kube.serve import RunningKube, serve_kube
from sandbox.world import build_platform


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[RunningKube]:
    async with serve_kube(build_platform().kube, tmp_path) as running:
        yield running


async def kubectl(kube: RunningKube, *args: str) -> str:
    return (await run_kubectl(kube.kubeconfig, *args)).ok()


async def test_daily_checks_pass_on_the_healthy_world(kube: RunningKube) -> None:
    nodes = (await kubectl(kube, "get", "nodes", "--no-headers")).splitlines()
    assert len(nodes) == 6 and all(line.split()[1] == "Ready" for line in nodes)

    stuck = await kubectl(kube, "get", "pods", "-A", "--no-headers",
                          "--field-selector=status.phase!=Running,status.phase!=Succeeded")
    assert stuck.strip() == ""

    certs = (await kubectl(kube, "get", "certificates", "-A", "--no-headers")).splitlines()
    assert len(certs) >= 10 and all(" True " in f" {line} " for line in certs)

    traefik = await kubectl(kube, "get", "svc", "-n", "kube-system", "rke2-traefik", "--no-headers")
    assert "LoadBalancer" in traefik and "203.0.113.202" in traefik


async def test_workload_type_labels_as_section_2_6_reads_them(kube: RunningKube) -> None:
    out = await kubectl(kube, "get", "nodes", "-L", "workload-type", "--no-headers")
    pools = {line.split()[0]: line.split()[-1] for line in out.splitlines()}
    assert pools["rke2-general-1"] == "general" and pools["rke2-database-1"] == "database"
    assert pools["rke2-compute-1"] == "compute"


async def test_cnpg_primary_found_the_way_section_6_1_asks(kube: RunningKube) -> None:
    primary = await kubectl(kube, "get", "cluster", "keycloak-pg", "-n", "database",
                            "-o", "jsonpath={.status.currentPrimary}")
    pods = await kubectl(kube, "get", "pods", "-n", "database", "-l", "cnpg.io/cluster=keycloak-pg",
                         "-L", "role", "--no-headers")
    roles = {line.split()[0]: line.split()[-1] for line in pods.splitlines()}
    assert roles[primary] == "primary" and sorted(roles.values()) == ["primary", "replica", "replica"]
