"""The README's test command, ``./run-tests``: CI runs exactly it; on a machine without the
Debian packages and without root it stops at once with the command to run; it never reports
success for a run that collected no test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def readme_commands(after: str) -> list[str]:
    """The lines of the first ```sh block after the heading text ``after``."""
    block = re.search(r"```sh\n(.*?)```", README[README.index(after):], re.S)
    assert block, f"no sh block after {after!r}"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_ci_runs_exactly_the_readmes_test_command():
    assert readme_commands("Run the tests") == ["./run-tests"]
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-1] == "exec ./run-tests"
    assert os.access(ROOT / "run-tests", os.X_OK)


def test_the_demo_command_installs_into_a_venv_not_the_system_python():
    [demo] = readme_commands("## Quick start")
    assert demo.startswith("python3 -m venv .venv && .venv/bin/pip install")
    assert demo.endswith(".venv/bin/sopbot demo")


def fake_path(tmp_path: Path, *, uid: str) -> str:
    """A PATH with the tools the script uses but no prometheus, no sudo, and ``id`` saying uid."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "sha256sum", "cut", "cat", "dirname"):
        found = subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True, text=True)
        (bin_dir / tool).symlink_to(found.stdout.strip())
    (bin_dir / "python3").symlink_to(sys.executable)
    (bin_dir / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (bin_dir / "id").chmod(0o755)
    return str(bin_dir)


def test_without_the_packages_and_without_root_it_prints_the_install_command(tmp_path):
    env = {"PATH": fake_path(tmp_path, uid="1000"), "HOME": str(tmp_path),
           "RUN_TESTS_VENV": str(tmp_path / "venv")}
    started = time.monotonic()
    done = subprocess.run([str(ROOT / "run-tests")], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert ("sudo apt-get update && sudo apt-get install -y prometheus prometheus-alertmanager"
            in done.stderr)
    assert not (tmp_path / "venv").exists()  # it stopped before doing anything
    assert time.monotonic() - started < 30


def venv_of_this_interpreter(tmp_path: Path) -> Path:
    """A stand-in venv whose python is this one, marked installed so no pip runs."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (venv / "bin/python").chmod(0o755)
    digest = subprocess.run(["sha256sum", str(ROOT / "pyproject.toml")], capture_output=True,
                            text=True, check=True).stdout.split()[0]
    (venv / ".sopbot-test-install").write_text(digest + "\n")
    return venv


def test_a_run_that_collects_no_test_fails(tmp_path):
    env = dict(os.environ, RUN_TESTS_VENV=str(venv_of_this_interpreter(tmp_path)))
    done = subprocess.run([str(ROOT / "run-tests"), "tests/test_config.py", "-k", "no_such_test_zz",
                           "-p", "no:cacheprovider"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "collected no test" in done.stderr


def test_arguments_reach_pytest_and_its_result_is_the_exit_code(tmp_path):
    env = dict(os.environ, RUN_TESTS_VENV=str(venv_of_this_interpreter(tmp_path)))
    done = subprocess.run([str(ROOT / "run-tests"), "tests/test_config.py", "-k", "secrets_are_masked",
                           "-p", "no:cacheprovider"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
