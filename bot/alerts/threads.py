"""From a webhook payload to the group's thread: open, update in place, diagnose, resolve,
reopen. One thread per groupKey; a repeat notification adds nothing unless the diagnosis
changed. All of a group's work runs under that group's lock, in arrival order."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any, Protocol

from bot.alerts.damping import Flaps, ReplyBudget
from bot.alerts.models import AlertGroup, AlertState, AlertStatus, GroupState, WebhookPayload
from bot.safe_text import code
from bot.alerts.render import (_cell, cannot_run_message, changed_message, diagnosis_message,
                               reopened_message, resolved_message, root_message, unmapped_message)
from bot.alerts.related import Dependencies, Link, related_lines
from bot.alerts.inbox import GroupClaims
from bot.alerts.repo import GroupRepo, Intent, PriorDiagnosis
from bot.alerts.router import Decision, Diagnosis, Router, diagnosis_for
from bot.alerts.storm_diag import StormDiagnoses
from bot.flowchart import flowcharts
from bot.models import Finding, Report, Status
from bot.ports import Chat
from bot.registry import SOP, SOPParams
from bot.runbook import Runbook

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
RunSOP = Callable[[SOP, SOPParams], Awaitable[Report]]
ChannelId = Callable[[str], Awaitable[str]]
# A triage of an unmapped alert from its labels and annotations (bot.triage.triage_markdown).
TriageAlert = Callable[[dict[str, str], dict[str, str]], Awaitable[str]]
# ``Bot.on_report`` hooks: (report, channel_id, thread root id, requester)
ReportHook = Callable[[Report, str, str, str], Awaitable[None]]
REQUESTER = "alertmanager"  # who "asked" for an alert diagnosis's proposals
# Bot and Mattermost clocks differ: look this much further back for a post made before a crash.
CLOCK_SLACK_S = 300.0
# Replicas: how long one waits for the post another is making under the same key.
POSTING_WAIT_S = 10.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class StormPlacer(Protocol):
    async def place(self, group: AlertGroup, now: datetime) -> bool: ...
    async def changed(self, group: AlertGroup) -> None: ...
    def diagnose_later(self, group: AlertGroup, work: Callable[[], Awaitable[None]]) -> None: ...


def findings_digest(findings: list[Finding]) -> str:
    # Timing and ordering do not make a diagnosis different; status, target and text do.
    rows = sorted((f.status.value, f.target, f.summary) for f in findings)
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


class ThreadManager:
    def __init__(self, *, repo: GroupRepo, chat: Chat, router: Router, run: RunSOP,
                 channel_id: ChannelId, runbook: Runbook | None = None,
                 reopen_window_s: float = 3600.0, rediagnose_after_s: float = 60.0,
                 permalink: Callable[[str], str] | None = None, clock: Clock = utcnow,
                 storm: StormPlacer | None = None,
                 on_report: Callable[[], Iterable[ReportHook]] = lambda: (),
                 diagnose_concurrency: int = 8, replies_per_group: int = 10,
                 reply_window_s: float = 600.0, flap_window_s: float = 600.0,
                 triage: TriageAlert | None = None):
        self.repo = repo
        self.chat = chat
        self.router = router
        self.run = run
        self.channel_id = channel_id
        self.runbook = runbook
        self.reopen_window_s = reopen_window_s
        self.rediagnose_after_s = rediagnose_after_s
        self.permalink = permalink or (lambda post_id: post_id)
        self.clock = clock
        self.storm = storm
        self.on_report = on_report  # read at each call: features add hooks after start
        self.triage = triage
        self._locks: dict[str, asyncio.Lock] = {}
        # Replicas sharing the store (set by AlertService): who applies a group's changes.
        self.claims: GroupClaims | None = None
        self._diagnose_slots = asyncio.Semaphore(diagnose_concurrency)
        self.budget = ReplyBudget(replies_per_group, reply_window_s)
        self.flaps = Flaps(flap_window_s)
        self._held: dict[int, list[str]] = {}  # group id → diagnoses the reply cap held back
        # Which SOPs' failures explain which: from the SOPs' declarations and the runbook's charts.
        self.deps = Dependencies.build(router.registry, flowcharts(runbook) if runbook else ())
        self._relevant = set(self.deps.causes) | {c for cs in self.deps.causes.values() for c in cs}
        self._tasks: set[asyncio.Task[None]] = set()  # re-checks after a cause resolved

    @asynccontextmanager
    async def exclusive(self, group_key: str) -> AsyncIterator[bool]:
        """The group to itself, for a change outside a notification (reconcile, escalation, an
        ack): this process's lock and, replicas sharing the store, the group's claim, as the
        notification worker takes them. False: another replica applies the group right now;
        leave it for the next pass (a change saved from a stale read would undo its work)."""
        if self.claims is None:
            async with self.lock(group_key):
                yield True
            return
        async with self.claims.holding(group_key) as held:
            if not held:
                yield False
                return
            async with self.lock(group_key):
                yield True

    def lock(self, group_key: str) -> asyncio.Lock:
        lock = self._locks.get(group_key)
        if lock is None:
            if len(self._locks) >= 10_000:  # forget idle groups' locks; months of keys add up
                self._locks = {k: v for k, v in self._locks.items() if v.locked()}
            lock = self._locks[group_key] = asyncio.Lock()
        return lock

    # -- one notification ----------------------------------------------------------------------
    async def process(self, payload: WebhookPayload, entry_id: int = 0, *,
                      diagnosing: Callable[[], None] = lambda: None) -> None:
        """``diagnosing`` is called once the thread exists and only the diagnosis is left (the
        caller frees its slot for the next notification's root post)."""
        async with self.lock(payload.groupKey):
            await self._process(payload, entry_id, diagnosing)

    async def _process(self, payload: WebhookPayload, entry_id: int,
                       diagnosing: Callable[[], None]) -> None:
        now = self.clock()
        group = await self.repo.current(payload.groupKey)
        if group is not None and entry_id and entry_id < await self.repo.last_entry(group.id):
            # Each payload is a full snapshot of the group: a later one was applied already.
            log.info("skipping stale notification %d for %s", entry_id, payload.groupKey)
            return
        any_firing = payload.status is AlertStatus.firing and any(
            a.status is AlertStatus.firing for a in payload.alerts)
        if group is None:
            if not any_firing:
                log.info("resolved notification for unknown group %s: nothing to tell", payload.groupKey)
                return
            group = await self._open(payload, now, previous=None, entry_id=entry_id)
        elif group.state is not GroupState.open:
            if not any_firing:
                self._merge(group, payload)  # a repeat of the resolution: nothing new to say
                await self.repo.save(group, entry_id)
                return
            resolved_at = group.resolved_at or now
            if (now - resolved_at).total_seconds() <= self.reopen_window_s:
                await self._reopen(group, payload, now)
            else:
                group = await self._open(payload, now, previous=group, entry_id=entry_id)
        self._merge(group, payload)
        if payload.status is AlertStatus.resolved or not group.firing:
            group.state = GroupState.resolved
            group.resolved_at = now
        await self._refresh_root(group)
        await self.repo.save(group, entry_id)
        await self._saved(group)
        if group.state is GroupState.open:
            diagnosing()
            async with self._diagnose_slots:
                await self._diagnose_or_defer(group)
        elif group.state is GroupState.resolved:
            if group.storm_id is None and group.root_id:
                await self.chat.post(group.channel_id, resolved_message(group), root_id=group.root_id)
            await self._cause_resolved(group)

    # -- opening -------------------------------------------------------------------------------
    async def _open(self, payload: WebhookPayload, now: datetime, previous: AlertGroup | None,
                    entry_id: int) -> AlertGroup:
        decisions = [self.router.decide(a.labels, a.annotations) for a in payload.alerts
                     if a.status is AlertStatus.firing] or [self.router.decide(payload.commonLabels)]
        severity = min((d.severity for d in decisions), key=lambda s: s.value)
        first = min(decisions, key=lambda d: d.severity.value)
        mentions: list[str] = []
        for d in decisions:
            mentions += [m for m in d.mention if m not in mentions]
        group = AlertGroup(group_key=payload.groupKey, channel_id=await self.channel_id(first.channel),
                           severity=severity, opened_at=now, external_url=payload.externalURL,
                           group_labels=dict(payload.groupLabels),
                           common_annotations=dict(payload.commonAnnotations),
                           truncated=payload.truncatedAlerts, mentions=mentions,
                           previous_id=previous.id if previous else None,
                           previous_link=self.permalink(previous.root_id) if previous and previous.root_id else None)
        self._merge(group, payload)
        if self.storm is not None and await self.storm.place(group, now):
            await self.repo.save(group, entry_id)
            return group
        causes, effects = await self._find_related(group)
        group.root_message = self._render(group, self._related_text(causes, effects))
        # One key per thread of a group key: a replay (crash, retry, HA duplicate) finds it.
        key = f"alert-root:{_digest(payload.groupKey)}:{previous.id if previous else 0}"
        # Urgent: a new thread must not wait behind other groups' diagnosis replies.
        group.root_id = await self._post_once(key, group.channel_id, group.root_message,
                                              props={"sopbot_alert_group": payload.groupKey}, urgent=True)
        # Saved at once: a second notification of the group must find the thread.
        await self.repo.save(group, entry_id)
        for cause in causes:
            await self.repo.relate(cause.id, group.id)
        for effect in effects:
            await self.repo.relate(group.id, effect.id)
        for other in causes + effects:  # their roots list this thread now
            await self._refresh_other(other.id)
        return group

    async def _reopen(self, group: AlertGroup, payload: WebhookPayload, now: datetime) -> None:
        after = now - (group.resolved_at or now)
        group.state = GroupState.open
        group.resolved_at = None
        # A new episode: it needs acknowledging again.
        group.acked_by = group.acked_at = group.escalated_at = None
        group.opened_at = now
        self.flaps.reopened(group.group_key, now.timestamp())
        if group.root_id and group.storm_id is None:
            await self.chat.post(group.channel_id, reopened_message(after), root_id=group.root_id)

    def _merge(self, group: AlertGroup, payload: WebhookPayload) -> None:
        for a in payload.alerts:
            status = a.status if payload.status is AlertStatus.firing else AlertStatus.resolved
            group.alerts[a.fingerprint] = AlertState(
                fingerprint=a.fingerprint, status=status, labels=dict(a.labels),
                annotations=dict(a.annotations), starts_at=a.startsAt,
                ends_at=a.endsAt if a.endsAt.year > 1 else None, generator_url=a.generatorURL)
        if payload.status is AlertStatus.resolved:
            for state in group.alerts.values():
                state.status = AlertStatus.resolved
        group.truncated = payload.truncatedAlerts
        if payload.commonAnnotations:
            group.common_annotations = dict(payload.commonAnnotations)
        if payload.externalURL and not group.external_url:
            # HA peers each send their own URL: keep the first, or the root would flip between them.
            group.external_url = payload.externalURL
        # Severity follows the worst alert seen in this episode.
        for a in group.firing:
            sev = self.router.decide(a.labels, a.annotations).severity
            if sev.value < group.severity.value:
                group.severity = sev

    # -- root ----------------------------------------------------------------------------------
    def _render(self, group: AlertGroup, related: str = "") -> str:
        decisions = [self.router.decide(a.labels, a.annotations) for a in group.alerts.values()]
        sops = _unique(s.id for d in decisions for s in d.sops)
        sections = _unique([s.section for d in decisions for s in d.sops]
                           + [d.suggestions[0].number for d in decisions if not d.sops and d.suggestions])
        message = root_message(group, sections=sections[:3], sop_ids=sops, runbook=self.runbook, now=self.clock())
        return message + related + self._folded(group, decisions)

    def _folded(self, group: AlertGroup, decisions: list[Decision]) -> str:
        """What the reply cap kept out of the thread, so the root still shows it."""
        lines: list[str] = []
        names = sorted({a.alertname for a, d in zip(group.alerts.values(), decisions) if not d.sops})
        if len(names) > self.budget.limit:
            listed = ", ".join(code(n) for n in names[:20])
            lines.append(f":grey_question: **No SOP matches {len(names)} alert names** (a reply for at most "
                         f"{self.budget.limit} per {self.budget.window_s:g} s): {listed}"
                         + (f" and {len(names) - 20} more" if len(names) > 20 else ""))
        held = self._held.get(group.id)
        if held:
            lines.append(f":hourglass: **{len(held)} diagnoses held back** by the reply cap (they run with a "
                         f"later notification): " + ", ".join(code(h) for h in held[:10])
                         + (f" and {len(held) - 10} more" if len(held) > 10 else ""))
        return "".join("\n" + line for line in lines)

    async def _refresh_root(self, group: AlertGroup) -> None:
        if group.storm_id is not None:
            return  # the storm thread lists it: _saved() tells storm control after the save
        message = self._render(group, await self._related_of(group))
        if message != group.root_message and group.root_id:
            await self.chat.edit(group.root_id, message)
        group.root_message = message

    async def refresh(self, group: AlertGroup) -> None:
        """Re-render and save after an outside change (ack, escalation, reconciliation)."""
        await self._refresh_root(group)
        await self.repo.save(group)
        await self._saved(group)
        if group.state is not GroupState.open:
            await self._cause_resolved(group)

    # -- related threads (a cause's thread and the threads it explains) --------------------------
    def _sop_ids(self, group: AlertGroup) -> list[str]:
        return _unique(s.id for a in group.alerts.values()
                       for s in self.router.decide(a.labels, a.annotations).sops)

    async def _find_related(self, group: AlertGroup) -> tuple[list[AlertGroup], list[AlertGroup]]:
        """Open threads whose SOPs explain this group's (its likely causes), and those it explains."""
        mine = self._sop_ids(group)
        if not set(mine) & self._relevant:
            return [], []  # nothing in the graph touches these SOPs: no scan of the open groups
        causes: list[AlertGroup] = []
        effects: list[AlertGroup] = []
        for other in await self.repo.open_groups():
            if other.group_key == group.group_key or not other.root_id or other.storm_id is not None:
                continue
            theirs = self._sop_ids(other)
            if self.deps.explains(theirs, mine):
                causes.append(other)
            elif self.deps.explains(mine, theirs):
                effects.append(other)
        return causes, effects

    def _link(self, group: AlertGroup) -> Link:
        names = tuple(sorted({a.alertname for a in group.alerts.values()}))
        return Link(names, self.permalink(group.root_id) if group.root_id else "",
                    group.state is GroupState.open)

    def _related_text(self, causes: list[AlertGroup], effects: list[AlertGroup]) -> str:
        lines = related_lines([self._link(c) for c in causes], [self._link(e) for e in effects])
        return "".join("\n" + line for line in lines)

    async def _related_of(self, group: AlertGroup) -> str:
        if not group.id or not self._relevant:
            return ""
        return self._related_text(await self.repo.causes_of(group.id), await self.repo.effects_of(group.id))

    async def _refresh_other(self, group_id: int) -> None:
        """Re-render another group's root for its links. Not saved: that group's own saves run
        under its lock, and its next render reads the same links from the relations table."""
        other = await self.repo.get(group_id)
        if other is None or not other.root_id or other.storm_id is not None:
            return
        message = self._render(other, await self._related_of(other))
        if message != other.root_message:
            await self.chat.edit(other.root_id, message)

    async def _cause_resolved(self, cause: AlertGroup) -> None:
        """The threads this one explains re-check their diagnosis, and say what they found."""
        if not cause.id or not self._relevant:
            return
        for effect in await self.repo.effects_of(cause.id):
            await self._refresh_other(effect.id)
            if effect.state is GroupState.open and effect.root_id:
                task = asyncio.create_task(self._recheck(effect.id, effect.group_key, cause))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _recheck(self, effect_id: int, group_key: str, cause: AlertGroup) -> None:
        try:
            async with self.lock(group_key):  # after the cause's lock is released: no lock order
                group = await self.repo.current(group_key)
                if group is None or group.id != effect_id or group.state is not GroupState.open:
                    return
                await self.diagnose(group, force=True)
                statuses = [Status(f["status"]) for sop_id, target in self._jobs(group)
                            if (prior := await self.repo.diagnosis(group.id, sop_id, target)) is not None
                            for f in prior.findings]
                bad = sum(s in (Status.warn, Status.crit) for s in statuses)
                verdict = (f"still {bad} problem{'s' if bad != 1 else ''}: see the diagnosis above" if bad
                           else "its SOPs now find nothing wrong; it should resolve on its own")
                names = ", ".join(code(n) for n in self._link(cause).names)
                where = f"[{names}]({self.permalink(cause.root_id)})" if cause.root_id else names
                assert group.root_id is not None
                await self._post_once(f"alert-cause-resolved:{cause.id}:{group.id}", group.channel_id,
                                      f":link: Its likely cause {where} resolved. Re-checked: {verdict}.",
                                      root_id=group.root_id)
        except Exception:
            log.exception("re-check of group %s after its cause resolved failed", group_key)

    def _jobs(self, group: AlertGroup) -> list[tuple[str, str]]:
        keys: list[tuple[str, str]] = []
        for a in group.firing:
            for sop in self.router.decide(a.labels, a.annotations).sops:
                key = diagnosis_for(sop, a.labels).key
                if key not in keys:
                    keys.append(key)
        return keys

    async def drain(self) -> None:
        """Wait for the re-checks started by resolved causes."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let running re-checks finish within ``timeout_s``, then cancel the rest (a re-check
        is only a courtesy: the next notification diagnoses again)."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for t in late:
                t.cancel()

    async def _saved(self, group: AlertGroup) -> None:
        if group.storm_id is not None and self.storm is not None:
            await self.storm.changed(group)

    # -- diagnoses -----------------------------------------------------------------------------
    async def _diagnose_or_defer(self, group: AlertGroup) -> None:
        if group.storm_id is not None and self.storm is not None:
            key = group.group_key

            async def later() -> None:
                async with self.lock(key):
                    current = await self.repo.current(key)
                    if current is not None and current.id == group.id and current.state is GroupState.open:
                        await self.diagnose(current)
            self.storm.diagnose_later(group, later)
            return
        await self.diagnose(group)

    async def diagnose(self, group: AlertGroup, *, force: bool = False) -> None:
        """Each distinct (SOP, target) of the firing alerts: a reply the first time, then only
        what changed. Unmapped alertnames get one "no SOP matches" reply each."""
        assert group.root_id is not None
        jobs: dict[tuple[str, str], Diagnosis] = {}
        unmapped: dict[str, Decision] = {}
        unmapped_alert: dict[str, AlertState] = {}
        for a in group.firing:
            decision = self.router.decide(a.labels, a.annotations)
            if not decision.sops:
                unmapped.setdefault(a.alertname, decision)
                unmapped_alert.setdefault(a.alertname, a)
            for sop in decision.sops:
                d = diagnosis_for(sop, a.labels)
                jobs.setdefault(d.key, d)
        now = self.clock()
        storm = getattr(self.storm, "diagnoses", None) if group.storm_id is not None else None
        if isinstance(storm, StormDiagnoses):
            await self._diagnose_in_storm(storm, group, jobs, unmapped, now)
            return
        ts = now.timestamp()
        # A group that fired again after resolving keeps its diagnosis for the flap window.
        fresh_s = max(self.rediagnose_after_s, self.flaps.window_s) \
            if self.flaps.flapping(group.group_key, ts) else self.rediagnose_after_s
        if force:
            fresh_s = 0.0  # asked to re-check (its cause resolved)
        todo: list[tuple[Diagnosis, PriorDiagnosis | None]] = []
        held: list[str] = []
        left = self.budget.left(group.id, ts)
        for key, d in jobs.items():
            prior = await self.repo.diagnosis(group.id, *key)
            if prior is not None and ts - prior.ran_at < fresh_s:
                continue  # HA duplicates, retries and flaps: the diagnosis is fresh
            if prior is None and left <= 0:
                # Not run: its reply could not be posted. Named as one would run it by hand.
                held.append(d.sop.id if d.target == "-" else f"{d.sop.id} {d.target}")
                continue
            left -= prior is None
            todo.append((d, prior))
        todo.sort(key=lambda t: t[1] is not None)  # first diagnoses before re-diagnoses: the cap
        reports = await asyncio.gather(*(self._run(d) for d, _ in todo))
        for (d, prior), report in zip(todo, reports):
            await self._post_diagnosis(group, d, prior, report, now)
        for alertname, decision in unmapped.items():
            if await self.repo.diagnosis(group.id, "", alertname) is None:
                if self.budget.spend(group.id, ts):
                    key = f"alert-unmapped:{group.id}:{_digest(alertname)}"
                    message = unmapped_message(alertname, decision.suggestions, self.runbook, decision.problem)
                    if self.triage is not None and await self.repo.intent(key) is None:
                        # No SOP of its own: walk the runbook's flowchart from where its words point.
                        a = unmapped_alert[alertname]
                        try:
                            walked = await self.triage(a.labels, a.annotations)
                        except Exception:
                            log.exception("triage of unmapped alert %s failed", alertname)
                            walked = ""
                        if walked:
                            message += "\n\n" + walked
                    await self._post_once(key, group.channel_id, message, root_id=group.root_id)
                # Over the cap: folded into the root's list of unmatched names, never replied later.
                await self.repo.save_diagnosis(group.id, "", alertname, "-", [], now)
        if held != self._held.get(group.id, []):
            if held:
                self._held[group.id] = held
            else:
                self._held.pop(group.id, None)
            await self._refresh_root(group)

    async def _diagnose_in_storm(self, storm: StormDiagnoses, group: AlertGroup,
                                 jobs: dict[tuple[str, str], Diagnosis], unmapped: dict[str, Decision],
                                 now: datetime) -> None:
        """One diagnosis per (SOP, target) per storm: the first group runs and posts it, the
        others are listed on that post and keep its result as their own."""
        assert group.storm_id is not None and group.root_id is not None
        label = " ".join(f"{k}={v}" for k, v in sorted(group.group_labels.items())) or group.group_key
        work: list[tuple[tuple[str, str], Callable[[], Awaitable[str]]]] = []
        for key, d in jobs.items():
            if await self.repo.diagnosis(group.id, *key) is None:
                work.append((key, lambda d=d: self._storm_first(group, d, now)))
        for alertname, decision in unmapped.items():
            if await self.repo.diagnosis(group.id, "", alertname) is None:
                work.append((("", alertname), lambda n=alertname, dec=decision: self._storm_unmapped(group, n, dec)))
        for key, first_run in work:
            shared, first = storm.claim(group.storm_id, key)
            if first:
                try:
                    shared.message = await first_run()
                    # The repo now has this group's record: the others copy it.
                    prior = await self.repo.diagnosis(group.id, *key)
                    if prior is not None:
                        shared.digest, shared.findings = prior.digest, prior.findings
                    shared.post_id = await self._storm_post_id(group, key)
                    shared.groups.append(label)
                finally:
                    shared.done.set()  # failed (no post id): the next group claims it again
                continue
            await shared.done.wait()
            if not shared.ok:
                continue  # the first attempt failed: a later notification claims it again
            await self.repo.save_diagnosis(group.id, *key, shared.digest or "-", shared.findings, now)
            storm.covered(group.storm_id, key, shared, label)

    def _storm_key(self, group: AlertGroup, key: tuple[str, str]) -> str:
        return f"storm-diag:{group.storm_id}:{_digest(key[0] + chr(0) + key[1])}"

    async def _storm_post_id(self, group: AlertGroup, key: tuple[str, str]) -> str | None:
        intent = await self.repo.intent(self._storm_key(group, key))
        return intent.post_id if intent is not None else None

    async def _storm_first(self, group: AlertGroup, d: Diagnosis, now: datetime) -> str:
        report = await self._run(d)
        message = (cannot_run_message(d.sop.id, d.sop.title, d.problems) if report is None
                   else diagnosis_message(report, self.runbook, d.problems))
        await self._post_diagnosis(group, d, None, report, now, key=self._storm_key(group, d.key),
                                   override=message)
        return message

    async def _storm_unmapped(self, group: AlertGroup, alertname: str, decision: Decision) -> str:
        message = unmapped_message(alertname, decision.suggestions, self.runbook, decision.problem)
        await self._post_once(self._storm_key(group, ("", alertname)), group.channel_id, message,
                              root_id=group.root_id)
        await self.repo.save_diagnosis(group.id, "", alertname, "-", [], self.clock())
        return message

    async def _run(self, d: Diagnosis) -> Report | None:
        return None if d.params is None else await self.run(d.sop, d.params)

    async def _post_diagnosis(self, group: AlertGroup, d: Diagnosis,
                              prior: PriorDiagnosis | None,
                              report: Report | None, now: datetime, *, key: str | None = None,
                              override: str | None = None) -> None:
        """``key``/``override``: a storm-wide diagnosis, posted under the storm's key."""
        assert group.root_id is not None
        if report is None:
            digest, findings = "not-run", []
            message = "" if prior is not None and prior.digest == digest else \
                cannot_run_message(d.sop.id, d.sop.title, d.problems)
        else:
            digest = findings_digest(report.findings)
            findings = [f.model_dump(mode="json") for f in report.findings]
            if prior is None:
                message = diagnosis_message(report, self.runbook, d.problems)
            elif prior.digest == digest:
                message = ""
            else:
                message = self._changes(report, prior.findings)
        if override is not None:
            message = override
        elif message and not self.budget.spend(group.id, now.timestamp()):
            return  # over the reply cap: not saved, so a later notification compares and posts it
        if message:  # first diagnosis, or only what changed; nothing when it is the same
            # The prior's time tells this reply from the diagnosis's earlier ones.
            key = key or (f"alert-diag:{group.id}:{_digest(d.sop.id + chr(0) + d.target)}:"
                          f"{int(prior.ran_at * 1000) if prior else 0}")
            await self._post_once(key, group.channel_id, message, root_id=group.root_id)
        await self.repo.save_diagnosis(group.id, d.sop.id, d.target, digest, findings, now)
        if prior is None and report is not None:
            # As for a slash command's report: suggested actions become proposals here. Only
            # the first time, so repeat notifications and re-diagnoses do not propose again.
            for hook in list(self.on_report()):
                try:
                    await hook(report, group.channel_id, group.root_id, REQUESTER)
                except Exception:
                    log.exception("report hook failed for alert diagnosis %s", d.sop.id)

    async def _post_once(self, key: str, channel_id: str, message: str, *, root_id: str | None = None,
                         props: dict[str, Any] | None = None, urgent: bool = False) -> str:
        """Post at most once per ``key``, even when the bot dies between posting and saving:
        the intent is saved first, the key rides in the post's props, and a replay whose intent
        has no post id looks for the post before posting again."""
        intent = await self.repo.intent(key)
        if intent is None and not await self.repo.intend(key, self.clock()):
            intent = await self.repo.intent(key)  # another replica intended it meanwhile
        if intent is not None:
            if not intent.post_id and self.repo.store.shared:
                intent = await self._posted_elsewhere(key, intent)
            if intent.post_id:
                return intent.post_id
            found = await self.chat.find_post(channel_id, key, root_id=root_id,
                                              since_ms=int((intent.created_at - CLOCK_SLACK_S) * 1000))
            if found is not None:
                log.info("found post %s made before a restart; not posting it again", key)
                await self.repo.posted(key, found.id)
                return found.id
        post = await self.chat.post(channel_id, message, root_id=root_id,
                                    props={**(props or {}), "sopbot_key": key}, urgent=urgent)
        await self.repo.posted(key, post.id)
        return post.id

    async def _posted_elsewhere(self, key: str, intent: Intent) -> Intent:
        """A fresh intent without a post id, in a store replicas share: another replica is
        posting it right now; its post id, once saved (within ``POSTING_WAIT_S``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + POSTING_WAIT_S
        while (loop.time() < deadline and not intent.post_id
               and self.clock().timestamp() - intent.created_at < 2 * POSTING_WAIT_S):
            await asyncio.sleep(0.2)
            intent = await self.repo.intent(key) or intent
        return intent

    def _changes(self, report: Report, before: list[dict[str, Any]]) -> str:
        old = {(f["target"], f["summary"], f["status"]) for f in before}
        new = {(f.target, f.summary, f.status.value) for f in report.findings}
        changed = [f for f in report.findings if (f.target, f.summary, f.status.value) not in old]
        now_targets = {(f.target, f.summary) for f in report.findings}
        gone = [f"{t}: {s}" for t, s, _ in sorted(old - new) if (t, s) not in now_targets]
        return changed_message(report, changed, gone, self.runbook)


def _digest(text: str) -> str:
    # Keys stay short and free of the group key's quotes and braces.
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _unique(items: Any) -> list[str]:
    out: list[str] = []
    for i in items:
        if i and i not in out:
            out.append(i)
    return out

