"""Scenarios for runbook chapter 5 and 10.4: Vault seal, unseal, Raft, PKI, Kubernetes auth, DR."""

from __future__ import annotations

from sandbox.scenario_model import Scenario

SCENARIOS: tuple[Scenario, ...] = ()
