"""``sopbot --help`` reads as plain text, every option says what it does, and the README's
command table lists every command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from bot.cli import build_parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_option_and_argument_has_help_and_no_rest_markup():
    parser = build_parser()
    assert "``" not in parser.format_help()
    for name, p in commands().items():
        assert "``" not in p.format_help(), name
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"sopbot {name} {action.option_strings or action.dest}: no help text"


def test_the_readme_command_table_lists_every_command():
    table = README[README.index("## Commands"):]
    table = table[:table.index("\n\n", table.index("|---|"))]
    listed = set(re.findall(r"^\| `sopbot ([a-z-]+)", table, re.M))
    assert listed == set(commands()), f"README lists {sorted(listed)}"
