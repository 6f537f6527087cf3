"""Scenarios for runbook chapter 3: Cilium, L2 announcements, LoadBalancer IPs, Traefik, Gateway API, DNS, VXLAN."""

from __future__ import annotations

from sandbox.scenario_model import Scenario

SCENARIOS: tuple[Scenario, ...] = ()
