"""Reaction-based approval of remediation proposals, and their exactly-once execution.

Flow: ``propose`` plans the action (read-only, dry-run) and posts the proposal in a thread with
:white_check_mark: / :x: added by the bot. ``on_reaction`` (websocket) and ``resync`` (start and
every reconnect: reads the reactions of pending proposals over REST) feed the same
``_consider``; votes and transitions are atomic in the store, so whichever event reaches the
quorum first is the only one that starts ``_execute``. Before running, the action is planned
again: a changed target makes the proposal ``stale``. A restart never resumes an approved or
running proposal: it is marked ``interrupted`` and reported.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import SecretStr, ValidationError

from bot.approvals.actions import ACTIONS, Action, ActionEnv, Outcome, param_problems
from bot.redact import remember
from bot.safe_text import cell, mention
from bot.approvals.models import Proposal, State
from bot.approvals.render import (APPROVE, REJECT, call_text, hhmm, params_text, proposal_text,
                                  readonly_text)
from bot.approvals.procedure_service import ProcedureService
from bot.approvals.repo import ProposalRepo
from bot.claims import Claims, replica_identity
from bot.approvals.rules import rule_for, secret_holders
from bot.clients.errors import SourceError
from bot.commands import CommandError, Invocation, Reply, Subcommand, parse_args

if TYPE_CHECKING:
    from bot.chat.mattermost import MattermostChat
    from bot.chat.models import ReactionEvent
    from bot.config import RemediationConfig
    from bot.models import Report
    from bot.service import Bot
    from bot.store import Store

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
SHARE_FIELD = "share"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ApprovalService:
    def __init__(self, *, config: "RemediationConfig", store: "Store", chat: "MattermostChat",
                 bot: "Bot", dialog_url: str | None = None, clock: Clock = utcnow,
                 thread_alerts: Callable[[str], Any] | None = None,
                 thread_resolved: Callable[[str], Awaitable[datetime | None]] | None = None,
                 dialog_key: bytes | None = None):
        self.config = config
        self.repo = ProposalRepo(store)
        self.chat = chat
        self.bot = bot
        self.dialog_url = dialog_url
        self.clock = clock
        self.thread_alerts = thread_alerts
        # root id → when the alert thread's groups all resolved (None: still firing / no alert)
        self.thread_resolved = thread_resolved
        self._locks: dict[int, asyncio.Lock] = {}
        self._sweeper: asyncio.Task[None] | None = None
        # Signs dialog state: a submission must come from a dialog the bot opened. Every replica
        # must accept the others' (the Service sends the submission to any of them), so the key
        # is derived from a secret they all have (start_approvals: the bot token), else random.
        self._dialog_key = dialog_key or secrets.token_bytes(32)
        # This replica, as the owner of the proposals it executes and the procedure runs it
        # advances (several replicas share one store: a claim keeps the others off them).
        self.identity = replica_identity()
        self.claims = Claims(store, self.identity)
        # Multi-step procedures (bot/approvals/procedures.py): same chat, rules, clock and audit.
        self.procedures = ProcedureService(self)

    # -- life cycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        await self.repo.migrate()
        await self.procedures.repo.migrate()
        await self.claims.migrate()
        await self.recover()
        await self.resync()
        await self.procedures.resume_running()
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="approvals-expiry")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)

    def subcommands(self) -> list[Subcommand]:
        t = self.bot.trigger
        return [
            Subcommand("fix", "fix <action> [key=value …]",
                       "propose a remediation for approval (`/" + t + " fix` lists them)", self._cmd_fix,
                       posts=True),
            Subcommand("propose", "propose <action> [key=value …]", "same as fix", self._cmd_fix, posts=True),
            Subcommand("audit", "audit [N]", "the last N remediation audit entries", self._cmd_audit),
            Subcommand("share", "share <proposal>",
                       "hand your secret share (Vault unseal key) privately to an approved proposal",
                       self._cmd_share),
        ]

    def env(self, actor: str = "") -> ActionEnv:
        return ActionEnv(ctx=self.bot.ctx, config=self.config, actor=actor,
                         thread_alerts=self.thread_alerts)

    def _lock(self, pid: int) -> asyncio.Lock:
        return self._locks.setdefault(pid, asyncio.Lock())

    # -- proposing ----------------------------------------------------------------------------
    async def _cmd_fix(self, inv: Invocation, words: list[str]) -> Reply:
        if not words:
            return Reply(text=self.actions_text())
        if self.procedures.handles(words[0]):  # a procedure, or resume/abort of one
            return await self.procedures.command(inv, words)
        name = words[0].lower()
        action = ACTIONS.get(name)
        if action is None:
            raise CommandError(f"No remediation action `{name[:40]}`.\n" + self.actions_text())
        try:
            action.parse(parse_args(words[1:]))
        except ValidationError as exc:
            lines = [f"Bad arguments for `{name}`:"] + [f"- {p}" for p in param_problems(exc)]
            lines.append(f"Usage: `/{self.bot.trigger} fix {name} {action.usage()}`")
            return Reply(text="\n".join(lines))
        raw = parse_args(words[1:])

        async def later() -> None:
            root = await self.chat.post(
                inv.channel_id, f":wrench: @{inv.user_name} asked for `/{self.bot.trigger} fix "
                f"{' '.join(words)}` — {action.title}")
            await self.propose(name, raw, requester=inv.user_name, channel_id=inv.channel_id,
                               root_id=root.id, source="command")

        self.bot.spawn(later(), name=f"propose:{name}")
        mode = "" if self.config.enabled else " (read-only: remediation is disabled)"
        return Reply(text=f"Planning `{name}`{mode}; the proposal will appear in a thread in this channel.")

    def actions_text(self) -> str:
        lines = ["Remediation actions (`/" + self.bot.trigger + " fix <action> key=value …`):"]
        for a in sorted(ACTIONS.values(), key=lambda a: a.name):
            sec = f" (runbook {a.section})" if a.section else ""
            lines.append(f"- `{a.name} {a.usage()}` — {a.title}{sec}, risk {a.risk_rule or a.risk.value}")
        return "\n".join(lines + self.procedures.listing())

    async def on_report(self, report: "Report", channel_id: str, root_id: str, requester: str) -> None:
        """SOPs suggest actions in their findings; each becomes a proposal in the report's thread."""
        for finding in report.findings:
            for suggestion in getattr(finding, "actions", []) or []:
                try:
                    await self.propose(suggestion.action, dict(suggestion.params), requester=requester,
                                       channel_id=channel_id, root_id=root_id,
                                       source=f"sop:{report.sop_id}")
                except Exception:
                    log.exception("proposing %s suggested by %s failed", suggestion.action, report.sop_id)

    async def propose(self, name: str, raw: dict[str, Any], *, requester: str, channel_id: str,
                      root_id: str, source: str) -> Proposal | None:
        action = ACTIONS.get(name)
        if action is None:
            await self.chat.post(channel_id, f"No remediation action `{name}`.", root_id=root_id)
            return None
        try:
            params = action.parse(raw)
        except ValidationError as exc:
            await self.chat.post(channel_id, f"Cannot propose `{name}`: " + "; ".join(param_problems(exc)),
                                 root_id=root_id)
            return None
        env = self.env(requester)
        params = action.resolve(env, params)
        data = params.model_dump(mode="json")
        now = self.clock()
        why = action.enabled(env, params)
        if why is None:
            try:
                plan = await action.plan(env, params)
            except SourceError as exc:
                why = f"could not read the target: {exc}"
            except Exception as exc:  # a bug in the action: its type only (texts could carry data)
                log.error("planning %s failed: %s", name, exc.__class__.__name__)
                why = f"planning failed unexpectedly ({exc.__class__.__name__})"
        if why is None and (plan.blocked or plan.nothing_to_do):
            why = plan.blocked or plan.nothing_to_do
        if why is not None:
            await self.repo.record(now, None, "refused", requester, name, {"params": data, "why": why})
            await self.chat.post(channel_id, f":no_entry: Not proposing `{call_text(name, data)}`: {why}",
                                 root_id=root_id)
            return None
        if not self.config.enabled:
            await self.repo.record(now, None, "read-only", requester, name,
                                   {"params": data, "operations": plan.operations, "preview": plan.preview})
            await self.chat.post(channel_id, readonly_text(action, data, plan, requester), root_id=root_id)
            return None
        existing = await self.repo.open_for(name, data)
        if existing is not None:
            # Two findings of one report calling for the same fix: the proposal is right there.
            if existing.root_id != root_id:
                await self.chat.post(channel_id, f"`{call_text(name, data)}` is already proposed: "
                                     f"proposal #{existing.id} ({existing.state.value}).", root_id=root_id)
            return existing
        risk = action.risk_for(params)
        rule = rule_for(self.config, name, risk)
        pid = await self.repo.create(action=name, params=data, risk=risk, requester=requester,
                                     source=source, channel_id=channel_id, root_id=root_id, rule=rule,
                                     plan=plan, now=now,
                                     expires_at=now + timedelta(seconds=self.config.expiry_s))
        proposal = await self.repo.get(pid)
        assert proposal is not None
        post = await self.chat.post(channel_id, proposal_text(proposal, action, self.bot.trigger),
                                    root_id=root_id)
        await self.repo.set_post(pid, post.id)
        for emoji in (APPROVE, REJECT):  # one click to approve; the bot's own are ignored
            await self._quietly(self.chat.react(post.id, emoji))
        return await self.repo.get(pid)

    # -- reactions ----------------------------------------------------------------------------
    async def on_reaction(self, event: "ReactionEvent") -> None:
        if event.emoji_name not in (APPROVE, REJECT) or event.user_id == self.chat.bot_user_id:
            return
        proposal = await self.repo.by_post(event.post_id)
        if proposal is None:
            await self.procedures.on_reaction(event)
            return
        username = event.username or await self.chat.username(event.user_id)
        await self._consider(proposal.id, username, event.emoji_name, event.added)

    async def resync(self) -> None:
        """Catch up on reactions made while the websocket was down (and before start)."""
        for p in await self.repo.in_states(State.proposed):
            if p.post_id is None:
                continue
            try:
                reactions = await self.chat.reactions(p.post_id)
            except Exception as exc:
                log.warning("resync of proposal %s: %s", p.id, exc.__class__.__name__)
                continue
            present: set[str] = set()
            for r in sorted(reactions, key=lambda r: r.create_at):
                if r.user_id == self.chat.bot_user_id or r.emoji_name not in (APPROVE, REJECT):
                    continue
                username = await self.chat.username(r.user_id)
                if r.emoji_name == APPROVE:
                    present.add(username)
                await self._consider(p.id, username, r.emoji_name, True)
            for gone in set(p.approvers) - present:  # approvals withdrawn while we were away
                await self._consider(p.id, gone, APPROVE, False)
        await self.procedures.resync()

    async def _consider(self, pid: int, username: str, emoji: str, added: bool) -> None:
        async with self._lock(pid):
            p = await self.repo.get(pid)
            if p is None or p.state is not State.proposed:
                return  # decided already: late, duplicate or replayed events change nothing
            now = self.clock()
            if now >= p.expires_at:
                await self._expire(p, now)
                return
            if added and emoji == APPROVE and await self.withdraw_if_resolved(p):
                return  # the alert it was for is gone: approving now would act on nothing
            if not p.rule.may_approve(username):
                if added and await self.repo.notice_once(pid, username, "not-approver"):
                    await self.repo.record(now, pid, "unauthorised-reaction", username, p.action,
                                           {"emoji": emoji})
                    await self._reply(p, f"@{username} is not an approver for {p.action} "
                                         f"(approvers: {p.rule.described}); the reaction does not count.")
                return
            if emoji == REJECT:
                if added and await self.repo.transition(pid, State.proposed, State.rejected, now=now,
                                                        actor=username, rejected_by=username):
                    await self._refresh(pid)
                    await self._reply(p, f"Proposal #{pid} rejected by @{username}; nothing was changed.")
                return
            if p.rule.four_eyes and username == p.requester:
                if added and await self.repo.notice_once(pid, username, "four-eyes"):
                    await self._reply(p, f"@{username} requested proposal #{pid} and cannot approve it "
                                         "(four-eyes); another approver must.")
                return
            if not added:
                if await self.repo.unvote(pid, username, now):
                    await self._refresh(pid)
                return
            new, _count, approved = await self.repo.vote(pid, username, now)
            if approved:
                # Claimed before the run starts: another replica starting now must not take
                # this approved proposal for one a restart interrupted.
                await self.claims.claim("proposal", pid, self.clock())
                self.bot.spawn(self._execute(pid), name=f"remediate:{pid}")
            elif new:
                await self._refresh(pid)

    async def _expire(self, p: Proposal, now: datetime) -> None:
        if await self.repo.transition(p.id, State.proposed, State.expired, now=now, actor="sop-bot"):
            await self._refresh(p.id)
            await self._reply(p, f"Proposal #{p.id} expired at {hhmm(p.expires_at)} without its "
                                 f"{p.rule.quorum} approval(s); nothing was changed.")

    async def withdraw_if_resolved(self, p: Proposal) -> bool:
        """A proposal made for an alert that has resolved since is withdrawn, not approvable."""
        if self.thread_resolved is None or not p.root_id:
            return False
        at = await self.thread_resolved(p.root_id)
        if at is None:
            return False
        summary = f"the alert resolved at {hhmm(at)}"
        if await self.repo.transition(p.id, State.proposed, State.withdrawn, now=self.clock(),
                                      actor="sop-bot", detail={"why": summary},
                                      outcome=Outcome(ok=False, summary=summary)):
            await self._refresh(p.id)
            await self._reply(p, f"Proposal #{p.id} withdrawn: {summary}; nothing was changed.")
            return True
        return False

    async def sweep(self) -> None:
        await self.procedures.sweep()
        await self.recover(lapsed_only=True)  # a replica died mid-action: say so, do not re-run
        now = self.clock()
        for p in await self.repo.in_states(State.proposed):
            async with self._lock(p.id):
                fresh = await self.repo.get(p.id)
                if fresh is not None and fresh.state is State.proposed and await self.withdraw_if_resolved(fresh):
                    continue
            if now >= p.expires_at:
                async with self._lock(p.id):
                    fresh = await self.repo.get(p.id)
                    if fresh is not None and fresh.state is State.proposed:
                        await self._expire(fresh, now)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("expiry sweep failed")

    # -- running ------------------------------------------------------------------------------
    async def _execute(self, pid: int) -> None:
        async with self._lock(pid), self.claims.holding("proposal", pid, self.clock) as mine:
            if not mine:
                log.info("proposal %s is being executed by another replica", pid)
                return
            p = await self.repo.get(pid)
            if p is None or p.state is not State.approved:
                return
            action = ACTIONS[p.action]
            params = action.parse(p.params)
            env = self.env(p.requester)
            await self._refresh(pid)
            try:
                plan = await action.plan(env, params)
                changed = None
                if plan.state != p.plan.state:
                    changed = plan.state_text or "the target changed"
                elif plan.blocked or plan.nothing_to_do:
                    changed = plan.blocked or plan.nothing_to_do
            except SourceError as exc:
                changed = f"could not re-check the target: {exc}"
            except Exception as exc:
                log.error("re-checking %s failed: %s", p.action, exc.__class__.__name__)
                changed = f"could not re-check the target ({exc.__class__.__name__})"
            if changed is not None:
                was = p.plan.state_text or "the state it was proposed for"
                if await self.repo.transition(pid, State.approved, State.stale, now=self.clock(),
                                              actor="sop-bot", detail={"was": was, "now": changed},
                                              outcome=Outcome(ok=False, summary=f"stale: {changed}")):
                    await self._refresh(pid)
                    await self._reply(p, f":warning: Proposal #{pid} is stale and was **not run**: the "
                                         f"proposal was made for {was}; now {changed}. Propose again.")
                return
            prompt = action.secret_prompt(params)
            if not await self.repo.transition(pid, State.approved, State.running, now=self.clock(),
                                              actor="sop-bot", detail={"preview": plan.preview},
                                              awaiting_secret=prompt is not None):
                return
            await self._refresh(pid)
            if prompt is not None:
                holders = ", ".join(f"@{u}" for u in secret_holders(self.config, p.rule))
                await self._reply(p, f"Proposal #{pid} approved. Key holders ({holders}): run "
                                     f"`/{self.bot.trigger} share {pid}` and paste your {prompt.label.lower()} "
                                     "in the private dialog. It goes straight to the target, one share at a "
                                     "time; it is never posted, logged or stored.")
                return
            outcome = await self._run(action, env, params)
            await self._finish(p, outcome)

    async def _run(self, action: Action[Any], env: ActionEnv, params: Any) -> Outcome:
        try:
            return await action.run(env, params)
        except SourceError as exc:
            return Outcome(ok=False, summary=str(exc))
        except Exception as exc:  # a bug: report the type only (texts could carry data)
            log.error("action %s crashed: %s", action.name, exc.__class__.__name__)
            return Outcome(ok=False, summary=f"the action failed unexpectedly ({exc.__class__.__name__})")

    async def _finish(self, p: Proposal, outcome: Outcome) -> None:
        new = State.succeeded if outcome.ok else State.failed
        if await self.repo.transition(p.id, State.running, new, now=self.clock(), actor="sop-bot",
                                      outcome=outcome, awaiting_secret=False):
            await self._refresh(p.id)
            icon = ":white_check_mark:" if outcome.ok else ":red_circle:"
            text = f"{icon} Proposal #{p.id} `{p.action}` **{new.value}**: {outcome.summary}"
            if outcome.details:
                text += "\n" + outcome.details
            await self._reply(p, text)

    async def recover(self, *, lapsed_only: bool = False) -> None:
        """After a restart: approved or running proposals are reported, never re-run. Not one
        another live replica is executing (its claim holds); ``lapsed_only`` (the sweep): only
        those whose executor died (claim lapsed), not ones waiting for key shares."""
        now = self.clock()
        for p in await self.repo.in_states(State.approved, State.running):
            if await self.claims.held_elsewhere("proposal", p.id, now):
                continue
            if lapsed_only and (p.awaiting_secret or self._lock(p.id).locked()
                                or await self.claims.live("proposal", p.id, now)):
                continue  # (two replicas sweeping: the transition below is the compare-and-set)
            if await self.repo.transition(
                    p.id, p.state, State.interrupted, now=now, actor="sop-bot",
                    detail={"was": p.state.value}, awaiting_secret=False,
                    outcome=Outcome(ok=False, summary=f"interrupted by a bot restart while {p.state.value}")):
                await self._refresh(p.id)
                done = ("it had not started" if p.state is State.approved
                        else "it may have been partly applied")
                await self._reply(p, f":warning: Proposal #{p.id} `{call_text(p.action, p.params)}` was "
                                     f"interrupted by a bot restart while {p.state.value} ({done}). It is "
                                     "**not** re-run: check the target and propose again if still needed.")

    # -- secret shares (dialogs) ----------------------------------------------------------------
    def _sign(self, pid: int, user_id: str) -> str:
        msg = f"{pid}:{user_id}".encode()
        return f"{pid}:{user_id}:" + hmac.new(self._dialog_key, msg, hashlib.sha256).hexdigest()

    def _verify(self, state: str, user_id: str) -> int | None:
        try:
            pid_text, uid, _sig = state.split(":", 2)
            pid = int(pid_text)
        except ValueError:
            return None
        ok = uid == user_id and hmac.compare_digest(self._sign(pid, uid), state)
        return pid if ok else None

    async def _cmd_share(self, inv: Invocation, words: list[str]) -> Reply:
        # ASCII digits only, and few: isdigit() takes "²", and 30 digits overflow SQLite.
        if len(words) != 1 or not re.fullmatch(r"#?[0-9]{1,9}", words[0]):
            raise CommandError(f"say which proposal: `/{self.bot.trigger} share <proposal number>`")
        pid = int(words[0].lstrip("#"))
        p = await self.repo.get(pid)
        if p is None:
            raise CommandError(f"No proposal #{pid}.")
        action = ACTIONS[p.action]
        prompt = action.secret_prompt(action.parse(p.params))
        if prompt is None or p.state is not State.running or not p.awaiting_secret:
            raise CommandError(f"Proposal #{pid} is {p.state.value} and is not waiting for shares.")
        if inv.user_name not in secret_holders(self.config, p.rule):
            raise CommandError(f"@{inv.user_name} is not a key holder for proposal #{pid}.")
        if not inv.trigger_id or not self.dialog_url:
            raise CommandError("cannot open a dialog (no trigger id, or server.public_url is not set)")
        dialog = {"callback_id": f"share:{pid}", "title": prompt.title,
                  "introduction_text": prompt.help_text or "Your share goes straight to the target. "
                  "It is never posted, logged or stored.",
                  "elements": [{"display_name": prompt.label, "name": SHARE_FIELD, "type": "text",
                                "subtype": "password", "optional": False, "max_length": 200}],
                  "submit_label": "Submit", "notify_on_cancel": False,
                  "state": self._sign(pid, inv.user_id)}
        await self.chat.open_dialog(inv.trigger_id, self.dialog_url, dialog)
        return Reply(text=f"A private dialog is open for proposal #{pid}: paste your share there. "
                          "It is never posted, logged or stored.")

    def dialog_handler(self) -> Callable[[web.Request], Any]:
        async def handle(request: web.Request) -> web.Response:
            if request.content_length is not None and request.content_length > 16 * 1024:
                return web.json_response({"error": "request too large"}, status=413)
            try:
                body = json.loads(await request.read())
            except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
                return web.json_response({"error": "not JSON"}, status=400)
            if not isinstance(body, dict):
                return web.json_response({"error": "not a dialog submission"}, status=400)
            submission = body.pop("submission", None) or {}
            raw = submission.pop(SHARE_FIELD, None) if isinstance(submission, dict) else None
            secret = SecretStr(raw) if isinstance(raw, str) else None
            del raw, submission
            answer = await self.dialog_submitted(body, secret)
            return web.json_response(answer)

        return handle

    async def dialog_submitted(self, body: dict[str, Any], secret: SecretStr | None) -> dict[str, Any]:
        """A share from a dialog. The answer (``{}`` closes the dialog) never echoes it."""
        if body.get("cancelled"):
            return {}
        user_id = str(body.get("user_id", ""))
        pid = self._verify(str(body.get("state", "")), user_id)
        if pid is None or str(body.get("callback_id", "")) != f"share:{pid}":
            log.warning("dialog submission with a state this bot did not issue; ignored")
            return {"error": "This dialog is not valid any more; run the command again."}
        if secret is None or not secret.get_secret_value().strip():
            return {"errors": {SHARE_FIELD: "Paste your share."}}
        remember(secret.get_secret_value())  # masked in every post and log line from now on
        username = await self.chat.username(user_id)
        async with self._lock(pid):
            p = await self.repo.get(pid)
            if p is None or p.state is not State.running or not p.awaiting_secret:
                return {"error": f"Proposal #{pid} is not waiting for shares any more."}
            if username not in secret_holders(self.config, p.rule):
                return {"error": f"@{username} is not a key holder for proposal #{pid}."}
            action = ACTIONS[p.action]
            try:
                progress = await action.accept_secret(self.env(username), action.parse(p.params), secret)
            except Exception as exc:  # never the text: it could quote the input
                log.error("accepting a share for proposal %s failed: %s", pid, exc.__class__.__name__)
                return {"error": "The share could not be submitted; see the thread."}
            finally:
                del secret
            if progress.field_error:
                await self.repo.record(self.clock(), pid, "share-refused", username, p.action,
                                       {"why": progress.field_error})
                return {"errors": {SHARE_FIELD: progress.field_error}}
            await self.repo.record(self.clock(), pid, "share", username, p.action,
                                   {"progress": progress.message})
            await self._reply(p, f"@{username} handed a share: {progress.message}")
            if progress.done:
                await self._finish(p, Outcome(ok=progress.ok, summary=progress.message))
        return {}

    # -- audit --------------------------------------------------------------------------------
    async def _cmd_audit(self, inv: Invocation, words: list[str]) -> Reply:
        n = 10
        if words:
            if not re.fullmatch(r"[0-9]{1,3}", words[0]) or not 1 <= int(words[0]) <= 100:
                raise CommandError(f"`/{self.bot.trigger} audit [N]` with N from 1 to 100")
            n = int(words[0])
        entries = await self.repo.audit(n)
        if not entries:
            return Reply(text="The remediation audit log is empty.")
        rows = [f"Last {len(entries)} remediation audit entries (newest first):",
                "| time (UTC) | proposal | event | by | action | detail |", "|:--|:--|:--|:--|:--|:--|"]
        for e in entries:
            pid = f"#{e['proposal_id']}" if e["proposal_id"] else "—"
            rows.append(f"| {e['at'][:19].replace('T', ' ')} | {pid} | {cell(e['event'])} | "
                        f"{mention(e['actor'])} | {cell(e['action'])} | {cell(_detail(e['detail']))} |")
        return Reply(text="\n".join(rows))

    # -- chat helpers -------------------------------------------------------------------------
    async def _refresh(self, pid: int) -> None:
        p = await self.repo.get(pid)
        if p is not None and p.post_id:
            await self._quietly(self.chat.edit(p.post_id, proposal_text(p, ACTIONS[p.action], self.bot.trigger)))

    async def _reply(self, p: Proposal, text: str) -> None:
        await self._quietly(self.chat.post(p.channel_id, text, root_id=p.root_id))

    @staticmethod
    async def _quietly(coro: Any) -> None:
        try:
            await coro
        except Exception as exc:  # chat trouble must not undo or repeat a decision
            log.warning("chat update failed: %s", exc)


