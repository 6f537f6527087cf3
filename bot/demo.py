"""``sopbot demo``: the sandbox, the bot, and a terminal chat as alice.

Type ``/sop …`` as in Mattermost; the bot's threads print as Mattermost would show them.
Commands come from the terminal, or from ``--script FILE`` / a pipe for a non-interactive run.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO

import httpx

from bot.runtime import Runtime
from bot.terminal import terminal_text
from sandbox.alertmanager.rules import firing
from sandbox.prometheus import PrometheusUnavailable
from sandbox.runner import Sandbox
from sandbox.scenarios import SCENARIOS

BANNER = """SOP Bot demo — a simulated RKE2 platform ({scenarios}) and the bot, on 127.0.0.1.
You are @alice in ~sop-alerts. Try:  /sop list   /sop vault-status   /sop help 5.1
  /sop search certificate expired   /sop health   /sop fix
  /scenario [name] (list, or break something)   /as [alice|bob] (switch user)
  /approve [N], /reject [N] (react on proposal #N, default the newest)   /quit
Anything not starting with / is posted to the channel as a message.
"""
PROPOSAL = re.compile(r"Proposal #(\d+)\b")


def _print_post(post, user: str, out: TextIO, edited: bool = False) -> None:
    indent = "    ↳ " if post.root_id else ""
    mark = " (edited)" if edited else ""
    lines = terminal_text(post.message).splitlines() or [""]
    out.write(f"{indent}@{user}{mark}: {lines[0]}\n")
    pad = " " * len(indent) + "  "
    for line in lines[1:]:
        out.write(f"{pad}{line}\n")
    for fid in post.file_ids:
        out.write(f"{pad}[attached file {fid}]\n")


class TerminalChat:
    """Shows the channel's new and edited posts since the last look."""

    def __init__(self, sandbox: Sandbox, out: TextIO):
        self.sandbox = sandbox
        self.out = out
        self.seen: dict[str, int] = {}  # post id → update_at shown
        self.ephemerals_shown: dict[str, int] = {}

    def show_new(self) -> None:
        state = self.sandbox.mattermost
        names = {u.id: u.username for u in state.users.values()}
        for post in state.posts_in(self.sandbox.channel_id):
            if self.seen.get(post.id) == post.update_at:
                continue
            edited = post.id in self.seen
            self.seen[post.id] = post.update_at
            _print_post(post, names.get(post.user_id, post.user_id), self.out, edited=edited)
        self.out.flush()


async def _react_on_proposal(sandbox: Sandbox, runtime: Runtime, user: str, line: str,
                             out: TextIO) -> None:
    """React as ``user`` on proposal #N (``/approve N``), or the newest post the bot offered
    reactions on."""
    command, *rest = line.split()
    state = sandbox.mattermost
    bot_id = state.user("sop-bot").id
    offered = [p for p in state.posts_in(sandbox.channel_id)
               if any(r.user_id == bot_id for r in state.reactions_on(p.id))]
    if rest:
        number = rest[0].lstrip("#")
        found = [p for p in offered if (m := PROPOSAL.search(p.message)) and m.group(1) == number]
        if len(rest) > 1 or not found:
            known = ", ".join(f"#{m.group(1)}" for p in offered if (m := PROPOSAL.search(p.message)))
            out.write(f"  (demo: no proposal #{number}; proposals: {known or 'none yet'})\n"
                      if len(rest) == 1 else f"  (demo: usage: {command} [N])\n")
            return
        offered = found
    if not offered:
        out.write("  (demo: no proposal to react on yet)\n")
        return
    emoji = "white_check_mark" if command == "/approve" else "x"
    state.react(user, offered[-1].id, emoji)
    out.write(f"  (@{user} reacted :{emoji}:)\n")
    # The bot hears the reaction over its websocket; give it a moment, then wait for its work.
    for _ in range(50):
        await asyncio.sleep(0.1)
        await runtime.bot.drain()  # type: ignore[union-attr]
        if not runtime.bot.busy:  # type: ignore[union-attr]
            break


PEOPLE = ("alice", "bob")


async def _scenario(sandbox: Sandbox, runtime: Runtime, names: list[str]) -> str:
    """``/scenario``: the list; ``/scenario NAME…``: break the platform and say what diagnoses it."""
    if not names:
        width = max(len(n) for n in SCENARIOS)
        rows = "".join(f"    {n:<{width}}  {sc.description}\n" for n, sc in SCENARIOS.items())
        return f"  (sandbox: scenarios, applied with /scenario NAME:)\n{rows}"
    registry = runtime.bot.registry  # type: ignore[union-attr]
    before = {a.labels["alertname"] for a in firing(sandbox.platform)}
    try:
        await sandbox.apply(*names)
    except ValueError as exc:
        return f"  (sandbox: {exc})\n"
    # The SOPs of the scenario's runbook section, else those handling the alerts it set off.
    alerted = [sop for a in firing(sandbox.platform) if a.labels["alertname"] not in before
               for sop in registry.for_alert(a.labels["alertname"])]
    lines = []
    for name in names:
        section = SCENARIOS[name].section
        sops = (registry.for_section(section) if section else []) or alerted
        diagnose = " or ".join(dict.fromkeys(f"/sop {s.id}" for s in sops)) or "/sop health"
        lines.append(f"  (sandbox: applied {name}: {SCENARIOS[name].description}; "
                     f"diagnose it with {diagnose})\n")
    return "".join(lines)


def _line_reader(stream: TextIO) -> Callable[[], Awaitable[str]]:
    """Lines from ``stream`` ("" at the end) read by a daemon thread: a thread blocked in
    readline must never keep the process from exiting (asyncio.to_thread's would, on Ctrl-C)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def put(line: str) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        except RuntimeError:  # the loop has closed: the demo is over
            pass

    def pump() -> None:
        try:
            for line in iter(stream.readline, ""):
                put(line)
        except (OSError, ValueError):  # closed underneath us
            pass
        put("")

    threading.Thread(target=pump, name="demo-input", daemon=True).start()
    return queue.get


async def run_demo(scenarios: list[str], script: Path | None = None,
                   stdin: TextIO | None = None, out: TextIO | None = None,
                   workdir: Path | None = None, prometheus: bool = False) -> int:
    """The demo until /quit, the end of the input, or one Ctrl-C (SIGINT) or SIGTERM.
    Its files go to a temporary directory removed at the end, unless ``workdir`` is given."""
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    try:
        sandbox = Sandbox(scenarios, workdir=workdir, prometheus=prometheus)  # workdir None: its own
    except ValueError as exc:
        print(f"sopbot demo: {exc}", file=sys.stderr)
        return 64
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stopped: list[int] = []

    def on_signal(sig: int) -> None:
        if not stopped:  # the first one stops the demo; cleanup must not be interrupted again
            stopped.append(sig)
            main.cancel()

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        try:
            await sandbox.start()
        except PrometheusUnavailable as exc:
            print(f"sopbot demo: {exc}", file=sys.stderr)
            return 69  # EX_UNAVAILABLE
        async with contextlib.AsyncExitStack() as started:  # started above: leaving stops it
            started.push_async_callback(sandbox.stop)
            runtime = Runtime(sandbox.settings())
            try:
                await runtime.start()
                await _chat(sandbox, runtime, scenarios, script, stdin, out)
            except asyncio.CancelledError:
                if not stopped:
                    raise
                out.write("\n(demo: stopping)\n")
                out.flush()
            finally:
                await runtime.stop()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return 130 if signal.SIGINT in stopped else 0


async def _chat(sandbox: Sandbox, runtime: Runtime, scenarios: list[str], script: Path | None,
                stdin: TextIO, out: TextIO) -> None:
    chat = TerminalChat(sandbox, out)
    out.write(BANNER.format(scenarios=", ".join(scenarios) or "healthy"))
    chat.show_new()
    interactive = script is None and stdin.isatty()
    user = "alice"
    with script.open() if script else contextlib.nullcontext(stdin) as lines:
        next_line = _line_reader(lines)
        async with httpx.AsyncClient(base_url=sandbox.mattermost_url, timeout=30) as http:
            while True:
                headers = {"Authorization": f"Bearer {sandbox.mattermost.tokens[user]}"}
                if interactive:
                    out.write(f"{user}> ")
                    out.flush()
                line = await next_line()
                if not line:
                    break
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if not interactive:
                    out.write(f"{user}> {line}\n")
                if line in ("/quit", "/exit"):
                    break
                head, *words = line.split()
                if head == "/as":
                    who = words[0].lstrip("@") if len(words) == 1 else ""
                    if who in PEOPLE:
                        user = who
                        out.write(f"  (demo: you are now @{user})\n")
                    else:
                        out.write(f"  (demo: you are @{user}; /as alice (an approver) or /as bob (not))\n")
                    continue
                if head in ("/approve", "/reject"):
                    await _react_on_proposal(sandbox, runtime, user, line, out)
                    chat.show_new()
                    continue
                if head == "/scenario":
                    out.write(await _scenario(sandbox, runtime, words))
                    continue
                if not line.startswith("/"):  # a chat message, as typed in Mattermost
                    await http.post("/api/v4/posts", headers=headers,
                                    json={"channel_id": sandbox.channel_id, "message": line})
                    await runtime.bot.drain()  # type: ignore[union-attr]
                    chat.show_new()
                    continue
                resp = await http.post("/api/v4/commands/execute", headers=headers,
                                       json={"channel_id": sandbox.channel_id, "command": line})
                if resp.status_code >= 400:
                    out.write(f"  (Mattermost: {resp.json().get('message', resp.text)}; the demo's own "
                              "commands are /as, /approve, /reject, /scenario, /quit)\n")
                    continue
                shown = chat.ephemerals_shown.get(user, 0)
                for eph in sandbox.mattermost.ephemerals_for(user)[shown:]:
                    text = terminal_text(eph.message).replace("\n", "\n      ")
                    out.write(f"  (only visible to you) {text}\n")
                chat.ephemerals_shown[user] = len(sandbox.mattermost.ephemerals_for(user))
                await runtime.bot.drain()  # type: ignore[union-attr]
                chat.show_new()
