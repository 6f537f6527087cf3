"""What a sandbox scenario is, and the helpers every chapter's scenarios share.

The scenarios themselves live in ``sandbox.scenarios`` (the first ones) and in one module per
runbook chapter under ``sandbox.scenario_sets``; ``sandbox.scenarios.SCENARIOS`` gathers them all."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sandbox.kube.store import Obj
from sandbox.platform import CORE, Platform


@dataclass(frozen=True)
class Scenario:
    """What a scenario breaks, and what a correct diagnosis says about it: the SOPs covering the
    runbook ``section`` report ``status`` (worst finding) and name ``cause`` (a phrase of the root
    cause as the bot words it, with its evidence) — tests/test_scenario_diagnoses.py holds them to it."""

    name: str
    description: str
    apply: Callable[[Platform], None]
    section: str = ""
    status: str = "ok"  # ok | warn | crit (bot.models.Status values; the sandbox imports no bot code)
    cause: str = ""


VAULT_URL = "http://vault.vault.svc.cluster.local:8200"


def _vault_api_error(path: str, method: str, code: int, error: str) -> str:
    """How the Vault Go client words a failed call, as cert-manager quotes it."""
    return (f"Error making API request.\n\nURL: {method} {VAULT_URL}/v1/{path}\n"
            f"Code: {code}. Errors:\n\n* {error}")


def _first_pod(p: Platform, namespace: str, labels: dict[str, str]) -> Obj:
    pods = p.pods(namespace, labels)
    if not pods:
        raise LookupError(f"no pod in {namespace} with {labels}")
    return pods[0]


def _worker(p: Platform, pool: str) -> str:
    return p.workers(pool)[0]["metadata"]["name"]


def _scheduling_message(p: Platform, reason: str) -> str:
    """The scheduler's FailedScheduling wording, counted over the real nodes."""
    nodes = p.kube.list(CORE, "Node")
    cps = sum("node-role.kubernetes.io/control-plane" in n["metadata"]["labels"] for n in nodes)
    rest = len(nodes) - cps
    return (f"0/{len(nodes)} nodes are available: {rest} {reason}, {cps} node(s) had untolerated taint "
            f"{{node-role.kubernetes.io/control-plane: }}. preemption: 0/{len(nodes)} nodes are available: "
            f"{rest} No preemption victims found for incoming pod, {cps} Preemption is not helpful for scheduling.")
