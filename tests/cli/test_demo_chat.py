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
