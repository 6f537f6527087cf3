"""``sopbot run`` as its own process: a config it cannot run exits 78 with one line before any
network call; while it waits for an unreachable Mattermost it is alive but not ready, and
SIGTERM / SIGINT end it within seconds."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sandbox.ports import free_port

SOPBOT = [sys.executable, "-m", "bot.cli", "run"]


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPBOT_")}
    env.update({f"SOPBOT_{k}": v for k, v in settings.items()})
    return env


def run_to_exit(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(SOPBOT, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=20)


def test_no_config_at_all_is_one_line_and_exit_78(tmp_path):
    started = time.monotonic()
    proc = run_to_exit(clean_env(), tmp_path)
    assert proc.returncode == 78
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sopbot: config error: mattermost.token: not set")
    assert time.monotonic() - started < 15  # not a retry loop


def test_a_malformed_mattermost_url_names_the_field(tmp_path):
    proc = run_to_exit(clean_env(MATTERMOST__TOKEN="t", MATTERMOST__URL="http://"), tmp_path)
    assert proc.returncode == 78
    assert proc.stderr.strip().splitlines() == [
        "sopbot: config error: mattermost.url: Value error, has no host name (got 'http://')"]


@pytest.fixture
def mattermost_401() -> Iterator[str]:
    """A server that refuses every token, as Mattermost does a revoked one."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b'{"id":"api.context.session_expired.app_error","status_code":401}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_refused_token_at_start_exits_78_without_retrying(tmp_path, mattermost_401):
    proc = run_to_exit(clean_env(MATTERMOST__TOKEN="revoked", MATTERMOST__URL=mattermost_401,
                                 SERVER__PORT="0", STORE__PATH=str(tmp_path / "s.db")), tmp_path)
    assert proc.returncode == 78, proc.stderr
    assert "cannot start" in proc.stderr and "401" in proc.stderr
    assert "revoked" not in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_waiting_for_an_unreachable_mattermost_is_alive_not_ready_and_stops_on_a_signal(tmp_path, sig):
    port = free_port()
    env = clean_env(MATTERMOST__TOKEN="t", MATTERMOST__URL=f"http://127.0.0.1:{free_port()}",
                    SERVER__PORT=str(port), STORE__PATH=str(tmp_path / "s.db"))
    log = (tmp_path / "bot.log").open("w")
    proc = subprocess.Popen(SOPBOT, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        ready = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "bot.log").read_text()
            try:
                ready = httpx.get(f"{base}/readyz", timeout=2)
                if "waiting for Mattermost" in ready.text:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        assert ready is not None and ready.status_code == 503, (tmp_path / "bot.log").read_text()
        assert ready.json()["status"] == "not ready"
        assert "waiting for Mattermost" in ready.json()["reason"]
        assert httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        time.sleep(1.5)  # into the retry back-off sleep
        signalled = time.monotonic()
        proc.send_signal(sig)
        code = proc.wait(timeout=10)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (tmp_path / "bot.log").read_text()
    assert code == 0, output
    assert took < 5, f"took {took:.1f}s after the signal"
    assert "Traceback" not in output
