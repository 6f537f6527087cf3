"""A real Alertmanager process for integration tests: free loopback ports, a temp config whose
webhook receiver is the bot's ``/alertmanager`` with bearer credentials, short timers, no HA
gossip, storage in the test's tmp dir."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.clients.alertmanager import AlertmanagerClient
from sandbox.ports import free_port  # noqa: F401  (also imported from here by tests)

BINARIES = ("prometheus-alertmanager", "alertmanager")


def alertmanager_binary() -> str:
    for name in BINARIES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("the Alertmanager binary is missing: CI installs it with "
                "`apt-get install -y prometheus-alertmanager`; ./run-tests installs it (or prints the command)",
                pytrace=False)


class RealAlertmanager:
    def __init__(self, workdir: Path, webhook_url: str, token: str | None, *,
                 group_by: tuple[str, ...] = ("alertname", "group"),
                 group_wait: str = "1s", group_interval: str = "2s", repeat_interval: str = "5s"):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = {
            "route": {"receiver": "sopbot", "group_by": list(group_by), "group_wait": group_wait,
                      "group_interval": group_interval, "repeat_interval": repeat_interval},
            "receivers": [{"name": "sopbot", "webhook_configs": [{
                "url": webhook_url, "send_resolved": True,
                **({"http_config": {"authorization": {"type": "Bearer", "credentials": token}}}
                   if token else {}),
            }]}],
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.client = AlertmanagerClient(self.url)

    async def __aenter__(self) -> "RealAlertmanager":
        binary = alertmanager_binary()
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "alertmanager.yml"
        cfg.write_text(yaml.safe_dump(self.config))
        self.log = open(self.workdir / "alertmanager.log", "wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={cfg}", f"--storage.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", f"--web.external-url={self.url}",
             "--cluster.listen-address=", "--log.level=debug"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ})
        async with httpx.AsyncClient() as http:
            for _ in range(200):  # bounded: ~10 s
                if self.proc.poll() is not None:
                    raise RuntimeError(f"alertmanager exited: {self.logs()[-2000:]}")
                try:
                    if (await http.get(f"{self.url}/-/ready")).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"alertmanager not ready: {self.logs()[-2000:]}")

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def logs(self) -> str:
        return (self.workdir / "alertmanager.log").read_text(errors="replace")

    async def fire(self, name: str, *, resolved: bool = False, now: datetime | None = None,
                   **labels: str) -> None:
        """Push one alert as Prometheus does; ``resolved`` sends it with endsAt in the past.
        ``now`` lets HA peers receive the very same alert, as Prometheus sends it to both."""
        now = now or datetime.now(timezone.utc)
        alert: dict[str, Any] = {
            "labels": {"alertname": name, **labels},
            "annotations": {"summary": f"{name} {' '.join(f'{k}={v}' for k, v in labels.items())}"},
            "generatorURL": "http://prometheus.test/graph?g0.expr=up",
            "startsAt": (now - timedelta(minutes=1)).isoformat(),
        }
        alert["endsAt"] = (now - timedelta(seconds=1) if resolved else now + timedelta(minutes=5)).isoformat()
        await self.client.post_alerts([alert])
