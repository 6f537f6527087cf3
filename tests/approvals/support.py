"""Helpers for driving proposals through the sandbox Mattermost as people do."""

from __future__ import annotations

import re
from typing import Any

from tests.approvals.conftest import wait_for


def bot_posts(sb: Any) -> list[Any]:
    bot_id = sb.mattermost.user("sop-bot").id
    return [p for p in sb.mattermost.posts_in(sb.channel_id) if p.user_id == bot_id]


def proposals(sb: Any) -> list[Any]:
    return [p for p in bot_posts(sb) if re.search(r"\*\*Proposal #\d+", p.message)]


async def propose(sb: Any, user: str, text: str, n: int = 1) -> Any:
    """Run ``/sop fix …`` as ``user``; return the n-th proposal post once it has its reactions."""
    before = len(proposals(sb))
    reply = await sb.mattermost.run_command(user, "sop-alerts", f"/sop fix {text}")
    assert "Planning" in reply.get("text", ""), reply
    post = await wait_for(lambda: len(proposals(sb)) >= before + n and proposals(sb)[before + n - 1],
                          what=f"proposal for {text}")
    await wait_for(lambda: {"white_check_mark", "x"} <= {r.emoji_name for r in sb.mattermost.reactions_on(post.id)},
                   what="the bot's reactions")
    return post


def post(sb: Any, post_id: str) -> Any:
    return sb.mattermost.posts[post_id]


def replies(sb: Any, root_id: str) -> list[str]:
    return [p.message for p in sb.mattermost.thread(root_id)[1:]]


async def wait_reply(sb: Any, root_id: str, needle: str, timeout: float = 10.0) -> str:
    return await wait_for(lambda: next((m for m in replies(sb, root_id) if needle in m), None),
                          timeout=timeout, what=f"a reply containing {needle!r}")


async def wait_state(sb: Any, post_id: str, state: str) -> str:
    return await wait_for(lambda: f"**{state}**" in post(sb, post_id).message and post(sb, post_id).message,
                          what=f"proposal to be {state}")
