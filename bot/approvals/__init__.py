"""Remediation with reaction-based approval: actions (interface + registry), proposals, rules,
the persisted state machine, audit, and the service wiring them to chat. Concrete actions with
runbook knowledge are in ``handlers/actions``."""

from bot.approvals.actions import (ACTIONS, Action, ActionEnv, ActionParams, Outcome, Plan, Risk,
                                   SecretProgress, SecretPrompt, fingerprint, remediation_action)
from bot.approvals.models import Proposal, State

__all__ = ["ACTIONS", "Action", "ActionEnv", "ActionParams", "Outcome", "Plan", "Proposal", "Risk",
           "SecretProgress", "SecretPrompt", "State", "fingerprint", "remediation_action"]
