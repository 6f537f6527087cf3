"""Procedures in chat: proposed as one plan (a dry run of every step that has one), approved by
reaction with the remediation rules, then run step by step, the proposal post edited as it
advances (the live log). Built on ``ApprovalService``: same chat, rules, clock, audit log and
``/sop fix`` command (``/sop fix <procedure> …``, ``/sop fix resume <id>``, ``/sop fix abort <id>``).

Exactly once per step: the runner (``_advance``) starts and ends each step with a
compare-and-set in ``ProcedureRepo``; after a restart it resumes running runs at their cursor,
and a step found ``running`` is asked its precondition again instead of being re-run blindly.
"""

from __future__ import annotations

import asyncio
import logging
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from bot.approvals.actions import Outcome, Plan, param_problems
from bot.approvals.procedure_repo import ProcedureRepo, ProcedureRun, RunState, StepState
from bot.approvals.procedures import PROCEDURES, Gate, Procedure, Step, StepRun
from bot.approvals.render import APPROVE, REJECT, hhmm, params_text
from bot.approvals.rules import rule_for
from bot.clients.errors import SourceError
from bot.commands import CommandError, Invocation, Reply, parse_args
from bot.safe_text import block, code, mention, text

if TYPE_CHECKING:
    from bot.approvals.service import ApprovalService
    from bot.chat.models import ReactionEvent

log = logging.getLogger(__name__)

DONE, RUNNING, WAITING, FAILED, PENDING, HALTED = "✅", "⏳", "⏸", "❌", "◻️", "⏹"
_RUN_ICON = {RunState.proposed: ":hourglass_flowing_sand:", RunState.running: ":gear:",
             RunState.waiting: ":double_vertical_bar:", RunState.stopped: ":red_circle:",
             RunState.succeeded: ":white_check_mark:", RunState.rejected: ":no_entry_sign:",
             RunState.expired: ":alarm_clock:", RunState.aborted: ":black_square_for_stop:"}
_ID = re.compile(r"#?[pP]?([0-9]{1,9})")


def _secs(s: float) -> str:
    return f"{s:g}s" if s < 120 else f"{s / 60:g} min"


def call_text(name: str, params: dict[str, Any]) -> str:
    known = PROCEDURES.get(name)
    if known is not None:
        params = {k: params[k] for k in known.params.model_fields if k in params}
    return f"{name} {params_text(params)}".strip()


def plan_text(plan: Plan | None) -> str:
    """One step's dry run, compact (Markdown)."""
    if plan is None:
        return ""
    if plan.blocked:
        return f":no_entry: blocked now: {text(plan.blocked)}"
    if plan.nothing_to_do:
        return f"nothing to do now: {text(plan.nothing_to_do)}"
    lines = [f"- {code(op)}" for op in plan.operations[:12]]
    if len(plan.operations) > 12:
        lines.append(f"- … and {len(plan.operations) - 12} more")
    if plan.preview:
        lines.append(("Dry run (server-side `dryRun=All`): " if plan.dry_run else "Plan: ") + plan.preview)
    lines += [f":warning: {text(w)}" for w in plan.warnings]
    return "\n".join(lines)


