"""Health check fixtures: a real Alertmanager process (CI installs prometheus-alertmanager) and a
helper that runs the daily health check against the sandbox the way the bot does."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import yaml

from bot.clients.alertmanager import AlertmanagerClient
from sandbox.ports import free_port


class Alertmanager:
    """prometheus-alertmanager on a loopback port, no receivers that reach anywhere."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = AlertmanagerClient(self.url)

    async def start(self) -> None:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            pytest.fail("prometheus-alertmanager is missing: ./run-tests installs it with apt-get (or prints the command)",
                        pytrace=False)
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "alertmanager.yml"
        cfg.write_text(yaml.safe_dump({"route": {"receiver": "null"}, "receivers": [{"name": "null"}]}))
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        async with httpx.AsyncClient() as http:
            for _ in range(200):  # bounded wait for readiness, not a timed assertion
                if self.proc.poll() is not None:
                    raise RuntimeError("alertmanager exited at start")
                try:
                    if (await http.get(f"{self.url}/-/ready")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("alertmanager did not become ready")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    async def fire(self, name: str, **labels: str) -> None:
        now = datetime.now(timezone.utc)
        await self.client.post_alerts([{
            "labels": {"alertname": name, **labels}, "annotations": {},
            "startsAt": (now - timedelta(minutes=1)).isoformat(),
            "endsAt": (now + timedelta(minutes=10)).isoformat()}])


@pytest.fixture
async def alertmanager(tmp_path: Path) -> AsyncIterator[Alertmanager]:
    am = Alertmanager(tmp_path / "alertmanager")
    await am.start()
    try:
        yield am
    finally:
        await am.client.close()
        am.stop()


def bad_token_kubeconfig(sandbox) -> Path:
    """The sandbox's kubeconfig with a token the API server refuses (401)."""
    doc = yaml.safe_load(sandbox.kubeconfig.read_text())
    doc["users"][0]["user"]["token"] = "not-the-token"
    path = sandbox.workdir / "bad-kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def am_section(sandbox, alertmanager: Alertmanager) -> dict:
    """The sandbox's alertmanager config section plus the Alertmanager's URL."""
    return {**sandbox.bot_config()["alertmanager"], "url": alertmanager.url}


@pytest.fixture
def settings(sandbox, alertmanager):
    """The bot's settings for the sandbox, with the Alertmanager."""
    return sandbox.settings(alertmanager=am_section(sandbox, alertmanager))


@pytest.fixture
def run_daily(settings):
    """Run the composed daily check as the bot does (fresh clients, the per-run cache)."""

    async def go(settings=settings, **kw):
        from bot.health import COMPOSITIONS, run_health
        from bot.registry import load_handlers
        from bot.runtime import build_context

        registry = load_handlers()
        ctx = await build_context(settings)
        ctx.alertmanager = AlertmanagerClient(settings.alertmanager.url) if settings.alertmanager.url else None
        try:
            return await run_health("daily", COMPOSITIONS["daily"], registry, ctx, **kw)
        finally:
            if ctx.alertmanager is not None:
                await ctx.alertmanager.close()
            await ctx.close()

    return go
