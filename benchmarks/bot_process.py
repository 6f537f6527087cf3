"""What the benchmarks share: the bot as its own process (``sopbot run``), its memory, percentiles."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp


def start_bot(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # The log goes to a file: an unread pipe fills up and blocks the bot.
    return subprocess.Popen([sys.executable, "-m", "bot.cli", "run", "--config", str(config)],
                            env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=log.open("wb"))


async def wait_ready(http: aiohttp.ClientSession, bot_url: str, log: Path, tries: int = 400) -> None:
    for _ in range(tries):
        try:
            async with http.get(f"{bot_url}/readyz") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise SystemExit(f"bot did not start: {log.read_text()[-2000:]}")


async def stop_bot(proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    proc.terminate()
    # Without blocking the loop: the bot still talks to the in-process sandbox while stopping.
    await asyncio.to_thread(proc.wait, timeout_s)


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """VmRSS (now) or VmHWM (peak) of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]
