"""``/sop triage tls`` walks chapter 4's flowchart: certificates Ready?, which certificate is
served (a real TLS handshake through the LB IP), why a certificate is not Ready (its newest
CertificateRequest), Vault sealed? — each answered from evidence, ending on the leaf for the
cause with that section's SOPs run. The team's runbook (same node ids, its own words) walks too."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.flowchart import flowcharts
from bot.runbook import Runbook
from bot.triage import find_start
from sandbox.runner import RUNBOOK
from tests.triage.support import (
    assert_in_order, assert_reaches, assert_shows, path_of, sops_run, team_book, triage_thread, triage_with_runbook)

pytestmark = pytest.mark.asyncio

READY = "**Certificates Ready?** → **Ready=True** — all "
NOT_READY = "**Certificates Ready?** → **Ready=False** — 1 of "
ISSUING = "**Why is it not Ready?** → **Issuing** — "

CASES = {
    "tls-traefik-default-cert": ([READY, "**Which certificate is served?** → **Traefik default cert** — "
                                         "https://harbor.example.com serves TRAEFIK DEFAULT CERT"],
                                 "Check the Gateway TLS and the TLSStore - Section 4.5", "tls-handshake"),
    "tls-served-cert-expired": ([READY, "**Which certificate is served?** → **Expired cert** — "
                                        "https://grafana.example.com serves an expired certificate"],
                                "Delete the TLS secret to re-issue - Section 11.7", "cert-health"),
    "tls-root-ca-untrusted": ([READY, "**Which certificate is served?** → **Untrusted chain** — "],
                              "Give clients the root CA - Section 4.5", "tls-handshake"),
    "pki-intermediate-expired": ([READY, "**Which certificate is served?** → **Correct cert** — "],
                                 "Check the CA dates - Section 4.3", "vault-pki"),
    "tls-cert-role-denied": ([NOT_READY, "**Why is it not Ready?** → **Failed** — harbor/harbor-example-com-tls: "
                                         "certificaterequest/", "not allowed by this role"],
                             "Read the request's failure - Section 4.1", "cert-health"),
    "tls-cert-vault-sealed": ([NOT_READY, ISSUING + "mattermost/", "**Is Vault sealed?** → **Yes** — 3 of 3 "],
                              "Unseal Vault - Section 5.1", "vault-status"),
    "tls-cert-issuer-not-ready": ([NOT_READY, ISSUING + "monitoring/", "Referenced issuer does not have a Ready",
                                   "**Is Vault sealed?** → **No** — 0 of 3 Vault replicas sealed"],
                                  "Check the issuer's Vault login - Section 4.2", "cert-issuer"),
}


@pytest.mark.parametrize("scenario", sorted(CASES))
async def test_triage_tls_reaches_the_leaf_of_the_cause(sandbox, bot, scenario: str) -> None:
    steps, leaf, sop_id = CASES[scenario]
    await sandbox.apply(scenario)
    thread = await triage_thread(sandbox, bot, "/sop triage tls")
    shown = assert_reaches(thread, steps, leaf, sop_id)
    assert "flowchart of " in shown and "4" in shown.splitlines()[0]


async def test_a_healthy_platform_walks_to_the_ca_dates(sandbox, bot) -> None:
    thread = await triage_thread(sandbox, bot, "/sop triage tls")
    shown = path_of(thread)
    assert "**Which certificate is served?** → **Correct cert** — 10 of 10 hosts serve their own" in shown
    assert ":checkered_flag: **Check the CA dates - Section 4.3**" in shown
    assert {"vault-pki", "ca-expiry"} <= set(sops_run(thread))


async def test_tls_words_start_at_the_chapter_4_flowchart_not_a_section_1_branch() -> None:
    charts = flowcharts(Runbook.parse(RUNBOOK.read_text()))
    chart, node = find_start(charts, "tls")
    assert chart.section == "4" and node.id == "TLS_START"
    # Other words still reach section 1's nodes.
    chart, node = find_start(charts, "several services")
    assert chart.section == "1"


TEAM_TLS = '''## 4. TLS/Certificate Issues

### TLS Diagnostic Flowchart

```mermaid
graph TD
    TLS_START["TLS/Certificate Issue"] --> CERT_STATUS{"kubectl get certificates -A"}
    CERT_STATUS -->|"Ready=True"| SERVING{"Is service serving correct cert?"}
    CERT_STATUS -->|"Ready=False"| CERT_DETAIL["kubectl describe certificate"]
    SERVING -->|"Traefik default cert"| ROUTE_TLS["Check Gateway TLS config"]
    SERVING -->|"Expired cert"| DELETE_SECRET["Delete TLS secret to force reissue"]
    CERT_DETAIL --> CERT_REASON{"Reason?"}
    CERT_REASON -->|"Issuing"| ISSUER_CHECK["Check ClusterIssuer status"]
    CERT_REASON -->|"Failed"| CM_LOGS["Check cert-manager logs"]
    ISSUER_CHECK --> VAULT_SEALED{"Is Vault sealed?"}
    VAULT_SEALED -->|"Yes"| UNSEAL["Unseal Vault - Section 5.1"]
    VAULT_SEALED -->|"No"| K8S_AUTH["Check Vault K8s auth"]
    K8S_AUTH --> AUTH_FIX["Verify SA token + role"]
```

### 4.1 Certificate Not Issued
'''


@pytest.mark.parametrize("scenario, path, leaf", [
    ("tls-traefik-default-cert", ["**kubectl get certificates -A** → **Ready=True**",
                                  "**Is service serving correct cert?** → **Traefik default cert**"],
     "Check Gateway TLS config"),
    ("tls-cert-vault-sealed", ["**kubectl get certificates -A** → **Ready=False**", "**Reason?** → **Issuing**",
                               "**Is Vault sealed?** → **Yes**"], "Unseal Vault - Section 5.1"),
    ("tls-cert-role-denied", ["**Reason?** → **Failed**"], "Check cert-manager logs"),
])
async def test_the_teams_chapter_4_flowchart_walks_the_same_way(sandbox, tmp_path: Path, scenario, path, leaf) -> None:
    await sandbox.apply(scenario)
    thread = await triage_with_runbook(sandbox, team_book(tmp_path, TEAM_TLS), "/sop triage tls")
    shown = path_of(thread)
    assert_in_order(shown, path)
    assert_shows(shown, path, leaf)


async def test_a_healthy_platform_stops_for_a_person_on_the_teams_chart(sandbox, tmp_path: Path) -> None:
    # The team's chart has no branch for "the right certificate is served": triage says so.
    thread = await triage_with_runbook(sandbox, team_book(tmp_path, TEAM_TLS), "/sop triage tls")
    text = "\n".join(p.message for p in thread)
    assert "**Is service serving correct cert?** — the evidence fits no branch (it answered 'Correct cert')" in text
