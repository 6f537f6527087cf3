"""``sopbot demo --prometheus``: the SOPs that read Prometheus show a scenario's cause in the demo
too (a real Prometheus scrapes the sandbox's exporter metrics); without it they say why not."""

from __future__ import annotations

import subprocess
import sys

SOPBOT = [sys.executable, "-m", "bot.cli"]


def demo(*args: str, typed: str) -> str:
    done = subprocess.run([*SOPBOT, "demo", *args], input=typed, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_with_prometheus_shows_a_growing_replica_lag():
    out = demo("--prometheus", "--scenario", "cnpg-replica-lag-growing", typed="/sop cnpg-replica-lag\n")
    assert "ran `/sop cnpg-replica-lag` — CNPG replica lag per replica (Prometheus), resources and PVC fill " \
           "(runbook 6.2, P3): CRIT" in out
    assert "| 🔴 | pod/database/keycloak-pg-3 | replication lag " in out and "replica lag growing over 10m" in out


def test_demo_without_prometheus_says_the_signal_needs_it():
    out = demo("--scenario", "cnpg-replica-lag-growing", typed="/sop cnpg-replica-lag\n")
    assert "set prometheus.url: this signal is an exporter metric in Prometheus" in out
