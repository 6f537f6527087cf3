"""Scenarios for runbook chapter 4: certificates, issuers, CAs, TLS handshakes."""

from __future__ import annotations

from sandbox.scenario_model import Scenario

SCENARIOS: tuple[Scenario, ...] = ()
