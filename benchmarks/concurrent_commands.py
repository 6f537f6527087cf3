"""Thirty people send ``/sop health`` at once (issue 10: 30 runs, 304 Kubernetes requests, 30
reports). Through the sandbox Mattermost and the bot's real slash endpoint; prints the runs,
reports and Kubernetes requests it cost, next to one ``/sop health`` alone.

    python benchmarks/concurrent_commands.py [--requests 30]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import httpx

from bot.clients.kube import KubeClient
from bot.runtime import Runtime
from sandbox.runner import Sandbox

CALLS = 0


def count_kube_calls() -> None:
    real = KubeClient._call

    async def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        global CALLS
        CALLS += 1
        return await real(self, *args, **kwargs)

    KubeClient._call = counted  # type: ignore[method-assign]


async def burst(sb: Sandbox, rt: Runtime, n: int) -> tuple[int, int, list[str], float]:
    global CALLS
    CALLS = 0
    bot_id = sb.mattermost.user("sop-bot").id
    before = {p.id for p in sb.mattermost.posts_in(sb.channel_id)}
    users = ["alice", "bob"]
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=sb.mattermost_url, timeout=60) as http:
        replies = await asyncio.gather(*(http.post(
            "/api/v4/commands/execute",
            headers={"Authorization": f"Bearer {sb.mattermost.tokens[users[i % 2]]}"},
            json={"channel_id": sb.channel_id, "command": "/sop health"}) for i in range(n)))
    await rt.bot.drain(timeout_s=120)
    took = time.perf_counter() - start
    roots = [p for p in sb.mattermost.posts_in(sb.channel_id)
             if p.user_id == bot_id and not p.root_id and p.id not in before]
    return CALLS, len(roots), [r.json()["text"] for r in replies], took


async def main(n: int) -> None:
    count_kube_calls()
    with tempfile.TemporaryDirectory() as tmp:
        async with Sandbox(workdir=Path(tmp) / "sandbox") as sb:
            rt = Runtime(sb.settings())
            await rt.start()
            try:
                alone, _, _, t1 = await burst(sb, rt, 1)
                calls, reports, texts, tn = await burst(sb, rt, n)
            finally:
                await rt.stop()
    started = sum("Running the" in t for t in texts)
    joined = sum("with the same arguments is already" in t for t in texts)
    print(f"one /sop health alone: {alone} Kubernetes requests, {t1:.2f} s")
    print(f"{n} concurrent /sop health: {started} run started, {joined} joined it, "
          f"{reports} report(s), {calls} Kubernetes requests, {tn:.2f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=30)
    asyncio.run(main(ap.parse_args().requests))
