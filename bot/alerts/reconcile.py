"""Close threads whose alerts Alertmanager no longer shows as active: a silenced or expired
alert sends no "resolved" notification, so without this its thread would stay open forever."""

from __future__ import annotations

import logging

from bot.alerts.models import GroupState
from bot.alerts.render import closed_message
from bot.alerts.repo import GroupRepo
from bot.alerts.threads import Clock, ThreadManager, utcnow
from bot.clients.alertmanager import AlertmanagerClient
from bot.clients.errors import SourceError
from bot.ports import Chat

log = logging.getLogger(__name__)


class Reconciler:
    def __init__(self, *, repo: GroupRepo, threads: ThreadManager, chat: Chat,
                 client: AlertmanagerClient, clock: Clock = utcnow):
        self.repo = repo
        self.threads = threads
        self.chat = chat
        self.client = client
        self.clock = clock

    async def run_once(self) -> int:
        """One pass; returns how many threads it closed. Alertmanager unreachable: no change."""
        try:
            # Active, not silenced, not inhibited: what still pages someone.
            alerts = await self.client.alerts(active=True, silenced=False, inhibited=False,
                                              unprocessed=True)
        except SourceError as exc:
            log.warning("reconcile skipped: %s", exc.reason)
            return 0
        active = {a.fingerprint for a in alerts}
        closed = 0
        for seen in await self.repo.open_groups():
            async with self.threads.exclusive(seen.group_key) as mine:
                if not mine:  # being applied elsewhere: the next pass
                    continue
                group = await self.repo.get(seen.id)
                if group is None or group.state is not GroupState.open:
                    continue
                gone = [a for a in group.firing if a.fingerprint not in active]
                if not gone:
                    continue
                for a in gone:
                    a.gone = True
                if not group.firing:
                    group.state = GroupState.closed
                    group.resolved_at = self.clock()
                    closed += 1
                    if group.root_id and group.storm_id is None:
                        await self.chat.post(group.channel_id,
                                             closed_message(sorted({a.alertname for a in gone})),
                                             root_id=group.root_id)
                await self.threads.refresh(group)
        return closed
