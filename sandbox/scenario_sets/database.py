"""Scenarios for runbook chapter 6, 10.5, 11.4/11.5: CNPG, Galera, Redis Sentinel, pools, backups, PITR."""

from __future__ import annotations

from sandbox.scenario_model import Scenario

SCENARIOS: tuple[Scenario, ...] = ()
