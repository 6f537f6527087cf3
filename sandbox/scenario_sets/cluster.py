"""Scenarios for runbook chapters 1-2: triage quick checks, nodes, etcd, API server, autoscaler, labels."""

from __future__ import annotations

from sandbox.scenario_model import Scenario

SCENARIOS: tuple[Scenario, ...] = ()
