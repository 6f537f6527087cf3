"""Proposal posts: what will change, the preview, who may approve, the status line."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.approvals.actions import ACTIONS, Action, Plan
from bot.approvals.models import Proposal, State
from bot.safe_text import block, code, mention, text

APPROVE = "white_check_mark"
REJECT = "x"

_STATE_ICON = {
    State.proposed: ":hourglass_flowing_sand:", State.approved: ":arrow_forward:",
    State.running: ":gear:", State.succeeded: ":white_check_mark:", State.failed: ":red_circle:",
    State.rejected: ":no_entry_sign:", State.expired: ":alarm_clock:", State.stale: ":warning:",
    State.interrupted: ":warning:", State.withdrawn: ":leftwards_arrow_with_hook:",
}


def hhmm(dt: datetime | None) -> str:
    return dt.strftime("%H:%M:%S UTC") if dt else "?"


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items() if v is not None)


def call_text(action: str, params: dict[str, Any]) -> str:
    """``scale namespace=… replicas=3``: how the action is written in ``/sop fix`` (parameters
    in the order the action declares them; the store keeps them sorted)."""
    known = ACTIONS.get(action)
    if known is not None:
        params = {k: params[k] for k in known.params.model_fields if k in params}
    return f"{action} {params_text(params)}".strip()


def _body(action: Action[Any], params: dict[str, Any], plan: Plan) -> list[str]:
    lines = ["**What will change**"]
    lines += [f"- {code(op)}" for op in plan.operations] or ["- nothing"]
    if plan.preview:
        head = ("**Dry run** (Kubernetes server-side `dryRun=All`)" if plan.dry_run
                else "**Plan** (computed from the current state)")
        lines += [head, plan.preview]
    lines += [f":warning: {text(w)}" for w in plan.warnings]
    return lines


def _runbook(plan: Plan) -> list[str]:
    if not plan.runbook:
        return []
    return ["**By hand (runbook)**", block("\n".join(plan.runbook))]


def proposal_text(p: Proposal, action: Action[Any], trigger: str = "sop") -> str:
    section = f" (runbook {action.section})" if action.section else ""
    lines = [f"{_STATE_ICON[p.state]} **Proposal #{p.id}: {code(call_text(p.action, p.params))}** — "
             f"{text(action.title)}{section} · risk **{p.risk.value}**",
             f"Requested by {mention(p.requester)}"
             + (f" (from {code(p.source[4:])})" if p.source.startswith("sop:") else "")]
    lines += _body(action, p.params, p.plan)
    rule = p.rule
    four = f" {mention(p.requester)} requested it and cannot approve it (four-eyes)." if rule.four_eyes else ""
    lines.append(f"**Approval**: react :{APPROVE}: to approve, :{REJECT}: to reject. "
                 f"Approvers: {rule.described}. Needs {rule.quorum} distinct approval"
                 f"{'s' if rule.quorum != 1 else ''}.{four} Expires {hhmm(p.expires_at)}.")
    lines.append(f"**Status**: {status_line(p)}")
    lines += _runbook(p.plan)
    return "\n".join(lines)


def status_line(p: Proposal) -> str:
    who = ", ".join(mention(u) for u in p.approvers) or "nobody yet"
    outcome = f": {text(p.outcome.summary)}" if p.outcome else ""
    if p.state is State.proposed:
        return f"waiting for approval ({len(p.approvers)}/{p.rule.quorum}: {who})"
    if p.state is State.approved:
        return f"approved by {who} at {hhmm(p.decided_at)}; re-checking the target"
    if p.state is State.running:
        extra = "; waiting for key holders (`/sop share " + str(p.id) + "`)" if p.awaiting_secret else ""
        return f"running, approved by {who} at {hhmm(p.decided_at)}{extra}"
    if p.state is State.rejected:
        return f"rejected by {mention(p.rejected_by)} at {hhmm(p.decided_at)}"
    if p.state is State.withdrawn:
        return f"withdrawn: {text(p.outcome.summary) if p.outcome else 'the alert resolved'}"
    if p.state is State.expired:
        return f"expired at {hhmm(p.expires_at)} without {p.rule.quorum} approval(s) ({who})"
    return (f"**{p.state.value}**{outcome} — approved by {who} at {hhmm(p.decided_at)}, "
            f"finished {hhmm(p.finished_at)}")


def readonly_text(action: Action[Any], params: dict[str, Any], plan: Plan, requester: str) -> str:
    section = f" (runbook {action.section})" if action.section else ""
    lines = [f":lock: **Remediation is disabled (read-only)**: {code(call_text(action.name, params))} — "
             f"{text(action.title)}{section}, requested by {mention(requester)}. This is what the bot would do; "
             "it changes nothing. Run the runbook commands by hand, or ask an admin to set "
             "`remediation.enabled: true`."]
    lines += _body(action, params, plan)
    lines += _runbook(plan)
    return "\n".join(lines)
