"""The handler SDK: everything a SOP or a remediation action needs, in one public module.

Handler packages (the built-in ``handlers`` and any team's own) import from here and from
nowhere else in ``bot`` (an import-linter contract in pyproject.toml holds them to it), so the
engine's modules can change without breaking them. A package registers itself through the
``sopbot.handlers`` entry-point group; importing it runs its ``@sop`` and ``@remediation_action``
decorators::

    # pyproject.toml of a team's package
    [project.entry-points."sopbot.handlers"]
    team-sops = "team_sops"

    # team_sops/__init__.py
    from bot.sdk import Finding, HandlerContext, K8sNamespace, SOPParams, Severity, Status, sop

    class Params(SOPParams):
        namespace: K8sNamespace = "team"

    @sop("team-api", title="Team API pods", sections=("7.9",), severity=Severity.P3,
         causes=("image missing from Harbor",), alerts=("TeamApiDown",))
    async def team_api(ctx: HandlerContext, params: Params) -> list[Finding]:
        kube = ctx.require_kube()
        ...
"""

from __future__ import annotations

# Declaring SOPs and their arguments.
from bot.registry import (DNS1123_LABEL, DNS1123_SUBDOMAIN, HOST_PORT, HostPort, K8sName,
                          K8sNamespace, NoParams, SOPParams, sop)
# What a SOP returns.
from bot.models import Finding, Severity, Status, SuggestedAction
# What a SOP works with: the platform's clients and their errors.
from bot.context import HandlerContext
from bot.clients.errors import SourceError
from bot.clients.kube import KubeClient, resource_path
from bot.clients.prometheus import PrometheusClient, Sample, promql_string
from bot.clients.alertmanager import SilenceMatcher
# What an SRE reads beyond objects (HandlerContext.logs/log_hits/events/node_usage/pod_usage).
from bot.clients.events import Event
from bot.clients.logscan import LogHit, LogPattern, redact
from bot.clients.resource_metrics import Usage, quantity
# HTTP/TLS probes of the platform's endpoints (HandlerContext.tls_probe/http_probe).
from bot.clients.probe import TRAEFIK_DEFAULT_CN, HttpResult, ServedCert, TlsResult, describe as describe_cert
# Object conditions, timestamps, per-SOP check settings, health-check areas.
from bot.health import HealthCheck, check_settings, compose, condition, find_condition, parse_time
# Cluster data quoted in chat stays inert (no mentions, links or markup injected by object names).
from bot.safe_text import cell, code, text
# Flowchart decisions answered from evidence (/sop triage walks the runbook's flowcharts).
from bot.triage import Answer, decision
# Remediation actions (proposed from findings, approved by reaction).
from bot.approvals.actions import (Action, ActionEnv, ActionParams, Outcome, Plan, Risk,
                                   SecretProgress, SecretPrompt, fingerprint, remediation_action)
# Procedures: ordered checks and actions, one approval (again at gated steps), a live step log.
from bot.approvals.procedures import Gate, Procedure, Step, StepRun, procedure

__all__ = [
    # declaring
    "sop", "SOPParams", "NoParams", "K8sName", "K8sNamespace", "HostPort",
    "DNS1123_LABEL", "DNS1123_SUBDOMAIN", "HOST_PORT",
    # results
    "Finding", "Status", "Severity", "SuggestedAction",
    # sources
    "HandlerContext", "SourceError", "KubeClient", "resource_path", "PrometheusClient", "Sample",
    "promql_string", "SilenceMatcher", "Event", "LogPattern", "LogHit", "redact", "Usage", "quantity",
    "TlsResult", "HttpResult", "ServedCert", "TRAEFIK_DEFAULT_CN", "describe_cert",
    # helpers
    "condition", "find_condition", "parse_time", "check_settings", "HealthCheck", "compose",
    "cell", "code", "text",
    # flowchart decisions
    "decision", "Answer",
    # actions
    "Action", "ActionEnv", "ActionParams", "Outcome", "Plan", "Risk", "SecretPrompt",
    "SecretProgress", "fingerprint", "remediation_action",
    # procedures
    "Procedure", "Step", "StepRun", "Gate", "procedure",
]
