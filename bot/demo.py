"""``sopbot demo``: the sandbox, the bot, and a terminal chat as alice.

Type ``/sop …`` as in Mattermost; the bot's threads print as Mattermost would show them.
Commands come from the terminal, or from ``--script FILE`` / a pipe for a non-interactive run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path
from typing import TextIO

import httpx

from bot.runtime import Runtime
from sandbox.runner import Sandbox

BANNER = """SOP Bot demo — a simulated RKE2 platform ({scenarios}) and the bot, on 127.0.0.1.
You are @alice in ~sop-alerts. Try:  /sop list   /sop vault-status   /sop help 5.1
  /sop search certificate expired   /sop health   /sop fix
  /scenario <name> (break something)   /as <alice|bob> (switch user)
  /approve, /reject (react on the newest proposal)   /quit
"""


def _print_post(post, user: str, out: TextIO, edited: bool = False) -> None:
    indent = "    ↳ " if post.root_id else ""
    mark = " (edited)" if edited else ""
    lines = post.message.splitlines() or [""]
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


async def _react_on_proposal(sandbox: Sandbox, runtime: Runtime, user: str, command: str,
                             out: TextIO) -> None:
    """React as ``user`` on the newest post the bot offered reactions on (a proposal)."""
    state = sandbox.mattermost
    bot_id = state.user("sop-bot").id
    offered = [p for p in state.posts_in(sandbox.channel_id)
               if any(r.user_id == bot_id for r in state.reactions_on(p.id))]
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


async def run_demo(scenarios: list[str], script: Path | None = None,
                   stdin: TextIO | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    stdin = stdin or sys.stdin
    workdir = Path(tempfile.mkdtemp(prefix="sopbot-demo-"))
    sandbox = Sandbox(scenarios, workdir=workdir)
    async with sandbox:
        runtime = Runtime(sandbox.settings())
        await runtime.start()
        chat = TerminalChat(sandbox, out)
        out.write(BANNER.format(scenarios=", ".join(scenarios) or "healthy"))
        chat.show_new()
        lines: TextIO = script.open() if script else stdin
        interactive = script is None and stdin.isatty()
        user = "alice"
        async with httpx.AsyncClient(base_url=sandbox.mattermost_url, timeout=30) as http:
            while True:
                headers = {"Authorization": f"Bearer {sandbox.mattermost.tokens[user]}"}
                if interactive:
                    out.write(f"{user}> ")
                    out.flush()
                line = await asyncio.to_thread(lines.readline)
                if not line:
                    break
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if not interactive:
                    out.write(f"{user}> {line}\n")
                if line in ("/quit", "/exit"):
                    break
                if line.startswith("/as "):
                    who = line.split()[1].lstrip("@")
                    if who in ("alice", "bob"):
                        user = who
                    else:
                        out.write("  (demo: the people here are alice and bob)\n")
                    continue
                if line in ("/approve", "/reject"):
                    await _react_on_proposal(sandbox, runtime, user, line, out)
                    chat.show_new()
                    continue
                if line.startswith("/scenario"):
                    names = line.split()[1:]
                    try:
                        await sandbox.apply(*names)
                        out.write(f"  (sandbox: applied {', '.join(names)})\n")
                    except ValueError as exc:
                        out.write(f"  (sandbox: {exc})\n")
                    continue
                resp = await http.post("/api/v4/commands/execute", headers=headers,
                                       json={"channel_id": sandbox.channel_id, "command": line})
                if resp.status_code >= 400:
                    out.write(f"  (Mattermost: {resp.json().get('message', resp.text)})\n")
                    continue
                shown = chat.ephemerals_shown.get(user, 0)
                for eph in sandbox.mattermost.ephemerals_for(user)[shown:]:
                    out.write(f"  (only visible to you) {eph.message}\n")
                chat.ephemerals_shown[user] = len(sandbox.mattermost.ephemerals_for(user))
                await runtime.bot.drain()  # type: ignore[union-attr]
                chat.show_new()
        await runtime.stop()
    return 0
