"""Approval rules from ``remediation`` config: per action, else per risk, else the global list."""

from __future__ import annotations

from bot.approvals.actions import Risk
from bot.approvals.models import Rule
from bot.config import ApprovalRuleConfig, RemediationConfig


def rule_for(config: RemediationConfig, action: str, risk: Risk) -> Rule:
    chosen: ApprovalRuleConfig | None = config.by_action.get(action) or config.by_risk.get(risk.value)
    if chosen is None:
        users, groups, quorum = config.approvers, config.approver_groups, None
    else:
        users, groups, quorum = chosen.approvers, chosen.groups, chosen.quorum
    names: dict[str, None] = {u.lstrip("@"): None for u in users}
    parts = [f"@{u}" for u in names]
    for group in groups:
        members = [m.lstrip("@") for m in config.groups.get(group, [])]
        names.update({m: None for m in members})
        parts.append(f"group {group} ({', '.join('@' + m for m in members) or 'no members'})")
    if quorum is None:
        quorum = config.quorum_high if risk is Risk.high else config.quorum_low
    return Rule(usernames=list(names), described=", ".join(parts) or "nobody (no approvers configured)",
                quorum=quorum, four_eyes=config.four_eyes)


def secret_holders(config: RemediationConfig, rule: Rule) -> list[str]:
    """Who may hand a secret share (unseal keys): ``key_holders``, else the proposal's approvers."""
    return [u.lstrip("@") for u in config.key_holders] or list(rule.usernames)
