"""What a newcomer sees in ``sopbot demo``: a healthy platform reported all green (the sandbox
gives the bot an Alertmanager), and the chat's own commands."""

from __future__ import annotations

import subprocess
import sys

SOPBOT = [sys.executable, "-m", "bot.cli"]


def demo(typed: str, *scenarios: str) -> str:
    args = [a for s in scenarios for a in ("--scenario", s)]
    done = subprocess.run([*SOPBOT, "demo", *args], input=typed, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_healthy_demo_reports_all_green():
    out = demo("/sop health\n", "healthy")
    assert "Health check `daily`: all good" in out or "Health check `daily`: **all good**" in out, out
    assert "unknown" not in out.lower()
    assert "no Alertmanager configured" not in out


def test_a_broken_platform_fires_alerts_the_bot_reads():
    out = demo("/sop firing-alerts\n", "coredns-down")
    assert "KubePodCrashLooping×2" in out, out


def readme_walkthrough() -> tuple[str, str]:
    """The README's demo command for the walk-through and the lines it says to type."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    command = re.search(r"run `\.venv/bin/sopbot demo (--scenario \w+)` and type", readme)
    block = re.search(r"```text\n(.*?)```", readme, re.S)
    assert command and block
    return command.group(1).split()[1], block.group(1)


def test_the_readme_walkthrough_breaks_diagnoses_fixes_and_ends_healthy():
    scenario, typed = readme_walkthrough()
    out = demo(typed, scenario)
    first, rest = out.split("/scenario cordoned-node", 1)
    assert "Health check `daily`: all good" in first
    assert "diagnose it with /sop node-health" in rest
    assert "| ⚠️ | node/rke2-database-1 cordoned | SchedulingDisabled (cordoned) |" in rest
    assert "@bob is not an approver for uncordon" in rest
    assert "Proposal #1 `uncordon` succeeded" in rest
    assert rest.rstrip().count("Health check `daily`: all good") == 1
    assert rest.index("`uncordon` succeeded") < rest.index("Health check `daily`: all good")


def test_chat_commands_of_the_demo_itself():
    out = demo("hello team\n/as\n/scenario\n/approve 7\n/scenario pvc-pending\n/frobnicate\n", "healthy")
    assert "@alice: hello team" in out  # posted to the channel, not run as a command
    assert "(demo: you are @alice; /as alice (an approver) or /as bob (not))" in out
    assert "    cert-expiring " in out and "(sandbox: applied )" not in out  # the list
    assert "(demo: no proposal #7; proposals: none yet)" in out
    assert "diagnose it with /sop pvc-health" in out
    assert "not found" not in out.split("/frobnicate", 1)[0]  # only the unknown command is refused
