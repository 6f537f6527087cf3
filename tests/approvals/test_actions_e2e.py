"""Every Kubernetes and Alertmanager action end to end: the proposal's dry-run preview, then the
real run after approval, checked with kubectl (or the Alertmanager API)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

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
async def alertmanager() -> AsyncIterator[dict]:
    """A minimal Alertmanager v2 (alerts + silences); the sandbox has none."""
    state: dict = {"silences": [], "url": ""}
    alert = {"labels": {"alertname": "NodeDiskPressure", "node": "rke2-general-1", "severity": "warning"},
             "annotations": {}, "startsAt": "2026-11-26T05:00:00Z", "endsAt": "2026-11-26T09:00:00Z",
             "fingerprint": "abc123", "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
             "receivers": [{"name": "sop-bot"}], "updatedAt": "2026-11-26T05:00:00Z", "generatorURL": ""}

    async def alerts(request: web.Request) -> web.Response:
        wanted = [f.split("=", 1) for f in request.query.getall("filter", [])]
        hit = all(alert["labels"].get(k) == v.strip('"') for k, v in wanted)
        return web.json_response([alert] if hit else [])

    async def silences(request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await request.json()
            state["silences"].append(body)
            return web.json_response({"silenceID": f"sil-{len(state['silences'])}"})
        return web.json_response(state["silences"])

    app = web.Application()
    app.router.add_get("/api/v2/alerts", alerts)
    app.router.add_route("*", "/api/v2/silences", silences)
    app.router.add_get("/api/v2/status", lambda r: web.json_response({}))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    yield state
    await runner.cleanup()


async def test_silence_alerts(sandbox, bots, alertmanager):
    from bot.runtime import Runtime

    settings = sandbox.settings(remediation={"enabled": True, "approvers": ["alice"]},
                                alertmanager={"url": alertmanager["url"]})
    rt = Runtime(settings)
    await rt.start()
    bots.running.append(rt)
    await wait_for(lambda: rt.events is not None and rt.events.connected)
    p = await propose(sandbox, "alice", "silence alertname=NodeDiskPressure labels=node=rke2-general-1 hours=4")
    assert 'POST /api/v2/silences matchers {alertname="NodeDiskPressure",node="rke2-general-1"} for 4h' in p.message
    assert "1 alert(s) match" in p.message and alertmanager["silences"] == []
    await approve(sandbox, p)
    await wait_state(sandbox, p.id, "succeeded")
    [silence] = alertmanager["silences"]
    assert {(m["name"], m["value"]) for m in silence["matchers"]} == {
        ("alertname", "NodeDiskPressure"), ("node", "rke2-general-1")}
    assert "@alice" in silence["createdBy"]
