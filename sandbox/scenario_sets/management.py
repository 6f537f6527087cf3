"""Scenarios for runbook the management cluster: Harvester VMs, Rancher machines, Longhorn volumes (2.1, 2.2, 2.4, 2.7, 2.8, 10.2)."""

from __future__ import annotations

from sandbox.scenario_model import Scenario

SCENARIOS: tuple[Scenario, ...] = ()
