"""A bad config stops the bot with one line per problem; secrets never show."""

from pathlib import Path

import pytest

from bot.cli import main
from bot.config import ConfigError, load_settings, masked


def test_problems_name_each_field(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mattermost:\n  url: ftp://x\n  tokn: abc\nserver:\n  port: 99999\n")
    with pytest.raises(ConfigError) as exc:
        load_settings(cfg)
    assert exc.value.problems == [
        "mattermost.url: Value error, must start with http:// or https:// (got 'ftp://x')",
        "mattermost.tokn: unknown setting (got 'abc')",
        "server.port: Input should be less than or equal to 65535 (got 99999)",
    ]


def test_env_overrides_yaml_and_lists_split_on_commas(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("mattermost:\n  team: from-yaml\n  channel: ops\n")
    monkeypatch.setenv("SOPBOT_MATTERMOST__TEAM", "from-env")
    monkeypatch.setenv("SOPBOT_VAULT__ADDRS", "http://a:8200, http://b:8200")
    s = load_settings(cfg)
    assert (s.mattermost.team, s.mattermost.channel) == ("from-env", "ops")
    assert s.vault.addrs == ["http://a:8200", "http://b:8200"]


def test_secrets_are_masked(monkeypatch):
    monkeypatch.setenv("SOPBOT_MATTERMOST__TOKEN", "s3cret-token")
    monkeypatch.setenv("SOPBOT_SLASH__TOKENS", '["slash-1", "slash-2"]')
    s = load_settings()
    assert s.slash.tokens[1].get_secret_value() == "slash-2"
    dumped = str(masked(s))
    assert "s3cret" not in dumped and "slash-1" not in dumped


def test_cli_exits_with_the_problems(tmp_path: Path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("vault:\n  timeout_s: -1\n  token: hunter2\n")
    with pytest.raises(SystemExit) as exc:
        main(["diagnose", "vault-status", "--config", str(cfg)])
    assert exc.value.code == 78
    err = capsys.readouterr().err
    assert "vault.timeout_s: Input should be greater than 0" in err
    assert "hunter2" not in err


def test_cli_names_a_missing_config_file(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["diagnose", "vault-status", "--config", str(tmp_path / "missing.yaml")])
    assert exc.value.code == 78
    assert "missing.yaml does not exist" in capsys.readouterr().err
