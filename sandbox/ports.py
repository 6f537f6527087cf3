"""Loopback ports for servers started later (the bot, Prometheus, Alertmanager).

A port the OS hands out for ``bind(0)`` comes from the ephemeral range, the same range it uses
for outgoing connections: in a long test run one of the suite's own connections can take it
before the server binds ("address already in use"). Ports below that range are never handed
out for connections, so a random free one there stays free until someone binds it on purpose.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

HOST = "127.0.0.1"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(host: str = HOST) -> int:
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randint(max(1024, low - 12000), low - 1)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # nothing free below the range: let the OS choose
        s.bind((host, 0))
        return int(s.getsockname()[1])
