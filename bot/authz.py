"""Who may run which ``/sop`` command in which channel, and who may read the audit log
(``authorization`` config). Approving remediation stays with ``remediation`` (rules.py).

Default: everyone in the team may run every SOP (all are read-only) and subcommand in the bot's
channels; only approvers read the audit log. A refusal is one ephemeral line saying who may."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.commands import Invocation
from bot.config import AuthorizationRuleConfig, Settings
from bot.safe_text import code, mention

log = logging.getLogger(__name__)

ChannelId = Callable[[str], Awaitable[str]]  # channel name → id (bot.chat.mattermost.channel_id)
AUDIT = "audit"


def bot_channels(s: Settings) -> list[str]:
    """Every channel the bot posts in by config: its own, alerts', routes', health's."""
    names = [s.mattermost.channel, s.alertmanager.channel, s.health.channel]
    names += [r.channel for r in s.alertmanager.routes]
    names += [sch.channel for sch in s.health.schedules]
    return list(dict.fromkeys(n.lstrip("~") for n in names if n))


class Authorizer:
    def __init__(self, settings: Settings, channel_id: ChannelId, known: Callable[[str], bool]):
        self.config = settings.authorization
        self.trigger = settings.slash.trigger
        self.groups = settings.remediation.groups
        self.default_channels = bot_channels(settings)
        self._channel_id = channel_id
        self._known = known  # is this head an SOP id or a subcommand?
        self._ids: dict[str, str] = {}
        self.audit_readers = self._audit_readers(settings)

    def _audit_readers(self, s: Settings) -> set[str]:
        users = set(self.config.audit_readers)
        for g in self.config.audit_reader_groups:
            users.update(self.groups.get(g, []))
        if not self.config.audit_readers and not self.config.audit_reader_groups:
            r = s.remediation  # default: whoever approves anything
            users.update(r.approvers)
            for g in [*r.approver_groups, *(g for rule in [*r.by_risk.values(), *r.by_action.values()]
                                             for g in rule.groups)]:
                users.update(self.groups.get(g, []))
            for rule in [*r.by_risk.values(), *r.by_action.values()]:
                users.update(rule.approvers)
        return {u.lstrip("@") for u in users}

    async def _ids_of(self, names: list[str]) -> set[str]:
        out = set()
        for name in names:
            if name not in self._ids:
                try:
                    self._ids[name] = await self._channel_id(name)
                except Exception as exc:  # a missing channel allows nothing; say so in the log
                    log.warning("authorization: channel ~%s not found (%s)", name, exc.__class__.__name__)
                    continue
            out.add(self._ids[name])
        return out

    def _user_ok(self, rule: AuthorizationRuleConfig, username: str) -> bool:
        if not rule.users and not rule.groups:
            return True
        members = {u.lstrip("@") for u in rule.users}
        for g in rule.groups:
            members.update(m.lstrip("@") for m in self.groups.get(g, []))
        return username in members

    async def _channel_ok(self, rule: AuthorizationRuleConfig, channel_id: str) -> bool:
        if "*" in rule.channels:
            return True
        return channel_id in await self._ids_of(rule.channels or self.default_channels)

    def _who(self, rules: list[AuthorizationRuleConfig]) -> str:
        parts = []
        for rule in rules:
            people = [mention(u) for u in rule.users] + [f"group {code(g)}" for g in rule.groups]
            where = ("any channel" if "*" in rule.channels else
                     ", ".join(f"~{c}" for c in (rule.channels or self.default_channels)))
            parts.append(f"{', '.join(people) or 'everyone'} in {where}")
        return "; ".join(parts) or "nobody (no authorization rule covers it)"

    async def check(self, inv: Invocation, head: str) -> str | None:
        """None when ``inv`` may run ``head``; else the ephemeral refusal saying who may."""
        if not self._known(head):
            return None  # unknown commands get their own answer (did you mean …)
        user = inv.user_name.lstrip("@")
        if head == AUDIT and user not in self.audit_readers:
            who = ", ".join(mention(u) for u in sorted(self.audit_readers)) or "nobody (no approvers configured)"
            return f":no_entry: The remediation audit log is for {who}; ask one of them."
        covering = [r for r in self.config.rules if "*" in r.commands or head in r.commands]
        for rule in covering:
            if self._user_ok(rule, user) and await self._channel_ok(rule, inv.channel_id):
                return None
        log.info("authorization: %s refused for @%s", head, user)
        return f":no_entry: {code(f'/{self.trigger} {head}')} here is for {self._who(covering)}."
