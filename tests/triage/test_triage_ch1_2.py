"""``/sop triage`` from the root on every chapter 1-2 scenario: each decision of the section-1
flowchart answered from the evidence (scope, pod status, why Pending, why it crashed, nodes), the
walk ending on the leaf the runbook gives for that cause, with the SOPs of that leaf's section run.
And the team's own wording of the flowchart walks the same way (``Answer.also``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.triage.support import (
    assert_reaches, assert_shows, path_of, runbook_with_chart, sops_run, triage_thread, triage_with_runbook)

pytestmark = pytest.mark.asyncio

POD = "**What is affected?** → **One pod or service**"
CLUSTER = "**What is affected?** → **The cluster**"
NOTHING = "**What is affected?** → **Nothing visible**"

# scenario → (what the path must show, in order; the leaf; a SOP the leaf runs)
CASES = {
    "crashloop-oomkilled": ([POD, "**Pod status?** → **CrashLoopBackOff**",
                             "**Why did it crash?** → **OOMKilled** — argocd/argocd-repo-server-",
                             "last termination OOMKilled (exit code 137)"],
                            "Raise the memory limit or find the leak - Section 1", "pod-health"),
    "pod-crashloop": ([POD, "**Why did it crash?** → **Connection refused** — harbor/harbor-registry-",
                       "connect: connection refused"],
                      "Check the services it depends on - Section 1", "pod-health"),
    "crashloop-permission-denied": ([POD, "**Why did it crash?** → **Permission denied** — keycloak/keycloak-",
                                     "previous log: ERROR: /opt/keycloak/data/tmp/kc-gzip-cache: Permission denied"],
                                    "Check RBAC and the security context - Section 1", "pod-health"),
    "pod-pending": ([POD, "**Pod status?** → **Pending**",
                     "**Why is it Pending?** → **Insufficient CPU or memory** — mattermost/mattermost-",
                     "3 Insufficient memory"],
                    "Add nodes or lower the requests - Section 2.5", "pod-health"),
    "autoscaler-token-expired": ([POD, "**Why is it Pending?** → **Insufficient CPU or memory** — mattermost/mattermost-",
                                  "3 Insufficient cpu"],
                                 "Add nodes or lower the requests - Section 2.5", "autoscaler"),
    "pending-no-matching-node": ([POD, "**Why is it Pending?** → **No matching node** — mattermost/mattermost-",
                                  "didn't match Pod's node affinity/selector"],
                                 "Check the node selector and node labels - Section 2.6", "node-labels"),
    "pvc-pending": ([POD, "**Why is it Pending?** → **PVC Pending** — uptime-kuma/uptime-kuma-",
                     "pod has unbound immediate PersistentVolumeClaims"],
                    "Check the PVC and its StorageClass - Section 8.1", "pvc-health"),
    "image-pull-backoff": ([POD, "**Pod status?** → **ImagePullBackOff** — kasm/"],
                           "Check the registry and pull secret - Section 7.6", "pod-health"),
    "unlabeled-nodes": ([POD, "**Pod status?** → **ImagePullBackOff** — node-labeler/node-labeler-"],
                        "Check the registry and pull secret - Section 7.6", "pod-health"),
    "node-disk-pressure": ([CLUSTER, "NotReady: rke2-general-1", "**Nodes Ready?** → **Nodes NotReady**"],
                           "Node NotReady - Section 2.2", "node-health"),
    "node-kubelet-stopped": ([CLUSTER, "**Nodes Ready?** → **Nodes NotReady** — 5 of 6 nodes Ready; "
                                       "NotReady: rke2-compute-1"],
                             "Node NotReady - Section 2.2", "node-health"),
    "nodes-not-ready-together": ([CLUSTER, "NotReady: rke2-compute-1, rke2-general-1"],
                                 "Node NotReady - Section 2.2", "node-health"),
    # Nothing a user sees yet: the daily checks, whose node check names the pressure.
    "node-memory-pressure": ([NOTHING], "Run the daily checks - Section 11.1", "node-health"),
    "labels-race": ([NOTHING], "Run the daily checks - Section 11.1", "node-health"),
    "golden-image-drift": ([NOTHING], "Run the daily checks - Section 11.1", "pod-health"),
}


@pytest.mark.parametrize("scenario", sorted(CASES))
async def test_triage_from_the_root_reaches_the_leaf_of_its_cause(sandbox, bot, scenario: str) -> None:
    steps, leaf, sop_id = CASES[scenario]
    await sandbox.apply(scenario)
    thread = await triage_thread(sandbox, bot)
    assert_reaches(thread, steps, leaf, sop_id)
    assert f"reached **{leaf}**" in thread[0].message


async def test_memory_pressure_is_named_by_the_daily_node_check(sandbox, bot) -> None:
    await sandbox.apply("node-memory-pressure")
    thread = await triage_thread(sandbox, bot)
    assert "MemoryPressure" in "\n".join(p.message for p in thread)


async def test_the_bot_that_cannot_reach_the_api_says_so_and_goes_to_2_4(sandbox, tmp_path: Path) -> None:
    dead = tmp_path / "kubeconfig"
    dead.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dead\n"
        "clusters: [{name: dead, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: dead, user: {token: x}}]\n"
        "contexts: [{name: dead, context: {cluster: dead, user: dead}}]\n", encoding="utf-8")
    from bot.runtime import Runtime

    runtime = Runtime(sandbox.settings(kubernetes={"kubeconfig": str(dead)}))
    await runtime.start()
    try:
        thread = await triage_thread(sandbox, runtime)
    finally:
        await runtime.stop()
    shown = path_of(thread)
    assert "**What is affected?** → **The cluster** — the bot cannot reach the API server: " in shown
    assert "**Nodes Ready?** → **API unreachable** — the bot cannot reach the API server: " in shown
    assert ":checkered_flag: **API server unreachable - Section 2.4**" in shown
    assert "api-server" in sops_run(thread)
    assert "the bot cannot reach the API server: " in "\n".join(p.message for p in thread if "api-server" in p.message)


TEAM_CHART = '''```mermaid
graph TD
    START["Issue Reported / Alert Fired"] --> SCOPE{"What is affected?"}
    SCOPE -->|"Single pod/service"| POD_TRIAGE["Pod-Level Triage"]
    SCOPE -->|"Multiple services"| INFRA_TRIAGE["Infrastructure Triage"]
    SCOPE -->|"All services down"| CLUSTER_TRIAGE["Cluster-Level Triage"]
    POD_TRIAGE --> POD_STATUS{"kubectl get pod status?"}
    POD_STATUS -->|"CrashLoopBackOff"| CRASHLOOP["Check logs: kubectl logs -n NS POD --previous"]
    POD_STATUS -->|"Pending"| PENDING{"Describe pod events"}
    POD_STATUS -->|"ImagePullBackOff"| IMAGE["Check registry + pull secrets"]
    PENDING -->|"Insufficient CPU/Mem"| SCALE["Scale nodes or reduce requests"]
    PENDING -->|"No matching node"| LABELS["Check nodeSelector + labels"]
    PENDING -->|"PVC Pending"| STORAGE["Check PVC + StorageClass"]
    CRASHLOOP -->|"OOMKilled"| OOM["Increase memory limits"]
    CRASHLOOP -->|"Connection refused"| DEPS["Check dependency services"]
    CRASHLOOP -->|"Permission denied"| RBAC["Check RBAC + SecurityContext"]
    INFRA_TRIAGE --> INFRA_CHECK{"Which layer?"}
    INFRA_CHECK -->|"TLS errors on multiple services"| VAULT_CHECK["Check Vault seal status"]
    INFRA_CHECK -->|"No external access"| NET_CHECK["Check Traefik + Cilium LB"]
    CLUSTER_TRIAGE --> NODES{"kubectl get nodes"}
    NODES -->|"Nodes NotReady"| NODE_DIAG["Check kubelet + VM status"]
    NODES -->|"API unreachable"| API_DIAG["Check CP nodes + etcd"]
    NODES -->|"All nodes Ready"| NETWORK_DIAG["Check Cilium + Traefik"]
    VAULT_CHECK -->|"Sealed"| UNSEAL["Unseal Vault - Section 5.1"]
    VAULT_CHECK -->|"Unsealed"| CERT_CHECK["Check cert-manager - Section 4"]
```
'''


@pytest.mark.parametrize("scenario, path, leaf", [
    ("crashloop-oomkilled", ["**What is affected?** → **Single pod/service**",
                             "**kubectl get pod status?** → **CrashLoopBackOff**",
                             "**Check logs: kubectl logs -n NS POD --previous** → **OOMKilled**"],
     "Increase memory limits"),
    ("pod-pending", ["**Describe pod events** → **Insufficient CPU/Mem**"], "Scale nodes or reduce requests"),
    ("node-kubelet-stopped", ["**What is affected?** → **All services down**",
                              "**kubectl get nodes** → **Nodes NotReady**"], "Check kubelet + VM status"),
    ("vault-sealed", ["**What is affected?** → **Multiple services**",
                      "**Which layer?** → **TLS errors on multiple services**",
                      "**Check Vault seal status** → **Sealed**"], "Unseal Vault - Section 5.1"),
])
async def test_the_team_runbooks_wording_walks_the_same_way(sandbox, tmp_path: Path, scenario: str,
                                                           path: list[str], leaf: str) -> None:
    runbook = runbook_with_chart(tmp_path, TEAM_CHART)
    await sandbox.apply(scenario)
    thread = await triage_with_runbook(sandbox, runbook)
    assert_shows(path_of(thread), path, leaf)
