"""``/sop triage vault`` walks chapter 5's flowchart: seal status of every replica, whether a
Raft leader is elected, whether the peers are all there, PKI responding, Kubernetes auth working —
each answered from the evidence the chapter's SOPs read, ending on the leaf of the cause with
that section's SOPs run. The team's own flowchart (its node ids and words) walks the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.triage.support import assert_reaches, assert_shows, path_of, team_book, triage_thread, triage_with_runbook

pytestmark = pytest.mark.asyncio

UNSEALED = "**Seal status of every replica?** → **All unsealed** — "
LEADER = "**Is a Raft leader elected?** → **Leader elected** — leader vault-0"
NO_LEADER = "**Is a Raft leader elected?** → **No leader** — "
PKI_OK = "**PKI responding?** → **Yes** — "

CASES = {
    "vault-sealed": (["**Seal status of every replica?** → **All sealed** — vault-0: sealed, unseal progress 0/3"],
                     "Unseal every replica - Section 5.1", "vault-status"),
    "vault-replica-not-joined": (["**Seal status of every replica?** → **1-2 sealed** — ",
                                  "vault-2: not initialized (Initialized=false"],
                                 "Unseal or rejoin the replicas that are down - Section 5.2", "vault-status"),
    "vault-raft-netpol": ([UNSEALED, NO_LEADER, "**Are all Raft peers present?** → **All peers present** — "
                                                "lists vault-0, vault-1, vault-2"],
                          "Wait for the election, then check port 8201 - Section 5.3", "vault-status"),
    "vault-headless-missing-peer": ([UNSEALED, NO_LEADER, "**Are all Raft peers present?** → **Peers missing** — "
                                                          "headless Service vault-internal lacks vault-2"],
                                    "Rejoin the missing peers - Section 5.2", "vault-status"),
    "vault-pki-missing": ([UNSEALED, LEADER, "**PKI responding?** → **No** — pki/pki_int: PKI engine pki_int is "
                                             "not mounted"],
                          "Mount the PKI engine, its CA and role again - Section 5.4", "vault-pki"),
    "vault-auth-stale-host": ([UNSEALED, LEADER, PKI_OK, "**K8s auth working?** → **No** — auth/kubernetes/config: "
                                                        "stale API server URL"],
                              "Configure Kubernetes auth again - Section 5.5", "vault-k8s-auth"),
}


@pytest.mark.parametrize("scenario", sorted(CASES))
async def test_triage_vault_reaches_the_leaf_of_the_cause(sandbox, bot, scenario: str) -> None:
    steps, leaf, sop_id = CASES[scenario]
    await sandbox.apply(scenario)
    thread = await triage_thread(sandbox, bot, "/sop triage vault")
    assert_reaches(thread, steps, leaf, sop_id)


async def test_a_healthy_vault_walks_to_the_issuer(sandbox, bot) -> None:
    thread = await triage_thread(sandbox, bot, "/sop triage vault")
    shown = path_of(thread)
    assert "**K8s auth working?** → **Yes** — login as cert-manager/vault-issuer (role cert-manager-issuer) " \
           "with a fresh token succeeded" in shown
    assert ":checkered_flag: **Vault is fine: look at the issuer - Section 4.2**" in shown


TEAM_VAULT = '''## 5. Vault Issues

### Vault Diagnostic Flowchart

```mermaid
graph TD
    VAULT_START["Vault Issue"] --> VAULT_STATUS{"vault status on all 3 pods"}

    VAULT_STATUS -->|"All sealed"| UNSEAL_ALL["Unseal all 3 replicas"]
    VAULT_STATUS -->|"1-2 sealed"| UNSEAL_PARTIAL["Unseal sealed replicas"]
    VAULT_STATUS -->|"All unsealed"| VAULT_HEALTH{"Check Vault health"}

    VAULT_HEALTH -->|"No leader"| RAFT_CHECK["Check Raft peers"]
    VAULT_HEALTH -->|"Leader elected"| PKI_CHECK{"PKI responding?"}

    PKI_CHECK -->|"Yes"| AUTH_CHECK{"K8s auth working?"}
    PKI_CHECK -->|"No"| PKI_FIX["Re-enable PKI engine"]

    AUTH_CHECK -->|"Yes"| VAULT_OK["Vault OK - Check cert-manager"]
    AUTH_CHECK -->|"No"| AUTH_FIX["Reconfigure K8s auth"]

    RAFT_CHECK -->|"Peers missing"| REJOIN["Rejoin peers to Raft"]
    RAFT_CHECK -->|"All peers present"| LEADER_ELECT["Wait for leader election (30s)"]

    UNSEAL_ALL --> VERIFY["Verify all pods Ready"]
    UNSEAL_PARTIAL --> VERIFY
```

### 5.1 Vault Sealed After Restart
'''


@pytest.mark.parametrize("scenario, path, leaf", [
    ("vault-partially-sealed", ["**vault status on all 3 pods** → **1-2 sealed**"], "Verify all pods Ready"),
    ("vault-restarted-together", ["**vault status on all 3 pods** → **All unsealed**",
                                  "**Check Vault health** → **No leader**", "**Check Raft peers** → **All peers present**"],
     "Wait for leader election (30s)"),
    ("vault-pki-role-missing", ["**PKI responding?** → **No**"], "Re-enable PKI engine"),
])
async def test_the_teams_chapter_5_flowchart_walks_the_same_way(sandbox, tmp_path: Path, scenario, path, leaf) -> None:
    await sandbox.apply(scenario)
    thread = await triage_with_runbook(sandbox, team_book(tmp_path, TEAM_VAULT), "/sop triage vault")
    assert_shows(path_of(thread), path, leaf)
