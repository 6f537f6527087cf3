"""Mattermost outage: while the sandbox Mattermost answers 500 to every post and channel request,
Alertmanager groups and ``/sop`` commands keep arriving and are acknowledged; then it recovers.

What it prints:
- what was acknowledged during the outage (webhooks 2xx, slash commands answered)
- the backlog /readyz showed at the end of the outage
- after recovery: seconds until every group has its root and every command its finished thread
- groups without a root / with more than one, commands without a thread, posts made twice
  (same ``props.sopbot_key``)

    python benchmarks/mattermost_outage.py [--seconds 60] [--groups 12] [--commands 4]

The bot runs in this process with its default retry settings (mattermost.retry_*), so the
recovery time is what production would see. Targets (issue 10 §2): 0 lost, 0 duplicates.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bot.runtime import Runtime  # noqa: E402
from sandbox.runner import Sandbox  # noqa: E402
from tests.alerts.support import alert, payload  # noqa: E402

OUTAGE = 10**9


async def main(seconds: float, groups: int, commands: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        async with Sandbox(scenarios=["vault-partially-sealed"], workdir=Path(tmp) / "sandbox") as sb:
            mm = dict(sb.bot_config()["mattermost"], websocket=False)
            rt = Runtime(sb.settings(mattermost=mm, alertmanager={"webhook_token": sb.alertmanager_token}))
            await rt.start()
            try:
                return await run(sb, rt, seconds, groups, commands)
            finally:
                await rt.stop()


async def run(sb: Sandbox, rt: Runtime, seconds: float, groups: int, commands: int) -> int:
    state = sb.mattermost
    bot_id = state.user("sop-bot").id
    for prefix in ("/api/v4/posts", "/api/v4/channels/"):
        state.fail_next(OUTAGE, status=500, path_prefix=prefix)
    start = time.monotonic()
    acked_hooks = acked_commands = 0
    # Distinct arguments: the same command twice would join the run under way (one thread).
    variants = ["/sop vault-status"] + [f"/sop vault-status replica={n}" for n in sb.platform.vault_names()]
    commands = min(commands, len(variants))
    steps = groups + commands
    async with httpx.AsyncClient(timeout=30) as http:
        for i in range(steps):
            if i % 2 == 0 and acked_hooks < groups or acked_commands >= commands:
                body = payload(f"outage-{acked_hooks}", [alert("OutageBenchAlert", node=f"node-{acked_hooks}")])
                resp = await http.post(f"{sb.bot_url}/alertmanager", json=body,
                                       headers={"Authorization": f"Bearer {sb.alertmanager_token}"})
                acked_hooks += resp.status_code == 200
            else:
                resp = await http.post(f"{sb.mattermost_url}/api/v4/commands/execute",
                                       headers={"Authorization": f"Bearer {state.tokens['alice']}"},
                                       json={"channel_id": sb.channel_id, "command": variants[acked_commands]})
                acked_commands += resp.status_code == 200 and "thread" in resp.json().get("text", "")
            await asyncio.sleep(max(start + seconds * (i + 1) / (steps + 1) - time.monotonic(), 0))
        await asyncio.sleep(max(start + seconds - time.monotonic(), 0))
        backlog = (await http.get(f"{rt.url}/readyz")).json().get("backlog")
    failed = sum(OUTAGE - f.remaining for f in state.faults)
    state.faults.clear()
    recovered = time.monotonic()
    print(f"outage {seconds:.0f} s: {acked_hooks}/{groups} webhooks answered 2xx, "
          f"{acked_commands}/{commands} /sop commands acknowledged, {failed} requests failed with 500")
    print(f"backlog at the end of the outage (/readyz): {backlog}")

    def bot_posts() -> list:
        return [p for p in state.posts.values() if p.user_id == bot_id]

    def done() -> bool:
        posts = bot_posts()
        roots = [p for p in posts if not p.root_id]
        alert_roots = {g for g in range(groups) for p in roots if f"node-{g}" in p.message}
        finished = [p for p in roots if "ran `/sop vault-status" in p.message and p.edit_at > 0]
        return len(alert_roots) == groups and len(finished) >= commands

    deadline = recovered + 900
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    took = time.monotonic() - recovered
    posts = bot_posts()
    roots = [p for p in posts if not p.root_id]
    per_group = collections.Counter(g for g in range(groups) for p in roots if f"node-{g}" in p.message)
    threads = [p for p in roots if "ran `/sop vault-status" in p.message]
    reported = [p for p in threads if any(r.message.startswith("####") for r in state.thread(p.id))]
    keys = collections.Counter(p.props.get("sopbot_key") for p in posts if p.props.get("sopbot_key"))
    print(f"after recovery: everything delivered in {took:.1f} s" if done() else
          f"after recovery: NOT everything delivered within {took:.0f} s")
    print(f"groups without a root: {sum(1 for g in range(groups) if per_group[g] == 0)}, "
          f"with more than one: {sum(1 for n in per_group.values() if n > 1)}")
    print(f"/sop commands with their report thread: {len(reported)}/{acked_commands}; "
          f"posts made twice: {sum(n - 1 for n in keys.values() if n > 1)}")
    lost = groups - len(per_group) + acked_commands - len(reported)
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--groups", type=int, default=12)
    ap.add_argument("--commands", type=int, default=4)
    a = ap.parse_args()
    sys.exit(asyncio.run(main(a.seconds, a.groups, a.commands)))
