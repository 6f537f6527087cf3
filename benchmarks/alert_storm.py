"""Alert storm: 2,000 alerts in 300 groups replayed as Alertmanager webhooks, with repeats and HA
duplicates, against the bot (its own process, ``sopbot run``) and the sandbox (this process).

What it prints:
- webhook 2xx latency p50/p99 (client side, until the bot's answer: stored durably, not yet processed),
  next to the floor: a SQLite ``synchronous=FULL`` commit on the same disk, measured during the storm;
  both in a sender process of their own (as Alertmanager is), not in this one, busy with the sandbox
- webhook → thread: first webhook of a group until its root post exists in Mattermost (groups with
  their own thread, from the post's create_at), or until the bot filed it in the storm thread
  (stormed groups, read from the bot's database every 20 ms)
- alerts lost (fingerprints sent but absent from the bot's state), duplicate root posts, and order:
  a fifth of the groups resolve at the end; groups whose final state is not their last notification's
- peak posts/s in any 1 s window vs the chat rate limit, and the bot's peak RSS (VmHWM)

    python benchmarks/alert_storm.py [--alerts 2000] [--groups 300] [--seconds 60]

``--seconds`` compresses the storm (default 60 s, as a real one). Targets (issue 10): 2xx p99 <=
10 ms, 0 lost, 0 duplicates, 0 out of order, never over the rate limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bot_process import memory_mb, pct, start_bot, stop_bot, wait_ready  # noqa: E402
from bot.store import inbox_path  # noqa: E402
from sandbox.mattermost.state import RateLimit  # noqa: E402
from sandbox.runner import Sandbox  # noqa: E402

# The runbook's alerts and the labels their SOPs take.
ALERTS = [("VaultSealed", {"namespace": "vault"}), ("VaultLeaderLost", {"namespace": "vault"}),
          ("NodeDiskPressure", {"node": "rke2-general-{i}"}), ("NodeDiskCritical", {"node": "rke2-general-{i}"}),
          ("EtcdMemberDown", {"instance": "10.0.0.{i}:2379"}), ("EtcdHighLatency", {"instance": "10.0.0.{i}:2379"}),
          ("CertNotReady", {"namespace": "ns-{i}", "certificate": "cert-{i}"}),
          ("PostgreSQLDown", {"namespace": "db-{i}"}), ("ReplicationLag", {"namespace": "db-{i}"}),
          ("HighConnections", {"namespace": "db-{i}"}), ("PrometheusStorageAlmostFull", {"namespace": "monitoring"}),
          ("LokiDown", {"namespace": "monitoring"}), ("AlloyDown", {"namespace": "monitoring", "pod": "alloy-{i}"})]
# Extra environment for the bot process, e.g. PYTHONASYNCIODEBUG=1 (--asyncio-debug).
ENV: dict[str, str] = {}
SEVERITY = ["critical", "warning", "info"]


def plan(n_alerts: int, n_groups: int, seconds: float, rng: random.Random) -> tuple[list[tuple[float, dict[str, Any]]], dict[str, set[str]]]:
    """(send at, payload) in time order, and every group's fingerprints. A fifth of the groups
    resolve after their repeat: their threads must end resolved (order kept per group)."""
    sizes = [1] * n_groups
    for _ in range(n_alerts - n_groups):
        sizes[rng.randrange(n_groups)] += 1
    start = datetime.now(timezone.utc)
    sends: list[tuple[float, dict[str, Any]]] = []
    fingerprints: dict[str, set[str]] = {}
    for g, size in enumerate(sizes):
        name, labels = ALERTS[g % len(ALERTS)]
        key = f'{{}}:{{alertname="{name}", group="g{g}"}}'
        alerts = []
        for k in range(size):
            lab = {"alertname": name, "group": f"g{g}", "severity": rng.choice(SEVERITY),
                   **{l: v.format(i=(g * 7 + k) % 250) for l, v in labels.items()}, "replica": f"r{k}"}
            alerts.append({"status": "firing", "labels": lab,
                           "annotations": {"summary": f"{name} in group g{g}"},
                           "startsAt": (start - timedelta(seconds=k)).isoformat(),
                           "endsAt": "0001-01-01T00:00:00Z",
                           "generatorURL": "http://prometheus.bench/graph?g0.expr=up",
                           "fingerprint": f"{g:05x}{k:011x}"})
        fingerprints[key] = {a["fingerprint"] for a in alerts}

        def body(subset: list[dict[str, Any]], status: str = "firing") -> dict[str, Any]:
            return {"version": "4", "groupKey": key, "truncatedAlerts": 0, "status": status,
                    "receiver": "sopbot", "groupLabels": {"alertname": name, "group": f"g{g}"},
                    "commonLabels": {"alertname": name, "group": f"g{g}"}, "commonAnnotations": {},
                    "externalURL": "http://alertmanager.bench:9093", "alerts": subset}
        first = rng.uniform(0, seconds * 0.7)
        half = alerts[: max(1, (size + 1) // 2)]
        # group_wait: the first half; group_interval later: all of them; repeat_interval: again.
        steps = [(first, body(half)), (first + seconds * 0.05, body(alerts)), (first + seconds * 0.25, body(alerts))]
        if rng.random() < 0.2:
            ended = (start + timedelta(seconds=first + seconds * 0.3)).isoformat()
            steps.append((first + seconds * 0.3, body([{**a, "status": "resolved", "endsAt": ended}
                                                       for a in alerts], "resolved")))
        for at, payload in steps:
            sends.append((at, payload))
            if rng.random() < 0.3:  # the HA peer sends the same notification
                sends.append((at + rng.uniform(0, 0.01), payload))
    sends.sort(key=lambda s: s[0])
    return sends, fingerprints


async def main(n_alerts: int, n_groups: int, seconds: float, seed: int) -> None:
    rng = random.Random(seed)
    sends, fingerprints = plan(n_alerts, n_groups, seconds, rng)
    work = Path(tempfile.mkdtemp(prefix="sopbot-storm-"))
    async with Sandbox(workdir=work / "sandbox") as sb:
        cfg = yaml.safe_load((work / "sandbox" / "sopbot.yaml").read_text())
        cfg["logging"] = {"level": "WARNING"}
        # No reconciliation: the sandbox has no Alertmanager holding these alerts, so it would
        # close every thread and hide a group left FIRING after its resolution (the order check).
        cfg.setdefault("alertmanager", {})["reconcile_interval_s"] = 86400
        rate_limit = cfg["mattermost"].get("rate_limit_per_s", 10.0)
        # The server enforces its limit as a real Mattermost does (10/s, burst 100 by default);
        # count what it refuses: "over the limit" means 429s.
        sb.mattermost.rate_limit = RateLimit(per_sec=rate_limit, burst=100)
        refused = [0]
        check = sb.mattermost.check_rate

        def counting(key: str, user: Any) -> Any:
            decision = check(key, user)
            if decision is not None and not decision.allowed:
                refused[0] += 1
            return decision
        sb.mattermost.check_rate = counting  # type: ignore[method-assign]
        (work / "bench.yaml").write_text(yaml.safe_dump(cfg))
        db_path = Path(cfg["store"]["path"])
        inbox_db = inbox_path(db_path)  # the webhook inbox's own file (bot.store)
        proc = start_bot(work / "bench.yaml", work / "bot.log", env=ENV)
        storm_seen: dict[str, float] = {}
        try:
            async with aiohttp.ClientSession() as http:
                await wait_ready(http, sb.bot_url, work / "bot.log")
                watching = asyncio.create_task(watch_storm(db_path, storm_seen))
                t0 = time.monotonic()
                # The sender (and the floor) in a process of its own, as Alertmanager is: the
                # figures are the bot's and the disk's, not this process's sandbox at work.
                (work / "sends.json").write_text(json.dumps({"url": f"{sb.bot_url}/alertmanager",
                                                             "token": sb.alertmanager_token,
                                                             "floor": str(work / "floor.db"),
                                                             "sends": sends}))
                sender = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--send", str(work / "sends.json"),
                    stdout=asyncio.subprocess.PIPE)
                out, _ = await sender.communicate()
                if sender.returncode != 0:
                    raise SystemExit(f"the sender failed ({sender.returncode})")
                sent = json.loads(out)
                latencies, failures, first_sent = sent["latencies"], sent["failures"], sent["first_sent"]
                last_status = {k: tuple(v) for k, v in sent["last_status"].items()}
                floor_times = sent["floor"]
                sent_in = time.monotonic() - t0
                if not inbox_db.exists():  # a version of the bot with the inbox in the main file
                    inbox_db = db_path
                # Processing done: nothing pending in the inbox and every group filed.
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    if db_count(inbox_db, "SELECT COUNT(*) FROM alert_inbox WHERE state='pending'") == 0 \
                            and db_count(db_path, "SELECT COUNT(DISTINCT group_key) FROM alert_groups") >= n_groups:
                        break
                    await asyncio.sleep(0.1)
                processed_in = time.monotonic() - t0
                # Then the diagnoses drain at the chat rate limit; wait until posting goes quiet.
                quiet_since, last = time.monotonic(), len(sb.mattermost.posts)
                while time.monotonic() - quiet_since < 5 and time.monotonic() < deadline:
                    await asyncio.sleep(0.25)
                    if len(sb.mattermost.posts) != last:
                        last, quiet_since = len(sb.mattermost.posts), time.monotonic()
                drained_in = time.monotonic() - t0
                watching.cancel()
                rss = memory_mb(proc.pid, "VmHWM")
        finally:
            await stop_bot(proc)

        bot_id = sb.mattermost.user("sop-bot").id
        posts = [p for p in sb.mattermost.posts.values() if p.user_id == bot_id]
        roots_by_group: dict[str, list] = {}
        for p in posts:
            key = (p.props or {}).get("sopbot_alert_group")
            if key and not p.root_id:
                roots_by_group.setdefault(key, []).append(p)
        storms = [p for p in posts if (p.props or {}).get("sopbot_alert_storm") and not p.root_id]
        duplicates = sum(len(v) - 1 for v in roots_by_group.values())
        root_latency = [min(p.create_at for p in v) - first_sent[k] * 1000 for k, v in roots_by_group.items()]
        storm_latency = [(storm_seen[k] - first_sent[k]) * 1000 for k in storm_seen if k not in roots_by_group]

        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        have: dict[str, set[str]] = {}
        final: dict[str, str] = {}
        for key, data, state in db.execute("SELECT group_key, data, state FROM alert_groups ORDER BY id"):
            have.setdefault(key, set()).update(json.loads(data)["alerts"])
            final[key] = state  # the group's latest thread
        expected = {"firing": "open", "resolved": "resolved"}
        out_of_order = sorted(k for k, (_, status) in last_status.items() if final.get(k) != expected[status])
        n_resolved = sum(1 for _, status in last_status.values() if status == "resolved")
        db.close()
        failed_entries = db_count(inbox_db, "SELECT COUNT(*) FROM alert_inbox WHERE state!='done'")
        lost = sum(len(fps - have.get(k, set())) for k, fps in fingerprints.items())

        times = sorted(sb.mattermost.post_times("sop-bot"))
        peak, peak5, j, j5 = 0, 0, 0, 0
        for i, t in enumerate(times):
            while times[j] <= t - 1.0:  # the window (t - 1 s, t]
                j += 1
            while times[j5] <= t - 5.0:
                j5 += 1
            peak, peak5 = max(peak, i - j + 1), max(peak5, i - j5 + 1)
        k = int(rate_limit) + 1  # the shortest span holding limit+1 posts: < 1 s is over the limit
        span = min((times[i + k - 1] - times[i] for i in range(len(times) - k + 1)), default=float("nan"))

    n_webhooks = len(sends)
    print(f"storm                   : {n_alerts} alerts in {n_groups} groups, {n_webhooks} webhooks "
          f"(repeats and HA duplicates) sent over {sent_in:.1f} s")
    print(f"webhook 2xx latency     : p50 {statistics.median(latencies):.1f} ms, p99 {pct(latencies, 99):.1f} ms, "
          f"max {max(latencies):.1f} ms   (target p99 <= 10 ms)")
    print(f"SQLite commit floor     : p50 {pct(floor_times, 50):.1f} ms, p99 {pct(floor_times, 99):.1f} ms, "
          f"max {max(floor_times, default=float('nan')):.1f} ms   ({len(floor_times)} synchronous=FULL commits "
          f"of one row on the same disk, during the storm)")
    print(f"non-2xx answers         : {failures or 'none'}")
    print(f"webhook -> own root post: p50 {pct(root_latency, 50):.0f} ms, p99 {pct(root_latency, 99):.0f} ms "
          f"({len(root_latency)} groups)")
    print(f"webhook -> storm thread : p50 {pct(storm_latency, 50):.0f} ms, p99 {pct(storm_latency, 99):.0f} ms "
          f"({len(storm_latency)} groups, {len(storms)} storm thread(s))")
    print(f"alerts lost             : {lost}   (inbox entries not done: {failed_entries})")
    print(f"duplicate root posts    : {duplicates}")
    print(f"per-group order         : {len(out_of_order)} groups not in their last notification's state "
          f"({n_resolved} groups resolved last){': ' + ', '.join(out_of_order[:5]) if out_of_order else ''}")
    print(f"bot posts               : {len(posts)} ({len(times)} creations), all processed after {processed_in:.1f} s, "
          f"posting quiet after {drained_in:.1f} s")
    print(f"peak posts/s            : {peak} in any 1 s window, {peak5 / 5:.1f}/s over any 5 s "
          f"(limit {rate_limit:g}/s); shortest span of {k} posts {span:.3f} s (server-side arrival "
          f"jitter); 429s from the server: {refused[0]}")
    print(f"bot peak RSS            : {rss:.1f} MB")
    print(f"work dir                : {work}")


class CommitFloor:
    """What one durable commit costs on this disk, now: a thread committing one row at a time
    (WAL, synchronous=FULL, as the bot's store) while the storm runs."""

    def __init__(self, path: Path, every_s: float = 0.01):
        self.path, self.every_s = path, every_s
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-floor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS t (at REAL, body TEXT)")
        while not self._stop.wait(self.every_s):
            start = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?, ?)", (time.time(), "x" * 2000))
            db.execute("COMMIT")
            self.times.append((time.perf_counter() - start) * 1000)
        db.close()


