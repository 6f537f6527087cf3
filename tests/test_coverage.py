"""Runbook coverage is data: each SOP declares its entries, causes and alerts, each action the
Resolution step it carries out, each scenario its section; `sopbot list --coverage` joins them
with every entry of the runbook."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.approvals.actions import ACTIONS
from bot.cli import main
from bot.coverage import coverage, coverage_markdown, load_scenarios
from bot.models import Finding, Severity
from bot.registry import Registry, load_handlers, sop
from bot.runbook import Runbook

ROOT = Path(__file__).resolve().parents[1]
SANDBOX_RUNBOOK = ROOT / "sandbox" / "runbook.md"
FIXTURE = Path(__file__).parent / "fixtures" / "runbook.md"


def shipped() -> dict[str, object]:
    rows = coverage(load_handlers(), Runbook.load(SANDBOX_RUNBOOK), ACTIONS, load_scenarios())
    return {r.number: r for r in rows}


def test_every_entry_of_the_runbook_has_a_row():
    rows = shipped()
    # The sandbox runbook has the platform runbook's 88 entries: chapter 1's two halves, the
    # sub-problems of chapter 7, 9.1's phases and 9.5's parts; chapter 11's steps are not entries.
    assert len(rows) == 88
    assert {"1", "1/quick", "7.2/oidc", "7.4/loki", "9.1/phase-3-7", "9.5/pre-upgrade", "11.8"} <= set(rows)
    assert "7.2" not in rows and "11.3/cordon" not in rows


def test_rows_join_sops_alerts_actions_and_scenarios():
    rows = shipped()
    leader = rows["5.3"]
    assert "vault-status" in leader.sops and "VaultLeaderLost" in leader.alerts
    assert "vault-no-leader" in leader.scenarios and not leader.guidance_only
    unseal = rows["5.2"]
    assert any(a.startswith("vault-unseal (Step 3") for a in unseal.actions)
    assert rows["7.4/prometheus"].sops == ["prometheus-storage"]
    assert rows["7.2/oidc"].guidance_only and rows["7.2/oidc"].sops == []
    table = coverage_markdown(list(rows.values()))
    assert "| 5.3 | Raft Leader Election Issues | `vault-status` |" in table
    assert "| 11.8 | Service Upgrade Procedures | - | - | - | - | yes |" in table
    assert "| 10.3 | etcd Restore from Snapshot | `etcd-snapshots` |" in table


def test_every_declared_section_names_an_entry_of_the_runbook():
    book = Runbook.load(SANDBOX_RUNBOOK)
    entries = {e.number for e in book.entries()}
    containers = {n for n in book.sections if any(e.startswith(n + "/") for e in entries)}
    for item in load_handlers():
        for ref in item.sections:
            assert ref in entries or ref in containers, f"{item.id}: runbook has no entry {ref}"
    for name, action in ACTIONS.items():
        for ref in (action.section, *action.also):
            if ref:
                assert ref in entries or ref in containers, f"action {name}: {ref}"


def test_a_section_reference_covers_its_sub_problems_and_an_exact_one_only_itself():
    reg = Registry()

    @sop("keycloak", title="Keycloak", section="7.2", severity=Severity.P2, alerts=("KeycloakDown",),
         causes=("client secret mismatch",), registry=reg)
    async def keycloak(ctx, params) -> list[Finding]:
        return []

    @sop("cache", title="Cache", sections=("7.2/infinispan", "5.3"), severity=Severity.P3, registry=reg)
    async def cache(ctx, params) -> list[Finding]:
        return []

    rows = {r.number: r for r in coverage(reg, Runbook.load(FIXTURE))}
    assert rows["7.2/oidc"].sops == ["keycloak"] and rows["7.2/oidc"].causes == ["client secret mismatch"]
    assert rows["7.2/infinispan"].sops == ["cache", "keycloak"]
    assert rows["5.3"].sops == ["cache"] and rows["5.3"].alerts == []
    assert rows["5.1"].guidance_only


def test_the_cli_lists_the_coverage_of_a_runbook(capsys):
    assert main(["list", "--coverage", "--runbook", str(SANDBOX_RUNBOOK)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].endswith("of 88 entries have a SOP or an action")
    assert any(line.startswith("7.2/oidc") and line.endswith("guidance only") for line in out.splitlines())
    assert main(["list", "--coverage", "--markdown", "--runbook", str(SANDBOX_RUNBOOK)]) == 0
    assert "| Entry | Title | SOPs | Alerts | Actions | Scenarios | Guidance only |" in capsys.readouterr().out


def test_the_cli_says_when_there_is_no_runbook(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("SOPBOT_RUNBOOK__PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["list", "--coverage"]) == 64
    assert "give --runbook PATH or configure runbook.path" in capsys.readouterr().err
    assert main(["list", "--coverage", "--runbook", str(tmp_path / "missing.md")]) == 66


@pytest.mark.parametrize("bad", ["7.2 oidc", "seven", "7.2/OIDC"])
def test_a_malformed_section_reference_fails_at_import(bad):
    with pytest.raises(ValueError):
        sop("x", title="x", sections=(bad,), severity=Severity.P4, registry=Registry())


def test_an_action_counts_for_each_entry_whose_resolution_it_carries_out():
    rows = shipped()
    assert any(a.startswith("restart (Resolution 2: restart the Cilium DaemonSet") for a in rows["3.1"].actions)
    assert any(a.startswith("restart (Resolution 4: restart Traefik") for a in rows["3.4"].actions)
    assert any(a.startswith("restart (Resolution 1: restart CoreDNS") for a in rows["3.6"].actions)
    assert not any(a.startswith("restart") for a in rows["3.5"].actions)


def test_a_procedure_counts_for_the_entry_it_carries_out(capsys):
    # 10.2 is a procedure from start to end: the row names it, so it is not guidance only.
    assert main(["list", "--coverage", "--runbook", str(SANDBOX_RUNBOOK)]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("10.2 ")]
    assert "actions replace-node (procedure: Single node replacement" in row
    assert not row.endswith("guidance only")
