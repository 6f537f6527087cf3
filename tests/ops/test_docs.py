"""The reference docs are generated from the code and must match it: docs/configuration.md from
the Settings models, docs/sop-catalog.md from the handler registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bot import docs
from bot.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_docs_match_the_code():
    # The real command in a fresh interpreter: only the shipped handlers are registered.
    result = subprocess.run([sys.executable, "-m", "bot.docs", "--check"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (
        f"generated docs are out of date; run `python -m bot.docs` and commit the result:\n{result.stderr}")


def test_check_names_the_stale_file_and_the_command_and_write_fixes_it(tmp_path, capsys):
    assert docs.main(["--dir", str(tmp_path)]) == 0
    assert docs.main(["--check", "--dir", str(tmp_path)]) == 0
    page = tmp_path / "configuration.md"
    page.write_text(page.read_text().replace("SOPBOT_MATTERMOST__URL", "SOPBOT_MM_URL"))
    capsys.readouterr()
    assert docs.main(["--check", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "configuration.md is out of date" in err and "python -m bot.docs" in err
    assert "sop-catalog.md" not in err
    assert docs.main(["--dir", str(tmp_path)]) == 0
    assert docs.main(["--check", "--dir", str(tmp_path)]) == 0


def _rows() -> list[docs.Row]:
    return [r for t in docs.config_tables(Settings) if not t.items for r in t.rows]


def _sample(row: docs.Row) -> tuple[str, Any] | None:
    """A valid environment value for a scalar setting and what it should parse to."""
    if row.type.startswith("one of `"):
        value = row.type.split("`")[1]
        return value, value
    kind = row.type.split(" (")[0].split(",")[0]
    if kind == "boolean":
        return ("false", False) if row.default == "`true`" else ("true", True)
    if kind in ("integer", "number"):
        return "7", 7
    if kind == "string":
        if row.key == "store.url":  # validated: a PostgreSQL URL without a password
            return "postgresql://sopbot@db.example:5432/sopbot", "postgresql://sopbot@db.example:5432/sopbot"
        return "http://x.example", "http://x.example"
    if kind == "path":
        return "/tmp/sopbot-x", Path("/tmp/sopbot-x")
    if row.type.startswith("list of string (comma-separated"):
        return "a,b", ["a", "b"]
    return None


def _value(settings: Settings, key: str) -> Any:
    value: Any = settings.model_dump(by_alias=True)
    for part in key.split("."):
        value = value[part]
    return value


# Settings valid only with another one set (a client key needs its certificate).
NEEDS = {"store.sslkey": {"SOPBOT_STORE__SSLCERT": "/tmp/sopbot-client.crt"}}


def test_every_documented_variable_sets_its_setting(monkeypatch):
    for name in [k for k in os.environ if k.startswith("SOPBOT_")]:
        monkeypatch.delenv(name)
    rows = _rows()
    tried = 0
    for row in rows:
        sample = _sample(row)
        if sample is None:  # lists and maps of objects: JSON, checked below
            continue
        text, expected = sample
        with monkeypatch.context() as m:
            for env, companion in NEEDS.get(row.key, {}).items():
                m.setenv(env, companion)
            m.setenv(row.env, text)
            got = _value(load_settings(), row.key)
        got = got.get_secret_value() if hasattr(got, "get_secret_value") else got
        assert got == expected, f"{row.env}={text} did not set {row.key}"
        tried += 1
    assert tried >= 60  # nearly every setting is a scalar
    monkeypatch.setenv("SOPBOT_ALERTMANAGER__ROUTES", '[{"matchers": ["alertname=\\"X\\""], "sop": "vault-status"}]')
    monkeypatch.setenv("SOPBOT_SLASH__TOKENS", '["t1", "t2"]')
    s = load_settings()
    assert s.alertmanager.routes[0].sop == "vault-status"
    assert [t.get_secret_value() for t in s.slash.tokens] == ["t1", "t2"]


def test_secrets_are_marked_and_their_defaults_never_shown():
    page = docs.configuration_markdown()
    secret = {r.key for r in _rows() if r.secret}
    assert secret == {"mattermost.token", "slash.tokens", "vault.token", "alertmanager.webhook_token",
                      "alertmanager.webhook_password", "store.password"}
    for line in page.splitlines():
        if any(f"| `{key}` |" in line for key in secret):
            assert "**secret**" in line
    assert "SOPBOT_LOGGING__JSON`" in page  # the YAML key (alias), not the attribute name


def test_the_readme_catalog_is_regenerated_between_its_markers(tmp_path):
    (tmp_path / "docs").mkdir()
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{docs.README_START}\n| stale |\n{docs.README_END}\n\nAfter.\n")
    assert readme in docs.stale(tmp_path / "docs")
    docs.write(tmp_path / "docs")
    text = readme.read_text()
    assert "| stale |" not in text and "| `vault-status` | 5.1 | P1 |" in text
    assert text.startswith("# Title\n") and text.endswith("\n\nAfter.\n")
    assert docs.stale(tmp_path / "docs") == []