async def send_all(url: str, token: str, sends: list[tuple[float, dict[str, Any]]], floor_db: Path) -> dict[str, Any]:
    """The sender process: every webhook at its time, retried as Alertmanager does (what was
    not a 2xx), each answer's latency; the commit floor measured meanwhile, in this process."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    latencies: list[float] = []
    last_status: dict[str, tuple[int, str]] = {}  # group → (inbox id, status) of its last accepted
    failures: dict[int, int] = {}
    first_sent: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as http:
        async def send(at: float, body: dict[str, Any], t0: float) -> None:
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            first_sent.setdefault(body["groupKey"], time.time())
            data = json.dumps(body).encode()
            for _attempt in range(5):
                start = time.perf_counter()
                async with http.post(url, data=data, headers=headers) as r:
                    answer = await r.read()
                latencies.append((time.perf_counter() - start) * 1000)
                if r.status < 300:
                    entry = (json.loads(answer)["id"], body["status"])
                    last_status[body["groupKey"]] = max(last_status.get(body["groupKey"], entry), entry)
                    return
                failures[r.status] = failures.get(r.status, 0) + 1
                await asyncio.sleep(0.5)

        floor = CommitFloor(floor_db)
        floor.start()
        t0 = time.monotonic()
        await asyncio.gather(*(send(at, body, t0) for at, body in sends))
        floor.stop()
    return {"latencies": latencies, "last_status": last_status, "failures": failures,
            "first_sent": first_sent, "floor": floor.times}


def db_count(path: Path, sql: str) -> int:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            return int(db.execute(sql).fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return -1


async def watch_storm(path: Path, seen: dict[str, float]) -> None:
    """When each group got its thread (own root or the storm thread), as the bot recorded it."""
    while True:
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
            try:
                now = time.time()
                for (key,) in db.execute("SELECT group_key FROM alert_groups WHERE root_id IS NOT NULL"):
                    seen.setdefault(key, now)
            finally:
                db.close()
        except sqlite3.Error:
            pass
        await asyncio.sleep(0.02)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--groups", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--send", type=Path, help=argparse.SUPPRESS)  # the sender process
    parser.add_argument("--asyncio-debug", action="store_true",
                        help="log the bot's slow callbacks (>100 ms) to bot.log in the work dir")
    a = parser.parse_args()
    if a.send:
        job = json.loads(a.send.read_text())
        print(json.dumps(asyncio.run(send_all(job["url"], job["token"], job["sends"], Path(job["floor"])))))
        raise SystemExit(0)
    if a.asyncio_debug:
        ENV["PYTHONASYNCIODEBUG"] = "1"
    asyncio.run(main(a.alerts, a.groups, a.seconds, a.seed))
