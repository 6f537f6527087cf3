"""Scenarios by runbook chapter, one module each, so chapters grow without touching each other.
Each module exports ``SCENARIOS: tuple[Scenario, ...]``; names are unique across all of them
(``sandbox.scenarios`` fails at import on a duplicate)."""

from __future__ import annotations

from sandbox.scenario_model import Scenario
from sandbox.scenario_sets import cluster, database, management, networking, tls, vault

CHAPTER_SCENARIOS: tuple[Scenario, ...] = (
    *cluster.SCENARIOS, *management.SCENARIOS, *networking.SCENARIOS, *tls.SCENARIOS,
    *vault.SCENARIOS, *database.SCENARIOS,
)