def _detail(detail: dict[str, Any]) -> str:
    keys = ("params", "approvers", "result", "why", "progress", "was", "now", "emoji", "votes")
    parts = []
    for k in keys:
        if k in detail:
            v = detail[k]
            if isinstance(v, dict) and k == "result":
                v = v.get("summary", "")
            elif isinstance(v, dict):
                v = params_text(v)
            elif isinstance(v, list):
                v = ", ".join(map(str, v))
            parts.append(f"{k}: {v}")
    text = "; ".join(parts).replace("|", "/").replace("\n", " ")
    return text[:160] + ("…" if len(text) > 160 else "")


def dialog_key(bot_token: str) -> bytes:
    """The dialog-state key every replica derives alike from the bot token they share (the
    token itself never signs anything; a restart keeps open dialogs valid too)."""
    return hmac.new(bot_token.encode(), b"sopbot dialog state v1", hashlib.sha256).digest()


async def start_approvals(settings: Any, store: "Store", chat: "MattermostChat", bot: "Bot",
                          clock: Clock = utcnow, alerts: Any = None, metrics: Any = None) -> ApprovalService:
    """Wire remediation into a running bot: subcommands, SOP suggestions, recovery after a
    restart and a first resync of pending proposals. The caller subscribes ``on_reaction`` and
    ``resync`` to the websocket and serves ``dialog_handler()`` at ``/mattermost/dialog``."""
    public = settings.server.public_url
    thread_alerts = None
    if alerts is not None:  # bot.alerts.service.AlertService: alert threads → their alerts
        async def thread_alerts(root_id: str) -> list[dict[str, str]]:
            groups = await alerts.repo.by_root_all(root_id)
            return [dict(a.labels) for g in groups for a in g.firing]

        async def thread_resolved(root_id: str) -> datetime | None:
            groups = await alerts.repo.by_root_all(root_id)
            if not groups or any(g.state.value == "open" for g in groups):
                return None
            return max((g.resolved_at or g.opened_at) for g in groups)
    token = settings.mattermost.token
    service = ApprovalService(config=settings.remediation, store=store, chat=chat, bot=bot,
                              dialog_url=f"{public.rstrip('/')}/mattermost/dialog" if public else None,
                              clock=clock, thread_alerts=thread_alerts,
                              thread_resolved=thread_resolved if alerts is not None else None,
                              dialog_key=dialog_key(token.get_secret_value()) if token else None)
    if metrics is not None:  # bot.metrics.Metrics: approvals and remediations by outcome
        service.repo.on_change = metrics.proposal_changed
    cfg = settings.remediation
    for name in set(cfg.by_action) - set(ACTIONS):
        log.warning("remediation.by_action.%s: no such action (known: %s)", name, ", ".join(sorted(ACTIONS)))
    rules = [*cfg.by_action.values(), *cfg.by_risk.values()]
    for group in {g for r in rules for g in r.groups} | set(cfg.approver_groups):
        if group not in cfg.groups:
            log.warning("remediation: group %s is used but not defined in remediation.groups", group)
    for sub in service.subcommands():
        bot.subcommands[sub.name] = sub
    hooks = getattr(bot, "on_report", None)
    if hooks is not None:
        hooks.append(service.on_report)
    await service.start()
    return service
