"""The README's first command ends in ``sopbot demo``; CI runs it once, non-interactively, the way a
person would type into it. ``sopbot diagnose`` is for when chat itself is down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from sandbox.kube.kubectl import kubectl_binary

SOPBOT = [sys.executable, "-m", "bot.cli"]


def test_demo_shows_the_thread_a_person_would_see():
    typed = "/sop list\n/sop vault-status\n/sop help 5.1\n/scenario vault-sealed\n/sop vault-status\n"
    done = subprocess.run([*SOPBOT, "demo"], input=typed, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"\| `vault-status` +\| 5\.1\b.* +\| P1 +\|", out)  # /sop list, ephemeral, aligned
    # The default demo platform has two sealed replicas; after /scenario all three are.
    # Shown as a terminal shows it: emoji, not shortcodes; no Markdown markup.
    assert out.count("@sop-bot: 🔴 @alice ran `/sop vault-status`") == 2
    # Columns are padded to the widest cell (targets such as clusterissuer/vault-issuer).
    assert re.search(r"\| 🔴 \| vault-1 +\| sealed, unseal progress 0/3", out)
    assert re.search(r"\| 🔴 \| vault-0 +\| sealed, unseal progress 0/3", out)
    for markup in (":red_circle:", "**", "\\(", "|:-:|", "####"):
        assert markup not in out
    assert "Vault Sealed After Restart" in out  # /sop help 5.1 quotes the runbook


def test_diagnose_prints_the_report_and_exits_by_status(tmp_path: Path):
    """Against a sandbox started as a person would (``sopbot sandbox``), using its config."""
    work = tmp_path / "sb"
    proc = subprocess.Popen([*SOPBOT, "sandbox", "--scenario", "vault-partially-sealed",
                             "--workdir", str(work)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        import time
        deadline = time.monotonic() + 60
        while not (work / "env").exists():  # written last: the sandbox is ready
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "sandbox did not get ready"
            time.sleep(0.1)
        env_lines = (work / "env").read_text().splitlines()
        assert {line.split("=")[0].removeprefix("export ") for line in env_lines} >= {
            "KUBECONFIG", "VAULT_ADDRS", "MATTERMOST_URL", "MM_TEAM_ID", "MM_CHANNEL_ID",
            "MM_TOKEN_BOT", "MM_TOKEN_ALICE", "MM_TOKEN_BOB", "SLASH_TOKEN", "BOT_URL",
            "ALERTMANAGER_TOKEN"}
        cfg = work / "sopbot.yaml"
        assert yaml.safe_load(cfg.read_text())["remediation"] == {"enabled": True, "approvers": ["alice"]}
        done = subprocess.run([*SOPBOT, "diagnose", "vault-status", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr  # crit
        assert "vault-status — Vault seal and Raft leader status: CRIT" in done.stdout
        assert "[ CRIT  ] vault-1" in done.stdout
        done = subprocess.run([*SOPBOT, "diagnose", "vault-status", "replica=vault-0", "--config",
                               str(cfg)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout
        kubectl = subprocess.run([kubectl_binary(), "--kubeconfig", str(work / "kubeconfig"), "get", "nodes"],
                                 capture_output=True, text=True, timeout=60)
        assert kubectl.returncode == 0 and "Ready" in kubectl.stdout
    finally:
        proc.terminate()  # SIGTERM: stops cleanly
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "sandbox stopped" in out


def test_demo_walks_through_an_approval():
    typed = ("/sop fix restart kind=deployment namespace=kube-system name=rke2-coredns-rke2-coredns\n"
             "/as bob\n/approve\n/as alice\n/approve\n")
    done = subprocess.run([*SOPBOT, "demo", "--scenario", "coredns-down"], input=typed,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Dry run (Kubernetes server-side `dryRun=All`)" in out
    assert "@bob is not an approver for restart" in out
    assert "Proposal #1 `restart` succeeded" in out


async def test_check_config_masks_secrets_and_says_what_answers(sandbox, tmp_path: Path):
    """Run as a person would, against a sandbox whose replica vault-2 is down."""
    import asyncio

    await sandbox.apply("vault-replica-down")
    cfg = sandbox.workdir / "sopbot.yaml"
    # An Alertmanager that is not there: optional sources are checked when configured.
    data = yaml.safe_load(cfg.read_text())
    data["alertmanager"]["url"] = "http://127.0.0.1:9"
    cfg.write_text(yaml.safe_dump(data))
    proc = await asyncio.create_subprocess_exec(
        *SOPBOT, "check-config", "--config", str(cfg),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)  # the sandbox answers meanwhile
    text = out.decode()
    assert proc.returncode == 1, err.decode()
    assert "mattermost   ok" in text and "kubernetes   ok" in text
    assert "vault        FAILED: vault-2: unreachable" in text
    assert "alertmanager FAILED:" in text and "\nprometheus " not in text  # not configured
    for secret in (sandbox.mattermost.tokens["sop-bot"], sandbox.mattermost.slash_token,
                   sandbox.platform.vault.root_token, sandbox.alertmanager_token):
        assert secret not in text
    assert '"token": "**********"' in text
