"""Every Kubernetes and Alertmanager action end to end: the proposal's dry-run preview, then the
real run after approval, checked with kubectl (or the Alertmanager API)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from tests.alerts.real_alertmanager import RealAlertmanager

from tests.approvals.conftest import kubectl, kubectl_json, wait_for
from tests.approvals.support import bot_posts, post, propose, replies, wait_reply, wait_state

TWO = {"approvers": ["alice", "bob"]}  # drain is high risk: two distinct approvals


async def approve(sb, p, *users: str) -> None:
    for u in users or ("alice",):
        sb.mattermost.react(u, p.id, "white_check_mark")


async def pods_on(sb, node: str) -> list[dict]:
    data = await kubectl_json(sb, "get", "pods", "-A", "--field-selector", f"spec.nodeName={node}")
    return data["items"]


def owned_by_daemonset_or_mirror(pod: dict) -> bool:
    meta = pod["metadata"]
    return any(r["kind"] == "DaemonSet" for r in meta.get("ownerReferences", [])) or \
        "kubernetes.io/config.mirror" in meta.get("annotations", {})


async def test_drain_evicts_all_but_daemonsets(sandbox, bots):
    await bots.start(**TWO)
    node = "rke2-compute-1"
    movable = [p["metadata"]["name"] for p in await pods_on(sandbox, node) if not owned_by_daemonset_or_mirror(p)]
    assert "vault-2" in movable
    p = await propose(sandbox, "alice", f"drain node={node}")
    assert "risk **high**" in p.message and "Needs 2 distinct approvals" in p.message
    assert f"PATCH v1 nodes {node}: spec.unschedulable → true" in p.message
    assert "POST v1 pods/eviction vault/vault-2" in p.message and "(DaemonSet)" in p.message
    assert "| vault/vault-2 | would be evicted |" in p.message
    assert len(await pods_on(sandbox, node)) > len(movable)  # the dry run evicted nothing
    await approve(sandbox, p, "alice", "bob")
    await wait_state(sandbox, p.id, "succeeded")
    assert "SchedulingDisabled" in await kubectl(sandbox, "get", "node", node)
    left = await pods_on(sandbox, node)
    assert left and all(owned_by_daemonset_or_mirror(x) for x in left)


async def test_drain_blocked_by_a_pdb_reports_the_429(sandbox, bots):
    await bots.start(**TWO)
    node = "rke2-database-1"
    p = await propose(sandbox, "alice", f"drain node={node}")
    assert "is the primary of CNPG cluster database/keycloak-pg" in p.message  # 11.3 warning
    assert "blocked by PodDisruptionBudget database/keycloak-pg-primary (429" in p.message
    await approve(sandbox, p, "alice", "bob")
    await wait_state(sandbox, p.id, "failed")
    msg = await wait_reply(sandbox, p.root_id, "`drain` **failed**")
    assert "blocked — the node is not empty" in msg
    assert "database/keycloak-pg-1: blocked by PodDisruptionBudget database/keycloak-pg-primary" in msg
    names = [x["metadata"]["name"] for x in await pods_on(sandbox, node)]
    assert "keycloak-pg-1" in names  # the primary stays: its budget allows no disruption
    assert "SchedulingDisabled" in await kubectl(sandbox, "get", "node", node)


async def test_drain_of_a_vault_node_is_refused_unless_the_others_are_unsealed(sandbox, bots):
    rt = await bots.start(**TWO)
    await sandbox.apply("vault-partially-sealed")
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop fix drain node=rke2-compute-1")
    await rt.bot.drain()
    refusal = next(p.message for p in bot_posts(sandbox) if "Not proposing `drain" in p.message)
    assert "vault-2 runs on this node and the other replicas are not all unsealed (vault-1 sealed)" in refusal
    assert "SchedulingDisabled" not in await kubectl(sandbox, "get", "node", "rke2-compute-1")


async def test_delete_pods_by_name_and_by_selector(sandbox, bots):
    await bots.start()
    pods = await kubectl_json(sandbox, "-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns")
    names = sorted(x["metadata"]["name"] for x in pods["items"])
    assert len(names) == 2
    p = await propose(sandbox, "alice", f"delete-pods namespace=kube-system pods={names[0]}")
    assert f"DELETE v1 pods kube-system/{names[0]}" in p.message and "accepted (dry run)" in p.message
    await approve(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    out = await kubectl(sandbox, "-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns", "-o", "name")
    assert names[0] not in out and names[1] in out

    q = await propose(sandbox, "alice", "delete-pods namespace=kube-system selector=k8s-app=kube-dns")
    assert f"DELETE v1 pods kube-system/{names[1]}" in q.message
    await approve(sandbox, q)
    await wait_state(sandbox, q.id, "succeeded")
    assert await kubectl(sandbox, "-n", "kube-system", "get", "pods", "-l", "k8s-app=kube-dns", "-o", "name") == ""


async def test_label_unlabeled_nodes_by_hostname(sandbox, bots):
    await bots.start()
    await sandbox.apply("unlabeled-nodes")
    nodes = await kubectl_json(sandbox, "get", "nodes")
    missing = sorted(n["metadata"]["name"] for n in nodes["items"]
                     if "workload-type" not in n["metadata"]["labels"] and "-cp-" not in n["metadata"]["name"])
    assert len(missing) == 2
    p = await propose(sandbox, "alice", "label-nodes")
    for name in missing:
        pool = name.split("-")[1]
        assert f"PATCH v1 nodes {name}: metadata.labels[workload-type]={pool}" in p.message
        assert f"kubectl label node {name} workload-type={pool} --overwrite" in p.message
    await approve(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    for name in missing:
        labels = (await kubectl_json(sandbox, "get", "node", name))["metadata"]["labels"]
        assert labels["workload-type"] == name.split("-")[1]


async def test_reissue_certificate_deletes_its_tls_secret(sandbox, bots):
    await bots.start()
    certs = await kubectl_json(sandbox, "-n", "keycloak", "get", "certificates")
    cert = certs["items"][0]
    name, secret = cert["metadata"]["name"], cert["spec"]["secretName"]
    await kubectl(sandbox, "-n", "keycloak", "get", "secret", secret)
    p = await propose(sandbox, "alice", f"reissue-certificate namespace=keycloak certificate={name}")
    assert f"DELETE v1 secrets keycloak/{secret}" in p.message and "(dry run)" in p.message
    assert "tls.key" not in p.message and "BEGIN" not in p.message  # never the Secret's data
    await kubectl(sandbox, "-n", "keycloak", "get", "secret", secret)  # still there
    await approve(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    out = await kubectl(sandbox, "-n", "keycloak", "get", "secret", secret, check=False)
    assert out == ""
    err = await kubectl(sandbox, "-n", "keycloak", "get", "secrets", "-o", "name")
    assert f"secret/{secret}\n" not in err


@pytest.fixture
async def am(sandbox, tmp_path) -> AsyncIterator[RealAlertmanager]:
    """A real Alertmanager whose webhook is the bot's /alertmanager."""
    async with RealAlertmanager(tmp_path / "am", f"{sandbox.bot_url}/alertmanager",
                                sandbox.alertmanager_token) as real:
        yield real


