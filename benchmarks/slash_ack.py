"""Slash-command acknowledgement latency and the bot's idle RSS.

The sandbox (Kubernetes, Vault, Mattermost) runs in this process; the bot runs as its own
process (``sopbot run`` with the sandbox's generated config), so the RSS is the bot's alone.
1,000 ``/sop vault-status`` commands are POSTed form-encoded as Mattermost sends them, one at a
time; the latency is until the bot's HTTP answer (the SOP itself runs after answering).

    python benchmarks/slash_ack.py [--commands 1000]

Targets (issue 3): p99 < 50 ms, idle RSS < 90 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bot_process import memory_mb, pct, start_bot, stop_bot, wait_ready  # noqa: E402
from sandbox.runner import Sandbox  # noqa: E402


async def main(n: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="sopbot-bench-"))
    async with Sandbox(workdir=work) as sb:
        cfg = yaml.safe_load((work / "sopbot.yaml").read_text())
        # Let the background runs drain quickly; acknowledgement does not depend on it.
        cfg["mattermost"]["rate_limit_per_s"] = 1000
        (work / "bench.yaml").write_text(yaml.safe_dump(cfg))
        proc = start_bot(work / "bench.yaml", work / "bot.log")
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
                await wait_ready(http, sb.bot_url, work / "bot.log")
                await asyncio.sleep(1.0)
                idle = memory_mb(proc.pid)
                form = {"token": sb.mattermost.slash_token, "team_id": sb.team_id,
                        "team_domain": "platform", "channel_id": sb.channel_id,
                        "channel_name": "sop-alerts", "user_id": sb.mattermost.user("alice").id,
                        "user_name": "alice", "command": "/sop", "text": "vault-status",
                        "response_url": f"{sb.mattermost_url}/hooks/commands/x", "trigger_id": "t"}
                lat: list[float] = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    async with http.post(f"{sb.bot_url}/mattermost/command", data=form) as r:
                        await r.read()
                        assert r.status == 200, r.status
                    lat.append((time.perf_counter() - t0) * 1000)
                busy = memory_mb(proc.pid)
                # The same command from one user coalesces onto the run in progress and the
                # per-user limit refuses the rest: wait until the threads stop growing.
                deadline = time.monotonic() + 120
                bot_id = sb.mattermost.user("sop-bot").id
                seen, still = -1, 0
                while time.monotonic() < deadline and still < 15:
                    replies = [p for p in sb.mattermost.posts_in(sb.channel_id) if p.user_id == bot_id and p.root_id]
                    seen, still = len(replies), (still + 1 if len(replies) == seen else 0)
                    await asyncio.sleep(0.2)
                roots = [p for p in sb.mattermost.posts_in(sb.channel_id) if p.user_id == bot_id and not p.root_id]
        finally:
            await stop_bot(proc)
    print(f"commands acknowledged : {n}")
    print(f"ack latency p50       : {statistics.median(lat):.2f} ms")
    print(f"ack latency p99       : {pct(lat, 99):.2f} ms   (target < 50 ms)")
    print(f"ack latency max       : {max(lat):.2f} ms")
    print(f"threads               : {len(roots)} for {n} identical commands (coalesced onto the run in "
          f"progress, the rest refused by the per-user limit), {len(replies)} replies in them")
    print(f"bot idle RSS          : {idle:.1f} MB   (target < 90 MB)")
    print(f"bot RSS after the run : {busy:.1f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--commands", type=int, default=1000)
    asyncio.run(main(parser.parse_args().commands))
