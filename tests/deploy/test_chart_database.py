"""The chart's database (chapter 6) grants: the CNPG backup credentials Secrets are readable by
name only when switched on (metadata reads, 6.3), and the three CNPG actions' create rules."""

from __future__ import annotations

import pytest
from test_chart import CHART, NO_ACTIONS, cluster_writes, grants, render

import helm_python as helm

NAMES = ["keycloak-pg-backup-creds", "harbor-pg-backup-creds"]


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def test_backup_credentials_are_read_by_name_only_when_enabled(chart):
    assert not any(g[3] == "secrets" for g in grants(render(chart)))
    on = render(chart, {"rbac": {"cnpgBackupCredentials": {"enabled": True, "names": NAMES}}})
    assert {g for g in grants(on) if g[3] == "secrets"} == {
        ("Role", "database", "", "secrets", "get", tuple(NAMES))}
    # Enabled without names grants nothing (never all Secrets of the namespace).
    empty = render(chart, {"rbac": {"cnpgBackupCredentials": {"enabled": True}}})
    assert not any(g[3] == "secrets" for g in grants(empty))


def test_cnpg_actions_create_only_their_own_kind(chart):
    values = {"remediation": {"enabled": True, "approvers": ["alice"],
                              "actions": {**NO_ACTIONS, "cnpgBackup": True, "cnpgPooler": True,
                                          "cnpgRecovery": True}}}
    assert cluster_writes(render(chart, values)) == {
        ("postgresql.cnpg.io", "backups", "create"), ("postgresql.cnpg.io", "poolers", "create"),
        ("postgresql.cnpg.io", "clusters", "create")}
