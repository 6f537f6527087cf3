"""The layering contracts of pyproject.toml ([tool.importlinter]): handlers import only bot.sdk,
the engine imports no handler package, and the sandbox only from the CLI's sandbox/demo commands.
Handler packages are found by entry point, so a team can ship its own without touching the bot."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from bot.registry import HANDLER_GROUP, REGISTRY, load_handlers

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_code_keeps_every_layering_contract():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


def test_each_contract_catches_its_violation(tmp_path):
    # A tree with the project's package names and one violation of each contract.
    files = {
        "bot/__init__.py": "",
        "bot/sdk.py": "from bot import registry\n",
        "bot/registry.py": "",
        "bot/cli.py": "import sandbox.runner\n",
        "bot/demo.py": "import sandbox.runner\n",
        "bot/engine.py": "import handlers.vault\n",
        "bot/render.py": "import sandbox.world\n",
        "handlers/__init__.py": "",
        "handlers/vault.py": "from bot.sdk import registry\n",
        "handlers/cluster.py": "from bot.registry import sop\n",
        "sandbox/__init__.py": "",
        "sandbox/runner.py": "",
        "sandbox/world.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    result = lint(tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    out = result.stdout
    assert result.returncode == 1 and "0 kept, 3 broken" in out, out + result.stderr
    assert "handlers.cluster -> bot.registry" in out
    assert "handlers.vault -> bot" not in out  # through the SDK: allowed
    assert "bot.engine -> handlers.vault" in out
    assert "bot.render -> sandbox.world" in out
    assert "bot.cli -> sandbox.runner" not in out  # the sandbox command may


def test_handler_packages_load_by_entry_point():
    eps = {ep.name: ep.value for ep in entry_points(group=HANDLER_GROUP)}
    assert eps.get("builtin") == "handlers"
    registry = load_handlers()
    assert registry is REGISTRY and "vault-status" in registry.sops
    assert {s.chapter for s in registry} >= {"vault", "cluster", "networking", "certificates"}


def test_a_teams_own_package_is_loaded_by_its_entry_point(tmp_path, monkeypatch):
    # What `pip install team-sops` leaves on sys.path: the package and its dist-info.
    (tmp_path / "team_sops").mkdir()
    (tmp_path / "team_sops" / "__init__.py").write_text(
        "from bot.sdk import Finding, HandlerContext, NoParams, Severity, Status, sop\n\n"
        "@sop('team-api', title='Team API', sections=('7.9/analysis',), severity=Severity.P3)\n"
        "async def team_api(ctx: HandlerContext, params: NoParams) -> list[Finding]:\n"
        "    return [Finding(status=Status.ok, summary='fine')]\n")
    info = tmp_path / "team_sops-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: team-sops\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[sopbot.handlers]\nteam = team_sops\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = load_handlers()
        assert registry.get("team-api").sections == ("7.9/analysis",)
        assert "vault-status" in registry.sops  # the built-in package still loads
    finally:
        REGISTRY.sops.pop("team-api", None)
        sys.modules.pop("team_sops", None)
