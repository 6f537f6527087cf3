"""Two (or more) ``sopbot run`` processes on one real PostgreSQL store, against one sandbox
(Mattermost, Kubernetes, Vault in this process): what the two-replica test, the fault suite and
benchmarks/fault_suite.py share. Counting is done on what a user sees: the sandbox Mattermost's
posts (roots per alert group, posts per idempotency key) and the store's inbox."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml

from sandbox.ports import free_port
from sandbox.runner import Sandbox


@dataclass
class Replica:
    name: str
    port: int
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SOPBOT_")}
        env["HOSTNAME"] = self.name  # the Lease holder identity and claim owner, as in a pod
        self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--config", str(self.config)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=self.log.open("ab"))

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    async def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)

    async def ready(self, timeout_s: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        async with httpx.AsyncClient(timeout=2) as http:
            while loop.time() < deadline:
                if not self.alive:
                    break
                try:
                    if (await http.get(f"{self.url}/readyz")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"replica {self.name} not ready: {self.log.read_text(errors='replace')[-3000:]}")


@dataclass
class Pair:
    """The replicas, their shared store's URL and the sandbox."""

    sb: Sandbox
    db_url: str
    replicas: list[Replica] = field(default_factory=list)

    @classmethod
    def configure(cls, sb: Sandbox, db_url: str, workdir: Path, n: int = 2,
                  **sections: dict[str, Any]) -> "Pair":
        base = yaml.safe_load((sb.workdir / "sopbot.yaml").read_text())  # type: ignore[operator]
        base["store"] = {"url": db_url, "sslmode": "disable"}
        base["logging"] = {"level": "INFO"}
        base.setdefault("alertmanager", {})["reconcile_interval_s"] = 3600
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        pair = cls(sb, db_url)
        workdir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            port = sb.bot_port if i == 0 else free_port()  # replica 0 takes the slash commands
            cfg = dict(base, server=dict(base["server"], port=port, public_url=f"http://127.0.0.1:{port}"))
            path = workdir / f"replica-{i}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            pair.replicas.append(Replica(f"sopbot-{i}", port, path, workdir / f"replica-{i}.log"))
        return pair

    async def start(self) -> None:
        for r in self.replicas:
            r.start()
        await asyncio.gather(*(r.ready() for r in self.replicas))

    async def stop(self) -> None:
        await asyncio.gather(*(r.stop() for r in self.replicas))

    def logs(self) -> str:
        return "\n".join(f"--- {r.name}\n{r.log.read_text(errors='replace')[-4000:]}" for r in self.replicas)

    # -- what a user sees ----------------------------------------------------------------------
    def bot_posts(self) -> list[Any]:
        bot_id = self.sb.mattermost.user("sop-bot").id
        return [p for p in self.sb.mattermost.posts.values() if p.user_id == bot_id]

    def roots_by_group(self) -> dict[str, int]:
        return dict(Counter((p.props or {}).get("sopbot_alert_group") for p in self.bot_posts()
                            if not p.root_id and (p.props or {}).get("sopbot_alert_group")))

    def duplicate_keys(self) -> dict[str, int]:
        """Posts made under one idempotency key more than once (roots, diagnoses, proposals)."""
        keys = Counter((p.props or {}).get("sopbot_key") for p in self.bot_posts())
        return {k: n for k, n in keys.items() if k and n > 1}

    def diagnoses(self, root_id: str, sop_id: str) -> list[Any]:
        return [p for p in self.sb.mattermost.thread(root_id)
                if p.id != root_id and f"`{sop_id}`" in p.message and "**Proposal #" not in p.message]

    def duplicate_replies(self) -> dict[str, int]:
        """The same reply text twice in one thread (replies without a key, e.g. Resolved)."""
        seen = Counter((p.root_id, p.message) for p in self.bot_posts() if p.root_id)
        return {f"{r}: {m[:60]}": n for (r, m), n in seen.items() if n > 1}

    async def inbox(self) -> dict[str, int]:
        conn = await asyncpg.connect(self.db_url)
        try:
            rows = await conn.fetch("SELECT state, COUNT(*) AS n FROM alert_inbox GROUP BY state")
        finally:
            await conn.close()
        return {r["state"]: int(r["n"]) for r in rows}


async def post_webhook(url: str, token: str, body: dict[str, Any], timeout_s: float = 10) -> int:
    """One webhook as Alertmanager sends it; the status code (0: no answer)."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            resp = await http.post(f"{url}/alertmanager", json=body, headers={"Authorization": f"Bearer {token}"})
        return resp.status_code
    except httpx.HTTPError:
        return 0
