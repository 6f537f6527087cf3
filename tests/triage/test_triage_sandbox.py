"""``/sop triage`` through the sandbox: the runbook's section-1 Mermaid flowchart is walked from
the root, each decision answered from the platform's evidence, the SOPs of the leaf's section run,
and the path shown as a tree; a decision nobody can answer stops with a question."""

from __future__ import annotations

import pytest

from tests.triage.support import edited_runbook, path_of, sops_run, triage_thread, triage_with_runbook

pytestmark = pytest.mark.asyncio


async def test_vault_sealed_reaches_unseal_and_runs_vault_status(sandbox, bot):
    await sandbox.apply("vault-sealed")
    thread = await triage_thread(sandbox, bot)
    path = path_of(thread)
    assert "- **What is affected?** → **Several services** — " in path
    assert "**Which layer?** → **TLS errors** — 3 of 3 Vault replicas sealed" in path
    assert "**Vault sealed?** → **Sealed** — 3 of 3 Vault replicas sealed (vault-0, vault-1, vault-2)" in path
    assert ":checkered_flag: **Unseal Vault - Section 5.1**" in path
    assert "vault-status" in sops_run(thread)
    assert "| :red_circle: | vault-0 | sealed" in "\n".join(p.message for p in thread)
    order = [p.message.split("\n", 1)[0] for p in thread]
    nxt = next(i for i, m in enumerate(order) if m.startswith("#### Next steps"))
    assert order.index(next(m for m in order if "`vault-status`" in m and m.startswith("####"))) < nxt
    assert "Follow runbook 5.1" in thread[nxt].message or "5.1" in thread[nxt].message
    assert "Proposal #1: `vault-unseal" in thread[-1].message  # the SOP's fix, proposed as for /sop
    assert "reached **Unseal Vault - Section 5.1**: ran `vault-status`" in thread[0].message


async def test_node_not_ready_reaches_section_2_2_and_runs_node_health(sandbox, bot):
    await sandbox.apply("node-disk-pressure")
    thread = await triage_thread(sandbox, bot)
    path = path_of(thread)
    assert "**What is affected?** → **The cluster**" in path and "NotReady: rke2-general-1" in path
    assert "**Nodes Ready?** → **Nodes NotReady**" in path
    assert ":checkered_flag: **Node NotReady - Section 2.2**" in path
    assert "node-health" in sops_run(thread)
    assert "DiskPressure" in "\n".join(p.message for p in thread)


async def test_healthy_platform_reaches_the_daily_checks(sandbox, bot):
    thread = await triage_thread(sandbox, bot)
    path = path_of(thread)
    assert "**What is affected?** → **Nothing visible**" in path
    assert "Section 11.1" in path
    assert "vault-status" not in sops_run(thread) and "firing-alerts" in sops_run(thread)


async def test_words_start_where_they_point(sandbox, bot):
    await sandbox.apply("coredns-down")
    thread = await triage_thread(sandbox, bot, "/sop triage dns")
    path = path_of(thread)
    assert "What is affected?" not in path  # started at chapter 3's CoreDNS check, not the root
    assert ":checkered_flag: **Read the CoreDNS logs and restart it - Section 3.6**" in path
    assert "pod-health" in sops_run(thread)


async def test_tls_words_start_at_the_vault_decision(sandbox, bot):
    thread = await triage_thread(sandbox, bot, "/sop triage tls errors")
    path = path_of(thread)
    assert path.splitlines()[1].startswith("- **Vault sealed?** → **Unsealed** — 0 of 3 Vault replicas sealed")
    assert ":checkered_flag: **Check cert-manager - Section 4**" in path
    assert "cert-health" in sops_run(thread)


async def test_editing_the_flowchart_changes_the_path(sandbox, tmp_path):
    # The team sends "Several services" straight to cert-manager: no Vault question any more.
    path = edited_runbook(tmp_path, 'SCOPE -->|"Several services"| LAYER{"Which layer?"}',
                          'SCOPE -->|"Several services"| CERTS')
    await sandbox.apply("vault-sealed")
    thread = await triage_with_runbook(sandbox, path)
    shown = path_of(thread)
    assert "**What is affected?** → **Several services**" in shown
    assert "Which layer?" not in shown and "Vault sealed?" not in shown
    assert ":checkered_flag: **Check cert-manager - Section 4**" in shown
    assert "cert-health" in sops_run(thread) and "vault-status" not in sops_run(thread)


async def test_a_decision_without_evaluator_stops_with_a_question(sandbox, tmp_path):
    path = edited_runbook(tmp_path, 'SCOPE -->|"Nothing visible"| DAILY["Run the daily checks - Section 11.1"]',
                          'SCOPE -->|"Nothing visible"| ASK{"Do users report slowness?"}\n'
                          '    ASK -->|"Yes"| DAILY["Run the daily checks - Section 11.1"]\n'
                          '    ASK -->|"No"| DONE["Close the alert"]')
    thread = await triage_with_runbook(sandbox, path)
    shown = path_of(thread)
    assert "**What is affected?** → **Nothing visible**" in shown
    assert "**Do users report slowness?** → :grey_question:" in shown
    assert sops_run(thread) == []  # no guess, so no SOP
    assert ('Stopped for a person: **Do users report slowness?** — the bot has no evaluator for this '
            'decision; a person must look and choose: "Yes" / "No"') in thread[-1].message
    assert "stopped: a person must decide" in thread[0].message


async def test_evidence_that_fits_no_branch_stops_with_a_question(sandbox, bot):
    # Two workloads in two namespaces failing, no platform layer at fault: which layer is a person's call.
    await sandbox.apply("pod-crashloop")
    await sandbox.apply("image-pull-backoff")
    thread = await triage_thread(sandbox, bot)
    shown = path_of(thread)
    assert "**What is affected?** → **Several services** — " in shown and "pods not running in harbor, kasm" in shown
    assert "**Which layer?** → :grey_question: — 0 of 3 Vault replicas sealed; every certificate Ready" in shown
    assert sops_run(thread) == []
    assert ('Stopped for a person: **Which layer?** — the evidence fits no branch; a person must look and '
            'choose: "TLS errors" / "No outside access" / "DNS failures" / "Database errors"') in thread[-1].message


async def test_one_failing_pod_reaches_its_status_branch(sandbox, bot):
    await sandbox.apply("pod-crashloop")
    thread = await triage_thread(sandbox, bot)
    shown = path_of(thread)
    assert "**What is affected?** → **One pod or service**" in shown
    assert "**Pod status?** → **CrashLoopBackOff** — harbor/harbor-registry" in shown
    assert ("**Why did it crash?** → **Connection refused** — harbor/harbor-registry-" in shown
            and "dial tcp 10.43.87.12:9000: connect: connection refused" in shown)
    assert ":checkered_flag: **Check the services it depends on - Section 1**" in shown
    assert "pod-health" in sops_run(thread)


async def test_lb_without_ip_reaches_traefik_and_runs_traefik_lb(sandbox, bot):
    await sandbox.apply("lb-ip-pending")
    thread = await triage_thread(sandbox, bot)
    shown = path_of(thread)
    assert "**Which layer?** → **No outside access** — svc/kube-system/rke2-traefik EXTERNAL-IP <pending>" in shown
    assert sops_run(thread) == ["traefik-lb"]
