"""etcd-health's other 2.3 facts, evaluated by a real Prometheus: which member leads, leader
changes over the last hour (the runbook's etcd_server_leader_changes_seen_total), the DB size
against its backend quota, and the 10.3 guidance a lost quorum carries.

(After test_etcd_health.py on purpose: the leader changes made here stay in the 1h window.)"""

from __future__ import annotations

import pytest

from .conftest import Platform
from .test_etcd_health import by_target, ctx, diagnose  # noqa: F401  (the ctx fixture)


async def test_the_leader_and_frequent_leader_changes_are_named(platform: Platform, ctx):  # noqa: F811
    platform.healthy()
    first = platform.members[0]
    first.leader = True
    try:
        first.leader_changes += 6
        await platform.settle()
        found = by_target(await diagnose(ctx))
    finally:
        first.leader = False
    assert found["leader"].summary == f"leader: {first.instance}"
    changes = found["leader changes"]
    assert changes.status.value == "warn"
    assert "leader change(s) in the last hour: frequent elections" in changes.summary
    assert "iostat" in changes.next_step


async def test_a_db_near_its_quota_is_named(platform: Platform, ctx):  # noqa: F811
    platform.healthy()
    big = platform.members[1]
    big.db_bytes = int(1.7 * 2 ** 30)
    try:
        await platform.settle()
        found = by_target(await diagnose(ctx))
    finally:
        big.db_bytes = 40 * 2 ** 20
    db = found["db size"]
    assert db.status.value == "warn"
    assert db.summary == (f"largest DB 1741 MiB on {big.instance}, 85% of its 2.0 GiB quota: "
                          "DB size near its quota (compact and defragment)")


async def test_lost_quorum_carries_the_10_3_restore_guidance(platform: Platform, ctx):  # noqa: F811
    platform.healthy()
    for m in platform.members[1:]:
        m.up = False
    try:
        await platform.settle()
        found = by_target(await diagnose(ctx))
    finally:
        platform.healthy()
    quorum = found["quorum"]
    assert quorum.status.value == "crit" and "10.3" in quorum.next_step
    assert "stop rke2-server on ALL CP nodes" in quorum.details
    assert "Snapshots not checked: no Kubernetes access configured." in quorum.details


@pytest.fixture(autouse=True)
def _members_back(platform: Platform):
    yield
    platform.healthy()
