"""The bot's core: answers slash commands at once and runs SOPs in the background, posting the
findings in a thread. Chat-system specifics stay behind ``bot.ports.Chat``."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any

from bot.coalesce import Run, Runs
from bot.commands import (CommandError, Invocation, Reply, RunRequest, Subcommand, bad_args_text,
                          help_text, list_text, resolve, search_text, unknown_text)
from bot.context import HandlerContext
from bot.engine import run_sop
from bot.models import Report
from bot.ports import Chat
from bot.ratelimit import CommandLimiter
from bot.registry import BadArguments, Registry, UnknownSOP
from bot.render import EMOJI, report_markdown, section_ref
from bot.runbook import Runbook
from bot.safe_text import code, mention, text

log = logging.getLogger(__name__)


class Bot:
    def __init__(self, *, registry: Registry, chat: Chat, ctx: HandlerContext,
                 runbook: Runbook | None = None, trigger: str = "sop",
                 handler_timeout_s: float = 60.0, limiter: CommandLimiter | None = None,
                 permalink: Callable[[str], str] | None = None):
        self.registry = registry
        self.chat = chat
        self.ctx = ctx
        self.runbook = runbook
        self.trigger = trigger
        self.handler_timeout_s = handler_timeout_s
        self.subcommands: dict[str, Subcommand] = {}
        # (invocation, command head) → None or the refusal (bot.authz); unset: no checks.
        self.authorize: Callable[[Invocation, str], Awaitable[str | None]] | None = None
        # Called with (report, channel_id, thread root id, requester) after a report is posted;
        # approvals turns the findings' suggested actions into proposals there.
        self.on_report: list[Callable[[Report, str, str, str], Awaitable[None]]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.limiter = limiter
        self.permalink = permalink
        self.runs = Runs()

    # -- background work -------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run after answering; keep a reference so shutdown can wait for it."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    @property
    def busy(self) -> int:
        return len(self._tasks)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for in-flight work (graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    async def channel_problem(self, channel_id: str) -> str | None:
        """Why the bot could not post in the channel (``MattermostChat.channel_problem``), or None."""
        check = getattr(self.chat, "channel_problem", None)
        return await check(channel_id) if check is not None else None

    # -- commands --------------------------------------------------------------------------
    async def command(self, inv: Invocation) -> Reply:
        """The immediate answer to ``/sop …``; SOP runs continue in the background."""
        words = inv.text.split()
        if not words:
            return Reply(text=help_text(self.registry, self.runbook, "", self.trigger, self.subcommands))
        head, rest = words[0].lower(), words[1:]
        if self.authorize is not None and head not in ("help", "list", "search"):
            refusal = await self.authorize(inv, head)
            if refusal is not None:
                return Reply(text=refusal)  # ephemeral, once: nothing is posted in the channel
        try:
            if head == "help":
                return Reply(text=help_text(self.registry, self.runbook, " ".join(rest[:1]),
                                            self.trigger, self.subcommands))
            if head == "list":
                return Reply(text=list_text(self.registry, self.trigger))
            if head == "search":
                if not rest:
                    raise CommandError(f"say what to look for: `/{self.trigger} search certificate expired`")
                return Reply(text=search_text(self.registry, self.runbook, " ".join(rest), self.trigger,
                                              self.subcommands))
            if head in self.subcommands:
                sub = self.subcommands[head]
                problem = await self.channel_problem(inv.channel_id) if sub.posts else None
                if problem is not None:  # no thread could follow: say why instead of promising one
                    return Reply(text=f"Cannot run `/{self.trigger} {sub.name}` here: {problem}.")
                return await sub.run(inv, rest)
            request = resolve(self.registry, head, rest, self.ctx)
        except UnknownSOP as exc:
            return Reply(text=unknown_text(exc, self.trigger))
        except BadArguments as exc:
            return Reply(text=bad_args_text(exc, self.trigger))
        except CommandError as exc:
            return Reply(text=str(exc))
        problem = await self.channel_problem(inv.channel_id)
        if problem is not None:  # no thread could follow: say why instead of promising one
            return Reply(text=f"Cannot run `{request.sop.id}` here: {problem}.")
        key = ("sop", inv.channel_id, request.sop.id,
               json.dumps(request.params.model_dump(mode="json"), sort_keys=True))  # type: ignore[attr-defined]
        refused = self.start_run(inv, key, f"`/{self.trigger} {request.sop.id}`",
                                 lambda run: self.run_in_thread(inv, request, run), name=f"sop:{request.sop.id}")
        if refused is not None:
            return refused
        return Reply(text=f"Running `{request.sop.id}` ({request.sop.title}); "
                          f"the findings will appear in a thread in this channel.")

    def start_run(self, inv: Invocation, key: Hashable, label: str,
                  work: Callable[[Run], Coroutine[Any, Any, Any]], *, name: str) -> Reply | None:
        """Start ``work`` in the background unless the same run is under way (then the requester
        joins it) or the rate limits refuse; the reply for those two, None when started."""
        run = self.runs.get(key)
        if run is not None:
            run.join(inv.user_name)
            self.runs.joined += 1
            return Reply(text=run.joined_text(self.permalink))
        if self.limiter is not None:
            refusal = self.limiter.check(inv.user_id, inv.user_name)
            if refusal is not None:
                return Reply(text=refusal)
        run = self.runs.begin(key, label, inv.channel_id, inv.user_name)

        async def go() -> None:
            try:
                await work(run)
            finally:
                self.runs.end(run)  # a request from now on starts a new run
            if run.joiners and run.root_id:
                await self.chat.post(run.channel_id, run.joiners_text(), root_id=run.root_id)

        self.spawn(go(), name=name)
        return None

    async def run_in_thread(self, inv: Invocation, request: RunRequest, run: Run | None = None) -> None:
        sop = request.sop
        head = (f"{mention(inv.user_name)} ran {code(f'/{self.trigger} ' + ' '.join(inv.text.split()))} — "
                f"**{text(sop.title)}** ({section_ref(sop.section, self.runbook)}, {sop.severity.value})")
        outbox = getattr(self.chat, "outbox", None)  # bot.chat.outbox.DurableChat
        if outbox is None:
            root = await self.chat.post(inv.channel_id, f":hourglass_flowing_sand: {head}")
            if run is not None:
                run.root_id = root.id
            report = await run_sop(sop, self.ctx, request.params, timeout_s=self.handler_timeout_s)  # type: ignore[arg-type]
            await self.chat.post(inv.channel_id, report_markdown(report, self.runbook), root_id=root.id)
            await self.chat.edit(root.id, f"{EMOJI[report.status]} {head}: **{report.status.value.upper()}**")
            root_id = root.id
        else:
            # The whole thread is committed as it is produced, without waiting for Mattermost:
            # the SOP runs during an outage, and a restart before recovery still delivers it.
            root_key = await outbox.post(inv.channel_id, f":hourglass_flowing_sand: {head}")
            # Who joins this run while it runs gets the thread's link as soon as it exists.
            noted = asyncio.create_task(_note_root(run, outbox.wait(root_key))) if run is not None else None
            try:
                report = await run_sop(sop, self.ctx, request.params, timeout_s=self.handler_timeout_s)  # type: ignore[arg-type]
                await outbox.post(inv.channel_id, report_markdown(report, self.runbook), root_key=root_key)
                edit = await outbox.edit(root_key, f"{EMOJI[report.status]} {head}: **{report.status.value.upper()}**")
                await outbox.wait(edit)  # the thread's last entry: all of it is delivered, in order
                root_id = await outbox.wait(root_key)  # proposals go in the thread
            finally:
                if noted is not None:
                    noted.cancel()
            if run is not None:
                run.root_id = root_id
        for hook in self.on_report:
            try:
                await hook(report, inv.channel_id, root_id, inv.user_name)
            except Exception:
                log.exception("report hook failed for %s", sop.id)


async def _note_root(run: Run, delivered: Awaitable[str]) -> None:
    try:
        run.root_id = await delivered
    except Exception:  # not delivered (yet): the run itself reports that
        pass
