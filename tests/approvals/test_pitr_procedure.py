"""10.5 point-in-time recovery as a procedure, end to end through the sandbox Mattermost: a target
outside the recoverability window is refused before anything is proposed; approved, the
recovery Cluster is created and followed in the thread until Ready (the sandbox has no CNPG
operator: the test plays it); a restart while waiting resumes the wait and creates no second
Cluster."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sandbox.platform import CNPG
from tests.approvals.conftest import wait_for
from tests.approvals.support import bot_posts, wait_reply
from tests.approvals.test_procedures_e2e import (APPROVE, crash, post, start_procedure, step_line, wait_status,
                                                 wait_step)

NEW = "keycloak-pg-recovered"


def stamp(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def recovery_clusters(sb) -> list[dict]:
    return [c for c in sb.platform.kube.list(CNPG, "Cluster", "database")
            if (c["metadata"].get("annotations") or {}).get("sop-bot/recovered-from") == "keycloak-pg"]


def operator_marks_ready(sb, name: str = NEW) -> None:
    """What the CNPG operator reports once the recovery finished and the instances run."""
    def ready(c: dict) -> None:
        c["status"] = {"phase": "Cluster in healthy state", "instances": 3, "readyInstances": 3,
                       "currentPrimary": f"{name}-1", "targetPrimary": f"{name}-1",
                       "conditions": [{"type": "Ready", "status": "True", "reason": "ClusterIsReady"}]}
    sb.platform.kube.update(CNPG, "Cluster", name, "database", ready)


def operator_recovering(sb, name: str = NEW) -> None:
    def recovering(c: dict) -> None:
        c["status"] = {"phase": "Setting up primary", "instances": 3, "readyInstances": 0,
                       "conditions": [{"type": "Ready", "status": "False", "reason": "ClusterIsNotReady"}]}
    sb.platform.kube.update(CNPG, "Cluster", name, "database", recovering)


async def test_a_target_outside_the_window_is_refused_before_proposing(sandbox, bots):
    await bots.start(quorum_high=1)
    first = sandbox.platform.kube.get(CNPG, "Cluster", "keycloak-pg", "database")["status"]["firstRecoverabilityPoint"]
    too_old = stamp(datetime.now(timezone.utc) - timedelta(days=9))
    reply = await sandbox.mattermost.run_command(
        "alice", "sop-alerts", f"/sop fix cnpg-pitr-recovery cluster=keycloak-pg target_time={too_old}")
    assert "Planning procedure" in reply["text"]
    refusal = await wait_for(lambda: next((p.message for p in bot_posts(sandbox) if "Not proposing" in p.message),
                                          None), what="the refusal")
    assert f"Not proposing `cnpg-pitr-recovery namespace=database cluster=keycloak-pg target_time={too_old}`" in refusal
    assert f"{too_old} is outside keycloak-pg's recoverability window {first} … " in refusal
    await bots.running[-1].bot.drain()
    assert not [p for p in bot_posts(sandbox) if "**Procedure #" in p.message]  # nothing to approve
    assert recovery_clusters(sandbox) == []


async def test_approved_recovery_is_created_and_followed_until_ready(sandbox, bots):
    await bots.start(quorum_high=1)
    target = stamp(datetime.now(timezone.utc) - timedelta(hours=2))
    p = await start_procedure(sandbox, "alice", f"cnpg-pitr-recovery cluster=keycloak-pg target_time={target}")
    msg = p.message
    assert "(runbook 10.5)" in msg and "risk **high**" in msg
    assert step_line(sandbox, p.id, 1).split("**")[1] == "Create the recovery Cluster for the target time"
    assert f"POST {CNPG} clusters database/{NEW}" in msg and "dryRun=All" in msg  # the manifest's dry run
    assert "targetTime:" in msg and target in msg
    assert recovery_clusters(sandbox) == []  # a preview only

    sandbox.mattermost.react("alice", p.id, APPROVE)
    line = await wait_step(sandbox, p.id, 2, "⏳")
    assert step_line(sandbox, p.id, 1).startswith("1. ✅") and f"recovery Cluster database/{NEW} created" in \
        step_line(sandbox, p.id, 1)
    made = recovery_clusters(sandbox)
    assert [c["metadata"]["name"] for c in made] == [NEW]
    assert made[0]["spec"]["bootstrap"]["recovery"]["recoveryTarget"] == {"targetTime": target}
    assert "running since" in line
    operator_recovering(sandbox)
    await wait_for(lambda: "Setting up primary, 0/3 instances ready" in step_line(sandbox, p.id, 2),
                   what="the live log to show the recovery's progress")
    operator_marks_ready(sandbox)
    await wait_status(sandbox, p.id, "**succeeded**", timeout=30)
    line = step_line(sandbox, p.id, 2)
    assert line.startswith("2. ✅") and f"database/{NEW} is Ready" in line and f"recovered to {target}" in line
    assert "Next: 10.5 steps 3-4 (by hand): verify the data" in line and f"Service {NEW}-rw" in line
    await wait_reply(sandbox, p.root_id, "✅ Procedure #1")


async def test_a_restart_while_waiting_resumes_the_wait_without_a_second_cluster(sandbox, bots):
    rt = await bots.start(quorum_high=1)
    target = stamp(datetime.now(timezone.utc) - timedelta(hours=1))
    p = await start_procedure(sandbox, "alice", f"cnpg-pitr-recovery cluster=keycloak-pg target_time={target}")
    sandbox.mattermost.react("alice", p.id, APPROVE)
    await wait_step(sandbox, p.id, 2, "⏳")
    operator_recovering(sandbox)
    await crash(bots, rt)  # the bot dies while following the recovery
    rt2 = await bots.start(quorum_high=1)
    await wait_for(lambda: "re-run after a restart" in step_line(sandbox, p.id, 2),
                   what="step 2 resumed after the restart", timeout=30)
    assert step_line(sandbox, p.id, 2).startswith("2. ⏳")
    assert step_line(sandbox, p.id, 1).startswith("1. ✅")
    operator_marks_ready(sandbox)
    await wait_status(sandbox, p.id, "**succeeded**", timeout=30)
    assert "is Ready" in step_line(sandbox, p.id, 2)
    assert [c["metadata"]["name"] for c in recovery_clusters(sandbox)] == [NEW]
    started = [e["detail"]["step"] for e in await rt2.approvals.repo.audit(100) if e["event"] == "step-started"]
    assert started.count(1) == 1  # the Cluster was created once, before the restart
    assert "**Procedure #" in post(sandbox, p.id).message
