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
  /sop search certificate expired   /scenario <name> (break something)   /quit
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
        async with httpx.AsyncClient(base_url=sandbox.mattermost_url, timeout=30) as http:
            headers = {"Authorization": f"Bearer {sandbox.mattermost.tokens['alice']}"}
            while True:
                if interactive:
                    out.write("alice> ")
                    out.flush()
                line = await asyncio.to_thread(lines.readline)
                if not line:
                    break
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if not interactive:
                    out.write(f"alice> {line}\n")
                if line in ("/quit", "/exit"):
                    break
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
                for eph in sandbox.mattermost.ephemerals_for("alice")[len(getattr(chat, "_eph", [])):]:
                    out.write(f"  (only visible to you) {eph.message}\n")
                chat._eph = sandbox.mattermost.ephemerals_for("alice")  # type: ignore[attr-defined]
                await runtime.bot.drain()  # type: ignore[union-attr]
                chat.show_new()
        await runtime.stop()
    return 0
