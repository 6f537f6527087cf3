"""``sopbot demo`` ends cleanly: one Ctrl-C in a real terminal (a pty) stops it like /quit; a
mistyped scenario is one line and exit 64; it leaves no temporary directory behind unless asked
to keep its files with --workdir."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

SOPBOT = [sys.executable, "-m", "bot.cli"]


def read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} in:\n{seen.decode(errors='replace')}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def read_rest(fd: int, pid: int, timeout: float) -> tuple[bytes, int | None]:
    """Everything the child still prints, and its exit status (None: still running)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:
                pass
        if done:
            return seen, os.waitstatus_to_exitcode(status)
    return seen, None


def test_one_ctrl_c_in_a_terminal_ends_the_demo_cleanly(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOPBOT_")}
    env["TMPDIR"] = str(tmp)
    pid, fd = pty.fork()  # the child gets the pty as its controlling terminal, as in a shell
    if pid == 0:
        os.execve(sys.executable, [*SOPBOT, "demo", "--scenario", "healthy"], env)
    try:
        shown = read_until(fd, b"alice> ", timeout=90)
        assert any(tmp.iterdir()), "the demo's files should be in TMPDIR while it runs"
        os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to the demo
        pressed = time.monotonic()
        rest, code = read_rest(fd, pid, timeout=20)
        took = time.monotonic() - pressed
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
    text = (shown + rest).decode(errors="replace")
    assert code == 130, f"still running or exit {code} {took:.1f}s after one Ctrl-C:\n{text}"
    assert "(demo: stopping)" in text
    for noise in ("Traceback", "Exception ignored", "Unclosed", "KeyboardInterrupt"):
        assert noise not in text, text
    assert list(tmp.iterdir()) == []  # its temporary directory is gone


def test_a_mistyped_scenario_is_one_line_and_exit_64():
    done = subprocess.run([*SOPBOT, "demo", "--scenario", "nope"], input="", capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 64
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sopbot demo: unknown scenario(s) nope; known: healthy"), done.stderr


def test_a_missing_script_file_is_one_line_not_a_traceback(tmp_path):
    done = subprocess.run([*SOPBOT, "demo", "--script", str(tmp_path / "missing.txt")], input="",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 74
    assert done.stderr.strip().splitlines() == [
        f"sopbot demo: [Errno 2] No such file or directory: '{tmp_path / 'missing.txt'}'"]


def test_the_demo_leaves_no_temporary_directory_unless_given_a_workdir(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp))
    done = subprocess.run([*SOPBOT, "demo", "--scenario", "healthy"], input="/sop list\n/quit\n",
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "vault-status" in done.stdout
    assert list(tmp.iterdir()) == []
    keep = tmp_path / "kept"
    done = subprocess.run([*SOPBOT, "demo", "--workdir", str(keep)], input="/quit\n",
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert (keep / "sopbot.yaml").is_file() and (keep / "env").is_file()
    assert list(tmp.iterdir()) == []
