"""``/sop triage dns``, ``/sop triage no external access`` and friends walk chapter 3's networking
flowchart: each decision answered from the evidence (the issue type, Traefik's EXTERNAL-IP, the
L2 announcement, the Cilium agents, the CoreDNS pods), ending on the leaf for that scenario's
cause with the SOPs of its section run and naming the cause. The team runbook's wording of the
chart walks on the same evaluators."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.triage.support import assert_shows, path_of, runbook_with_chart, sops_run, triage_thread, triage_with_runbook

pytestmark = pytest.mark.asyncio

LB = "**kubectl get svc -n kube-system rke2-traefik**"
CILIUM = "**kubectl get pods -n kube-system -l k8s-app=cilium**"
COREDNS = "**kubectl get pods -n kube-system -l app.kubernetes.io/name=rke2-coredns**"

# (scenario, command, path steps in order, leaf, a SOP the leaf runs, what its report names)
CASES = [
    ("coredns-down", "/sop triage dns",
     [f"{COREDNS} → **Not Running** — 0 of 2 CoreDNS pods Running and Ready"],
     "Read the CoreDNS logs and restart it - Section 3.6", "dns-health", "CoreDNS forwarding loop (3.6)"),
    ("kube-dns-ip-changed", "/sop triage dns",
     [f"{COREDNS} → **Running** — 2 of 2 CoreDNS pods Running and Ready"],
     "Check the DNS Service and the Cilium DNS proxy - Section 3.6", "dns-health",
     "kube-dns service ClusterIP changed: 10.43.0.99"),
    ("lb-ip-pending", "/sop triage no external access",
     [f"{LB} → **EXTERNAL-IP pending** — svc/kube-system/rke2-traefik EXTERNAL-IP <pending>"],
     "Check the Cilium IP pool - Section 3.3", "traefik-lb", "no CiliumLoadBalancerIPPool"),
    ("lb-ip-outside-pool", "/sop triage no external access",
     [f"{LB} → **EXTERNAL-IP pending** — svc/kube-system/rke2-traefik EXTERNAL-IP <pending> (LB IPAM no_pool: "
      "No pool exists with a CIDR containing '203.0.113.250')"],
     "Check the Cilium IP pool - Section 3.3", "traefik-lb", "loadBalancerIP 203.0.113.250 is outside every pool"),
    ("l2-policy-missing", "/sop triage no external access",
     [f"{LB} → **EXTERNAL-IP assigned** — svc/kube-system/rke2-traefik EXTERNAL-IP 203.0.113.202",
      "**Is the LB IP announced?** → **Not announced** — no CiliumL2AnnouncementPolicy"],
     "Apply the L2 policy and pool - Section 3.2", "l2-announcements", "no CiliumL2AnnouncementPolicy"),
    ("gateway-not-accepted", "/sop triage no external access",
     [f"{LB} → **EXTERNAL-IP assigned**",
      "**Is the LB IP announced?** → **Announced** — announced by rke2-general-1"],
     "Check the Gateways and HTTPRoutes - Section 3.4", "traefik-routing",
     "listener https on port 443 instead of an entrypoint port (8000/8443)"),
    ("cilium-config-mismatch", "/sop triage network problem",
     ["**Issue type?** → **Pod-to-pod failure** — 2 node(s) without a Ready Cilium agent",
      f"{CILIUM} → **Not Ready**"],
     "Fix and restart the Cilium DaemonSet - Section 3.1", "cilium-health",
     "Cilium configuration mismatch: k8s-service-host=10.43.0.1"),
    ("vxlan-mtu-mismatch", "/sop triage pod-to-pod failure",
     [f"{CILIUM} → **All Ready** — a Ready Cilium agent on each of 6 nodes"],
     "Check the overlay - Section 3.8", "vxlan-health", "MTU mismatch: mtu=1500"),
    ("l2-announcements-disabled", "/sop triage network problem",
     ["**Issue type?** → **No external access** — svc/kube-system/rke2-traefik EXTERNAL-IP 203.0.113.202, "
      "not announced: cilium-config enable-l2-announcements=false",
      f"{LB} → **EXTERNAL-IP assigned**", "**Is the LB IP announced?** → **Not announced**"],
     "Apply the L2 policy and pool - Section 3.2", "l2-announcements", "L2 announcements disabled"),
]


@pytest.mark.parametrize("scenario, command, path, leaf, sop, cause", CASES, ids=[c[0] for c in CASES])
async def test_chapter_3_flowchart_walks_to_the_leaf_of_the_cause(sandbox, bot, scenario, command, path, leaf,
                                                                   sop, cause):
    await sandbox.apply(scenario)
    thread = await triage_thread(sandbox, bot, command)
    shown = path_of(thread)
    assert shown.splitlines()[0] == "#### Triage path (flowchart of runbook 3)", shown
    at = -1
    for step in path:  # in this order
        found = shown.find(step)
        assert found > at, f"{step!r} not after the previous step in:\n{shown}"
        at = found
    assert f":checkered_flag: **{leaf}**" in shown, shown
    assert sop in sops_run(thread), sops_run(thread)
    reports = "\n".join(p.message for p in thread if p.message.startswith("####"))
    assert cause in reports, reports
    assert "What is affected?" not in shown  # started in chapter 3's chart, not section 1's


async def test_a_healthy_network_is_a_persons_call(sandbox, bot):
    thread = await triage_thread(sandbox, bot, "/sop triage network problem")
    shown = path_of(thread)
    assert ("**Issue type?** → :grey_question: — svc/kube-system/rke2-traefik EXTERNAL-IP 203.0.113.202; "
            "Cilium agents Ready on 6 nodes; 2 CoreDNS pods running") in shown, shown
    assert sops_run(thread) == []
    assert "Stopped for a person: **Issue type?** — the evidence fits no branch" in thread[-1].message


async def test_faults_of_two_kinds_stop_the_walk(sandbox, bot):
    await sandbox.apply("coredns-down")
    await sandbox.apply("lb-ip-pending")
    thread = await triage_thread(sandbox, bot, "/sop triage network problem")
    shown = path_of(thread)
    assert "**Issue type?** → :grey_question: — faults of several kinds: No external access: " in shown, shown
    assert "DNS failure: CoreDNS not running: " in shown
    assert sops_run(thread) == []


# The team runbook's chapter-3 chart, as their runbook draws it: the same decisions (kubectl commands),
# leaves without section numbers.
TEAM_CHART = '''```mermaid
graph TD
    NET_START["Network Issue Reported"] --> NET_TYPE{"Issue type?"}

    NET_TYPE -->|"No external access"| LB_CHECK["Check Traefik LB IP"]
    NET_TYPE -->|"Pod-to-pod failure"| CILIUM_CHECK["Check Cilium agent"]
    NET_TYPE -->|"DNS failure"| DNS_CHECK["Check CoreDNS"]
    NET_TYPE -->|"TLS errors"| TLS_CHECK["Go to Section 4"]

    LB_CHECK --> LB_SVC{"kubectl get svc -n kube-system rke2-traefik"}
    LB_SVC -->|"EXTERNAL-IP pending"| L2_CHECK["Check Cilium L2 + IP Pool"]
    LB_SVC -->|"EXTERNAL-IP assigned"| ROUTE_CHECK["Check Gateway/HTTPRoute"]

    L2_CHECK --> L2_FIX["Apply L2AnnouncementPolicy + Pool"]

    CILIUM_CHECK --> CILIUM_PODS{"kubectl get pods -n kube-system -l k8s-app=cilium"}
    CILIUM_PODS -->|"Not Ready"| CILIUM_RESTART["Restart Cilium DS"]
    CILIUM_PODS -->|"All Ready"| CILIUM_STATUS["cilium status --brief"]

    DNS_CHECK --> COREDNS{"kubectl get pods -n kube-system -l app.kubernetes.io/name=rke2-coredns"}
    COREDNS -->|"Running"| DNS_TEST["Test: kubectl run debug -- nslookup kubernetes.default"]
    COREDNS -->|"Not Running"| COREDNS_FIX["Check CoreDNS logs + restart"]
```
'''


@pytest.mark.parametrize("scenario, command, path, leaf", [
    ("coredns-down", "/sop triage dns", [f"{COREDNS} → **Not Running**"], "Check CoreDNS logs + restart"),
    ("lb-ip-pending", "/sop triage no external access", [f"{LB} → **EXTERNAL-IP pending**", "Check Cilium L2 + IP Pool"],
     "Apply L2AnnouncementPolicy + Pool"),
    ("cilium-bpf-unmounted", "/sop triage network issue",
     ["**Issue type?** → **Pod-to-pod failure**", f"{CILIUM} → **Not Ready**"], "Restart Cilium DS"),
])
async def test_the_team_runbooks_chapter_3_chart_walks_on_the_same_evaluators(sandbox, tmp_path: Path, scenario,
                                                                             command, path, leaf):
    runbook = runbook_with_chart(tmp_path, TEAM_CHART, "## 3. Networking Issues")
    await sandbox.apply(scenario)
    thread = await triage_with_runbook(sandbox, runbook, command)
    assert_shows(path_of(thread), path, leaf)
    # The team's leaves name no section: the bot says what the runbook says and runs nothing.
    assert sops_run(thread) == []
    assert "The runbook says:" in thread[-1].message