class ProcedureService:
    def __init__(self, approvals: "ApprovalService"):
        self.a = approvals
        self.repo = ProcedureRepo(approvals.repo.store)
        self._locks: dict[int, asyncio.Lock] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._progress: dict[int, str] = {}  # run id → the last "not yet" of a polling check

    @property
    def trigger(self) -> str:
        return self.a.bot.trigger

    def _lock(self, rid: int) -> asyncio.Lock:
        return self._locks.setdefault(rid, asyncio.Lock())

    # -- life cycle ---------------------------------------------------------------------------
    async def resume_running(self) -> None:
        """After a restart: each running procedure goes on from the step it reached. With
        several replicas, the one that claims the run advances it (``_advance``); the sweep
        calls this again, so a run whose replica died goes on once its claim lapses."""
        for run in await self.repo.in_states(RunState.running):
            task = self._tasks.get(run.id)
            if task is None or task.done():
                self._spawn(run.id)

    def _spawn(self, rid: int) -> None:
        self._tasks[rid] = self.a.bot.spawn(self._advance(rid), name=f"procedure:{rid}")

    # -- commands -----------------------------------------------------------------------------
    @staticmethod
    def handles(word: str) -> bool:
        return word.lower() in ("resume", "abort") or word.lower() in PROCEDURES

    async def command(self, inv: Invocation, words: list[str]) -> Reply:
        verb = words[0].lower()
        if verb in ("resume", "abort"):
            m = _ID.fullmatch(words[1]) if len(words) == 2 else None
            if m is None:
                raise CommandError(f"say which procedure: `/{self.trigger} fix {verb} <procedure number>`")
            return await (self._resume if verb == "resume" else self._abort)(inv, int(m.group(1)))
        proc = PROCEDURES[verb]
        try:
            proc.parse(parse_args(words[1:]))
        except ValidationError as exc:
            lines = [f"Bad arguments for `{verb}`:"] + [f"- {p}" for p in param_problems(exc)]
            lines.append(f"Usage: `/{self.trigger} fix {verb} {proc.usage()}`")
            return Reply(text="\n".join(lines))
        raw = parse_args(words[1:])

        async def later() -> None:
            root = await self.a.chat.post(
                inv.channel_id, f":wrench: @{inv.user_name} asked for `/{self.trigger} fix "
                f"{' '.join(words)}` — {proc.title} (procedure)")
            await self.propose(verb, raw, requester=inv.user_name, channel_id=inv.channel_id,
                               root_id=root.id, source="command")

        self.a.bot.spawn(later(), name=f"propose-procedure:{verb}")
        mode = "" if self.a.config.enabled else " (read-only: remediation is disabled)"
        return Reply(text=f"Planning procedure `{verb}`{mode}; the proposal will appear in a thread "
                          "in this channel.")

    def listing(self) -> list[str]:
        if not PROCEDURES:
            return []
        lines = ["Procedures (ordered steps, one approval, a live log; `resume <id>` / `abort <id>`):"]
        for p in sorted(PROCEDURES.values(), key=lambda p: p.name):
            sec = f" (runbook {p.section})" if p.section else ""
            lines.append(f"- `{p.name} {p.usage()}` — {p.title}{sec}, {len(p.steps)} steps, risk {p.risk.value}")
        return lines

    async def _resume(self, inv: Invocation, rid: int) -> Reply:
        run = await self.repo.get(rid)
        if run is None:
            raise CommandError(f"No procedure #{rid}.")
        if not run.rule.may_approve(inv.user_name):
            raise CommandError(f"@{inv.user_name} is not an approver for {run.procedure} "
                               f"(approvers: {run.rule.described}).")
        if run.state is not RunState.stopped:
            raise CommandError(f"Procedure #{rid} is {run.state.value}; only a stopped procedure resumes.")
        if not await self.repo.resume(rid, self.a.clock(), inv.user_name):
            raise CommandError(f"Procedure #{rid} is not stopped any more.")
        await self._reply(run, f"Procedure #{rid} resumed by @{inv.user_name} at step {run.cursor + 1}.")
        self._spawn(rid)
        return Reply(text=f"Procedure #{rid} resumes at step {run.cursor + 1}; see its thread.")

    async def _abort(self, inv: Invocation, rid: int) -> Reply:
        run = await self.repo.get(rid)
        if run is None:
            raise CommandError(f"No procedure #{rid}.")
        if not (run.rule.may_approve(inv.user_name) or inv.user_name == run.requester):
            raise CommandError(f"@{inv.user_name} may not abort procedure #{rid} (approvers and the requester may).")
        if run.state.final or not await self.repo.transition(
                rid, run.state, RunState.aborted, now=self.a.clock(), actor=inv.user_name,
                detail={"step": run.cursor + 1}, summary=f"aborted by @{inv.user_name}"):
            raise CommandError(f"Procedure #{rid} is {run.state.value}; nothing to abort.")
        task = self._tasks.get(rid)
        partly = run.state is RunState.running and run.cursor < len(run.steps) and \
            run.steps[run.cursor].state is StepState.running
        if task is not None and not task.done():
            task.cancel()  # stop between (or inside) steps: nothing after this runs
        await self._refresh(rid)
        tail = (f" Step {run.cursor + 1} was running: it may be partly applied; check it by hand."
                if partly else f" Steps after {run.cursor} were not run.")
        await self._reply(run, f"{HALTED} Procedure #{rid} aborted by @{inv.user_name}.{tail}")
        return Reply(text=f"Procedure #{rid} aborted.")

    # -- proposing ----------------------------------------------------------------------------
    async def propose(self, name: str, raw: dict[str, Any], *, requester: str, channel_id: str,
                      root_id: str, source: str) -> ProcedureRun | None:
        proc = PROCEDURES[name]
        try:
            params = proc.parse(raw)
        except ValidationError as exc:
            await self.a.chat.post(channel_id, f"Cannot propose `{name}`: " + "; ".join(param_problems(exc)),
                                   root_id=root_id)
            return None
        data = params.model_dump(mode="json")
        env = self.a.env(requester)
        now = self.a.clock()
        why = proc.enabled(env, params)
        if why is None:
            try:
                why = await proc.refuse(StepRun(env=env, params=params))
            except SourceError as exc:
                why = f"could not read the target: {exc}"
        if why is not None:
            await self.repo.record(now, None, name, "refused", requester, {"params": data, "why": why})
            await self.a.chat.post(channel_id, f":no_entry: Not proposing `{call_text(name, data)}`: {why}",
                                   root_id=root_id)
            return None
        dry_runs = [await self._dry_run(step, StepRun(env=env, params=params)) for step in proc.steps]
        if not self.a.config.enabled:
            await self.a.chat.post(channel_id, self._readonly_text(proc, data, dry_runs, requester),
                                   root_id=root_id)
            return None
        existing = await self.repo.open_for(name, data)
        if existing is not None:
            if existing.root_id != root_id:  # in this thread already: nothing to add
                await self.a.chat.post(channel_id, f"`{call_text(name, data)}` is already proposed: "
                                       f"procedure #{existing.id} ({existing.state.value}).", root_id=root_id)
            return existing
        rule = rule_for(self.a.config, name, proc.risk)
        rid = await self.repo.create(procedure=name, params=data, risk=proc.risk, requester=requester,
                                     source=source, channel_id=channel_id, root_id=root_id, rule=rule,
                                     dry_runs=dry_runs, now=now,
                                     expires_at=now + timedelta(seconds=self.a.config.expiry_s))
        run = await self.repo.get(rid)
        assert run is not None
        post = await self.a.chat.post(channel_id, self.render(run), root_id=root_id)
        await self.repo.set_post(rid, post.id)
        for emoji in (APPROVE, REJECT):
            await self.a._quietly(self.a.chat.react(post.id, emoji))
        return await self.repo.get(rid)

    async def _dry_run(self, step: Step, run: StepRun) -> str:
        if step.dry_run is None:
            return ""
        try:
            return plan_text(await step.dry_run(run)) or "(nothing to show)"
        except SourceError as exc:
            return f":warning: could not dry-run: {text(str(exc))}"
        except Exception as exc:  # a bug in the step: its type only
            log.error("dry run of step %s failed: %s", step.key, exc.__class__.__name__)
            return f":warning: could not dry-run ({exc.__class__.__name__})"

    # -- reactions ----------------------------------------------------------------------------
    async def on_reaction(self, event: "ReactionEvent") -> bool:
        """True when the post is a procedure's (proposal or gate): the event is handled here."""
        found = await self.repo.by_post(event.post_id)
        if found is None:
            return False
        if event.emoji_name in (APPROVE, REJECT) and event.user_id != self.a.chat.bot_user_id:
            run, round_ = found
            username = event.username or await self.a.chat.username(event.user_id)
            await self._consider(run.id, round_, username, event.emoji_name, event.added)
        return True

    async def resync(self) -> None:
        """Reactions made while the websocket was down, on open proposals and gates."""
        for run in await self.repo.in_states(RunState.proposed, RunState.waiting):
            round_ = run.round
            post_id = run.post_id if round_ == 0 else run.gate_post
            if post_id is None:
                continue
            try:
                reactions = await self.a.chat.reactions(post_id)
            except Exception as exc:
                log.warning("resync of procedure %s: %s", run.id, exc.__class__.__name__)
                continue
            present: set[str] = set()
            for r in sorted(reactions, key=lambda r: r.create_at):
                if r.user_id == self.a.chat.bot_user_id or r.emoji_name not in (APPROVE, REJECT):
                    continue
                username = await self.a.chat.username(r.user_id)
                if r.emoji_name == APPROVE:
                    present.add(username)
                await self._consider(run.id, round_, username, r.emoji_name, True)
            voted = run.approvers if round_ == 0 else run.gate_approvers
            for gone in set(voted) - present:
                await self._consider(run.id, round_, gone, APPROVE, False)

    async def _consider(self, rid: int, round_: int, username: str, emoji: str, added: bool) -> None:
        async with self._lock(rid):
            run = await self.repo.get(rid)
            want = RunState.proposed if round_ == 0 else RunState.waiting
            if run is None or run.state is not want or run.round != round_:
                return  # decided already: late, duplicate or replayed events change nothing
            now = self.a.clock()
            if round_ == 0 and now >= run.expires_at:
                await self._expire(run, now)
                return
            if not run.rule.may_approve(username):
                if added and await self.repo.notice_once(rid, username, "not-approver"):
                    await self.repo.record(now, rid, run.procedure, "unauthorised-reaction", username,
                                           {"emoji": emoji})
                    await self._reply(run, f"@{username} is not an approver for {run.procedure} "
                                           f"(approvers: {run.rule.described}); the reaction does not count.")
                return
            if emoji == REJECT:
                if not added:
                    return
                if round_ == 0:
                    if await self.repo.transition(rid, RunState.proposed, RunState.rejected, now=now,
                                                  actor=username, rejected_by=username,
                                                  summary=f"rejected by @{username}"):
                        await self._refresh(rid)
                        await self._reply(run, f"Procedure #{rid} rejected by @{username}; no step was run.")
                    return
                step = PROCEDURES[run.procedure].steps[run.cursor]
                if await self.repo.transition(rid, RunState.waiting, RunState.stopped, now=now, actor=username,
                                              detail={"step": run.cursor + 1},
                                              summary=f"step {run.cursor + 1} declined by @{username}"):
                    await self._refresh(rid)
                    await self._reply(run, f"Step {run.cursor + 1} ({step.title}) of procedure #{rid} declined by "
                                           f"@{username}; it was not run. `/{self.trigger} fix resume {rid}` asks "
                                           f"again, `/{self.trigger} fix abort {rid}` stops the procedure.")
                return
            if run.rule.four_eyes and username == run.requester:
                if added and await self.repo.notice_once(rid, username, f"four-eyes-{round_}"):
                    await self._reply(run, f"@{username} requested procedure #{rid} and cannot approve it "
                                           "(four-eyes); another approver must.")
                return
            if not added:
                if await self.repo.unvote(rid, round_, username, now):
                    await self._refresh(rid)
                return
            new, _count, reached = await self.repo.vote(rid, round_, username, now)
            if reached:
                self._spawn(rid)
            elif new:
                await self._refresh(rid)

    async def _expire(self, run: ProcedureRun, now: datetime) -> None:
        if await self.repo.transition(run.id, RunState.proposed, RunState.expired, now=now, actor="sop-bot",
                                      summary=f"expired at {hhmm(run.expires_at)}"):
            await self._refresh(run.id)
            await self._reply(run, f"Procedure #{run.id} expired at {hhmm(run.expires_at)} without its "
                                   f"{run.rule.quorum} approval(s); no step was run.")

    async def sweep(self) -> None:
        await self.resume_running()
        now = self.a.clock()
        for run in await self.repo.in_states(RunState.proposed):
            if now >= run.expires_at:
                async with self._lock(run.id):
                    fresh = await self.repo.get(run.id)
                    if fresh is not None and fresh.state is RunState.proposed:
                        await self._expire(fresh, now)

    # -- running ------------------------------------------------------------------------------
    async def _advance(self, rid: int) -> None:
        """Run the steps from the cursor on until one fails, a gated step waits, or the end.
        Only while this replica holds the run's claim: two replicas resuming the same run at
        start would otherwise both re-run the step it was in (its state is "running")."""
        async with self._lock(rid), self.a.claims.holding("procedure", rid, self.a.clock) as mine:
            if not mine:
                log.info("procedure %s is advanced by another replica", rid)
                return
            while True:
                run = await self.repo.get(rid)
                if run is None or run.state is not RunState.running:
                    return
                proc = PROCEDURES[run.procedure]
                idx = run.cursor
                if idx >= len(proc.steps):
                    if await self.repo.transition(rid, RunState.running, RunState.succeeded, now=self.a.clock(),
                                                  actor="sop-bot", summary=f"all {len(proc.steps)} steps done"):
                        await self._refresh(rid)
                        await self._reply(run, f"{DONE} Procedure #{rid} `{call_text(run.procedure, run.params)}` "
                                               f"**succeeded**: all {len(proc.steps)} steps done.")
                    return
                step, rec = proc.steps[idx], run.steps[idx]
                if rec.state not in (StepState.pending, StepState.running):
                    log.error("procedure %s: step %s is %s at the cursor", rid, idx, rec.state.value)
                    return
                if rec.state is StepState.pending and step.gated and not await self._gate_passed(run):
                    await self._open_gate(run, step)
                    return
                restarted = rec.state is StepState.running  # it was running when the bot stopped
                sr = StepRun(env=self.a.env(run.requester), params=proc.parse(run.params), memo=dict(run.memo))
                gate = await self._precondition(step, sr)
                if gate.go == "done":
                    note = f"already done: {gate.why}" + (" (found after a restart)" if restarted else "")
                    if not await self.repo.step_end(rid, idx, rec.state, ok=True, summary=note, details="",
                                                    memo=sr.memo, now=self.a.clock(), skipped=True):
                        return
                    await self._refresh(rid)
                    continue
                if gate.go == "blocked":
                    if await self.repo.step_end(rid, idx, rec.state, ok=False, summary=f"blocked: {gate.why}",
                                                details="", memo=sr.memo, now=self.a.clock()):
                        await self._failed(run, step, idx, f"blocked: {gate.why}")
                    return
                note = ("re-run after a restart: its precondition found it not done"
                        + (f" ({gate.why})" if gate.why else "")) if restarted else ""
                if not await self.repo.step_start(rid, idx, rec.state, self.a.clock(), note):
                    return
                await self._refresh(rid)
                outcome = await self._run_step(rid, step, sr)
                self._progress.pop(rid, None)
                if not await self.repo.step_end(rid, idx, StepState.running, ok=outcome.ok,
                                                summary=outcome.summary, details=outcome.details,
                                                memo=sr.memo, now=self.a.clock()):
                    return  # aborted meanwhile
                if not outcome.ok:
                    await self._failed(run, step, idx, outcome.summary, outcome.details)
                    return
                await self._refresh(rid)

    async def _gate_passed(self, run: ProcedureRun) -> bool:
        return len(await self.repo.votes(run.id, run.cursor + 1)) >= run.rule.quorum

    async def _open_gate(self, run: ProcedureRun, step: Step) -> None:
        if not await self.repo.transition(run.id, RunState.running, RunState.waiting, now=self.a.clock(),
                                          actor="sop-bot", detail={"step": run.cursor + 1}):
            return
        why = text(step.confirm) if step.confirm else "it is a high-risk step"
        msg = (f"{WAITING} Procedure #{run.id}, step {run.cursor + 1}: **{text(step.title)}** waits for "
               f"approval ({why}). React :{APPROVE}: here to run it, :{REJECT}: to stop before it. "
               f"Approvers: {run.rule.described}; needs {run.rule.quorum}.")
        gate = await self.a.chat.post(run.channel_id, msg, root_id=run.root_id)
        await self.repo.set_post(run.id, gate.id, gate=True)
        for emoji in (APPROVE, REJECT):
            await self.a._quietly(self.a.chat.react(gate.id, emoji))
        await self._refresh(run.id)

    async def _precondition(self, step: Step, sr: StepRun) -> Gate:
        try:
            return await asyncio.wait_for(step.precondition(sr), step.timeout_s)
        except asyncio.TimeoutError:
            return Gate.blocked(f"its precondition did not answer within {_secs(step.timeout_s)}")
        except SourceError as exc:
            return Gate.blocked(f"could not check its precondition: {exc}")
        except Exception as exc:  # a bug: the type only (texts could carry data)
            log.error("precondition of %s crashed: %s", step.key, exc.__class__.__name__)
            return Gate.blocked(f"its precondition failed unexpectedly ({exc.__class__.__name__})")

    async def _run_step(self, rid: int, step: Step, sr: StepRun) -> Outcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + step.timeout_s
        try:
            while True:
                outcome = await asyncio.wait_for(step.run(sr), max(0.001, deadline - loop.time()))
                if outcome.ok or step.kind != "check" or step.poll_s <= 0:
                    return outcome
                if loop.time() + step.poll_s > deadline:
                    return Outcome(ok=False, summary=f"{outcome.summary} (still after {_secs(step.timeout_s)})",
                                   details=outcome.details)
                if self._progress.get(rid) != outcome.summary:
                    self._progress[rid] = outcome.summary
                    await self._refresh(rid)
                await asyncio.sleep(step.poll_s)
        except asyncio.TimeoutError:
            return Outcome(ok=False, summary=f"timed out after {_secs(step.timeout_s)}")
        except SourceError as exc:
            return Outcome(ok=False, summary=str(exc))
        except Exception as exc:
            log.error("step %s crashed: %s", step.key, exc.__class__.__name__)
            return Outcome(ok=False, summary=f"the step failed unexpectedly ({exc.__class__.__name__})")

    async def _failed(self, run: ProcedureRun, step: Step, idx: int, summary: str, details: str = "") -> None:
        await self._refresh(run.id)
        lines = [f"{FAILED} Procedure #{run.id} stopped at step {idx + 1} ({text(step.title)}): {text(summary)}"]
        if details:
            lines.append(details)
        if step.next_step:
            lines.append(f"**Next (runbook)**: {text(step.next_step)}")
        lines.append(f"`/{self.trigger} fix resume {run.id}` re-checks and continues from this step; "
                     f"`/{self.trigger} fix abort {run.id}` stops the procedure.")
        await self._reply(run, "\n".join(lines))

    # -- rendering ----------------------------------------------------------------------------
    def render(self, run: ProcedureRun) -> str:
        proc = PROCEDURES[run.procedure]
        section = f" (runbook {proc.section})" if proc.section else ""
        lines = [f"{_RUN_ICON[run.state]} **Procedure #{run.id}: {code(call_text(run.procedure, run.params))}** — "
                 f"{text(proc.title)}{section} · risk **{run.risk.value}** · {len(proc.steps)} steps",
                 f"Requested by {mention(run.requester)}"
                 + (f" (from {code(run.source[4:])})" if run.source.startswith("sop:") else ""),
                 "**Steps**"]
        for i, (step, rec) in enumerate(zip(proc.steps, run.steps)):
            lines += self._step_lines(run, i, step, rec)
        if run.state is RunState.proposed:
            four = (f" {mention(run.requester)} requested it and cannot approve it (four-eyes)."
                    if run.rule.four_eyes else "")
            lines.append(f"**Approval**: react :{APPROVE}: to approve the whole procedure, :{REJECT}: to reject. "
                         f"Approvers: {run.rule.described}. Needs {run.rule.quorum} distinct approval"
                         f"{'s' if run.rule.quorum != 1 else ''}; steps marked \"approved again when reached\" ask "
                         f"for it once more before they run.{four} Expires {hhmm(run.expires_at)}.")
        lines.append(f"**Status**: {self._status(run)}")
        by_hand = [c for s in proc.steps for c in s.runbook]
        if by_hand and run.state is RunState.proposed:
            lines += ["**By hand (runbook)**", block("\n".join(by_hand))]
        return "\n".join(lines)

    def _step_lines(self, run: ProcedureRun, i: int, step: Step, rec: Any) -> list[str]:
        kind = "check" if step.kind == "check" else "action"
        extra = []
        if step.gated:
            extra.append("approved again when reached")
        head = f"{i + 1}. {{icon}} **{text(step.title)}** ({kind}, timeout {_secs(step.timeout_s)}"
        head += (", " + ", ".join(extra) if extra else "") + ")"
        at_cursor = i == run.cursor
        if rec.state is StepState.done:
            return [head.format(icon=DONE) + f" — {text(rec.summary)}"]
        if rec.state is StepState.failed:
            out = [head.format(icon=FAILED) + f" — failed: {text(rec.summary)}"]
            if step.next_step:
                out.append(f"    Next (runbook): {text(step.next_step)}")
            return out
        if rec.state is StepState.running:
            if run.state is RunState.aborted:
                return [head.format(icon=HALTED) + " — was running when the procedure was aborted"]
            since = f" since {hhmm(rec.started_at)}"
            note = f"; {text(rec.summary)}" if rec.summary else ""
            progress = f"; now: {text(self._progress[run.id])}" if run.id in self._progress else ""
            return [head.format(icon=RUNNING) + f" — running{since}{note}{progress}"]
        if at_cursor and run.state is RunState.waiting:
            who = ", ".join(mention(u) for u in run.gate_approvers) or "nobody yet"
            return [head.format(icon=WAITING) + f" — waiting for approval ({len(run.gate_approvers)}/"
                    f"{run.rule.quorum}: {who})" + (f": {text(step.confirm)}" if step.confirm else "")]
        if at_cursor and run.state is RunState.stopped:
            return [head.format(icon=WAITING) + f" — not run: {text(run.summary)}"]
        out = [head.format(icon=PENDING)]
        dry = run.dry_runs[i] if i < len(run.dry_runs) else ""
        if run.state is RunState.proposed:
            # Not indented: a dry run's table would turn into a code block.
            out.append(dry or "_(no dry run: checked when it runs)_")
        return out

    def _status(self, run: ProcedureRun) -> str:
        who = ", ".join(mention(u) for u in run.approvers) or "nobody yet"
        n = len(run.steps)
        if run.state is RunState.proposed:
            return f"waiting for approval ({len(run.approvers)}/{run.rule.quorum}: {who})"
        if run.state is RunState.running:
            return f"running step {min(run.cursor + 1, n)} of {n}, approved by {who} at {hhmm(run.decided_at)}"
        if run.state is RunState.waiting:
            return f"step {run.cursor + 1} of {n} waits for approval"
        if run.state is RunState.stopped:
            return (f"**stopped** at step {run.cursor + 1} of {n}: {text(run.summary)} — "
                    f"`/{self.trigger} fix resume {run.id}` or `/{self.trigger} fix abort {run.id}`")
        if run.state is RunState.rejected:
            return f"**rejected** by {mention(run.rejected_by)} at {hhmm(run.decided_at)}"
        if run.state is RunState.expired:
            return f"**expired** at {hhmm(run.expires_at)} without {run.rule.quorum} approval(s) ({who})"
        return f"**{run.state.value}**: {text(run.summary)} — finished {hhmm(run.finished_at)}"

    def _readonly_text(self, proc: Procedure[Any], data: dict[str, Any], dry_runs: list[str], requester: str) -> str:
        section = f" (runbook {proc.section})" if proc.section else ""
        lines = [f":lock: **Remediation is disabled (read-only)**: {code(call_text(proc.name, data))} — "
                 f"{text(proc.title)}{section}, requested by {mention(requester)}. These are the steps the bot "
                 "would run; it changes nothing. Ask an admin to set `remediation.enabled: true`."]
        for i, (step, dry) in enumerate(zip(proc.steps, dry_runs)):
            lines.append(f"{i + 1}. {PENDING} **{text(step.title)}**")
            lines.append(dry or "_(no dry run: checked when it runs)_")
        by_hand = [c for s in proc.steps for c in s.runbook]
        if by_hand:
            lines += ["**By hand (runbook)**", block("\n".join(by_hand))]
        return "\n".join(lines)

    # -- chat helpers -------------------------------------------------------------------------
    async def _refresh(self, rid: int) -> None:
        run = await self.repo.get(rid)
        if run is not None and run.post_id:
            await self.a._quietly(self.a.chat.edit(run.post_id, self.render(run)))

    async def _reply(self, run: ProcedureRun, msg: str) -> None:
        await self.a._quietly(self.a.chat.post(run.channel_id, msg, root_id=run.root_id))