async def amtool_silences(am: RealAlertmanager) -> list[dict]:
    """amtool, Alertmanager's own CLI, as the independent client."""
    proc = await asyncio.create_subprocess_exec(
        "amtool", f"--alertmanager.url={am.url}", "silence", "query", "-o", "json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return json.loads(out or b"[]")


async def test_silence_the_alerts_of_an_alert_thread(sandbox, bots, am):
    await bots.start(sections={"alertmanager": {"webhook_token": sandbox.alertmanager_token,
                                                "url": am.url, "reconcile_interval_s": 3600}})
    await am.fire("NodeDiskPressure", group="nodes", node="rke2-general-1")
    root = await wait_for(lambda: next((p for p in bot_posts(sandbox) if not p.root_id
                                        and "NodeDiskPressure" in p.message), None), what="the alert thread")
    p = await propose(sandbox, "alice", f"silence thread={root.id} hours=4")
    assert "POST /api/v2/silences matchers {alertname=\"NodeDiskPressure\",group=\"nodes\"," in p.message
    assert 'node="rke2-general-1"' in p.message and "for 4h" in p.message
    assert "1 alert(s) in Alertmanager match now" in p.message
    assert await amtool_silences(am) == []
    await approve(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    [silence] = await amtool_silences(am)
    assert {(m["name"], m["value"]) for m in silence["matchers"]} == {
        ("alertname", "NodeDiskPressure"), ("group", "nodes"), ("node", "rke2-general-1")}
    assert silence["createdBy"] == "sop-bot for @alice" and silence["status"]["state"] == "active"
    [alert] = await wait_for(lambda: _suppressed(am), what="the alert to be silenced")
    assert alert.status.silencedBy == [silence["id"]]

    q = await propose(sandbox, "alice", "silence alertname=NodeDiskPressure labels=node=rke2-general-1")
    assert 'matchers {alertname="NodeDiskPressure",node="rke2-general-1"} for 2h' in q.message
    await approve(sandbox, q)
    await wait_state(sandbox, q.id, "succeeded")
    assert len(await amtool_silences(am)) == 2


async def _suppressed(am: RealAlertmanager) -> list:
    alerts = await am.client.alerts()
    return [a for a in alerts if a.status.state == "suppressed"]


async def test_node_labels_proposes_labelling_the_unlabeled_nodes(sandbox, bots):
    await bots.start()
    await sandbox.apply("unlabeled-nodes")
    await sandbox.mattermost.run_command("bob", "sop-alerts", "/sop node-labels")
    p = await wait_for(lambda: next((x for x in bot_posts(sandbox) if "**Proposal #1" in x.message), None),
                       what="the SOP's proposal")
    assert "`label-nodes`" in p.message and "(from `node-labels`)" in p.message and "Requested by @bob" in p.message
    await wait_for(lambda: len(sandbox.mattermost.reactions_on(p.id)) == 2)
    await approve(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    nodes = await kubectl_json(sandbox, "get", "nodes")
    assert all("workload-type" in n["metadata"]["labels"] for n in nodes["items"] if "-cp-" not in n["metadata"]["name"])


async def test_cert_health_proposes_reissuing_an_overdue_certificate(sandbox, bots):
    await bots.start()
    await sandbox.apply("cert-expiring")
    await sandbox.mattermost.run_command("alice", "sop-alerts", "/sop cert-health")
    p = await wait_for(lambda: next((x for x in bot_posts(sandbox) if "**Proposal #1" in x.message), None),
                       what="the SOP's proposal")
    assert "`reissue-certificate namespace=keycloak certificate=" in p.message and "(from `cert-health`)" in p.message
    cert = p.message.split("certificate=", 1)[1].split("`", 1)[0]
    secret = (await kubectl_json(sandbox, "-n", "keycloak", "get", "certificate", cert))["spec"]["secretName"]
    await kubectl(sandbox, "-n", "keycloak", "get", "secret", secret)
    await wait_for(lambda: len(sandbox.mattermost.reactions_on(p.id)) == 2)
    await approve(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    assert f"secret/{secret}\n" not in await kubectl(sandbox, "-n", "keycloak", "get", "secrets", "-o", "name")
