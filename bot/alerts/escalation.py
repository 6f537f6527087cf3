"""Acknowledge (a reaction on the thread's root) and escalate (no ack within the severity's
response time: one reply mentioning the contacts)."""

from __future__ import annotations

import logging
from datetime import datetime, time, timedelta, timezone

from bot.alerts.models import AlertGroup, GroupState
from bot.alerts.repo import GroupRepo
from bot.alerts.threads import Clock, ThreadManager, utcnow
from bot.chat.models import ReactionEvent
from bot.config import EscalationConfig
from bot.models import Severity
from bot.ports import Chat

log = logging.getLogger(__name__)


def next_business_day(after: datetime, hour: int) -> datetime:
    day = after.astimezone(timezone.utc).date() + timedelta(days=1)
    while day.weekday() >= 5:  # Saturday, Sunday
        day += timedelta(days=1)
    return datetime.combine(day, time(hour), tzinfo=timezone.utc)


class Escalator:
    def __init__(self, *, repo: GroupRepo, threads: ThreadManager, chat: Chat,
                 config: EscalationConfig, clock: Clock = utcnow):
        self.repo = repo
        self.threads = threads
        self.chat = chat
        self.config = config
        self.clock = clock

    def deadline(self, group: AlertGroup) -> datetime:
        return self._deadline(group.severity, group.opened_at)

    def _deadline(self, severity: Severity, opened_at: datetime) -> datetime:
        seconds = self.config.response_s.get(severity)
        if seconds is None:
            return next_business_day(opened_at, self.config.business_day_start_hour)
        return opened_at + timedelta(seconds=seconds)

    def contacts(self, group: AlertGroup) -> list[str]:
        return self.config.contacts_by_severity.get(group.severity) or self.config.contacts

    # -- acknowledge ---------------------------------------------------------------------------
    async def on_reaction(self, event: ReactionEvent) -> None:
        if not event.added or event.emoji_name != self.config.ack_emoji.strip(":"):
            return
        groups = await self.repo.by_root_all(event.post_id)
        who = event.username or event.user_id
        for seen in groups:
            async with self.threads.exclusive(seen.group_key) as mine:
                if not mine:  # the replica applying it got the same reaction: it acks
                    continue
                group = await self.repo.get(seen.id)
                if group is None or group.state is not GroupState.open or group.acked_by:
                    continue
                group.acked_by = who
                group.acked_at = self.clock()
                await self.threads.refresh(group)
                log.info("alert group %s acked by %s", group.group_key, who)

    # -- escalate ------------------------------------------------------------------------------
    async def run_once(self) -> int:
        """Escalate every open, unacked, not yet escalated group past its deadline; a storm
        thread is escalated once for all its groups."""
        now = self.clock()
        escalated = 0
        done_threads: set[str] = set()
        for seen in await self.repo.open_summaries():
            if seen.acked_by or seen.escalated or now < self._deadline(seen.severity, seen.opened_at):
                continue
            async with self.threads.exclusive(seen.group_key) as mine:
                if not mine:  # being applied elsewhere: the next pass
                    continue
                group = await self.repo.get(seen.id)
                if (group is None or group.state is not GroupState.open or group.acked_by
                        or group.escalated_at or group.root_id is None):
                    continue
                group.escalated_at = now
                if group.root_id not in done_threads:
                    done_threads.add(group.root_id)
                    who = " ".join(f"@{c}" for c in self.contacts(group)) or "(no escalation contact configured)"
                    sev = group.severity
                    await self.chat.post(
                        group.channel_id,
                        f":rotating_light: **Escalation** {who}: {sev.value} alert not acknowledged "
                        f"within {self._window(group)}. React with :{self.config.ack_emoji.strip(':')}: "
                        "on the first post to acknowledge.",
                        root_id=group.root_id)
                    escalated += 1
                await self.threads.refresh(group)
        return escalated

    def _window(self, group: AlertGroup) -> str:
        seconds = self.config.response_s.get(group.severity)
        if seconds is None:
            return "the start of the next business day"
        from bot.alerts.render import duration
        return duration(timedelta(seconds=seconds))
