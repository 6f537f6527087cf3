"""Mattermost Markdown as ``sopbot demo`` prints it in a terminal."""

from bot.terminal import terminal_text, width


def test_a_report_table_is_aligned_with_emoji_counted_two_columns_wide():
    md = ("#### :red_circle: `vault-status` — Vault: **CRIT**\n"
          "| | Target | Finding |\n|:-:|:--|:--|\n"
          "| :red_circle: | vault-1 | sealed \\(0/3\\) |\n"
          "| :warning: | raft | no leader \\| none |\n"
          "| :white_check_mark: | vault-0 | unsealed |\n")
    lines = terminal_text(md).splitlines()
    assert lines[0] == "🔴 `vault-status` — Vault: CRIT"
    rows = lines[1:]
    assert rows == [
        "|    | Target  | Finding          |",
        "| 🔴 | vault-1 | sealed (0/3)     |",
        "| ⚠️ | raft    | no leader | none |",
        "| ✅ | vault-0 | unsealed         |",
    ]
    assert len({width(r) for r in rows}) == 1  # every row as wide on screen


def test_fences_italics_and_unknown_shortcodes():
    md = "**Next steps**\n```\nkubectl get pods\n```\n_checked in 0.1s_\nratio 3:4:5 :not_an_emoji:"
    assert terminal_text(md).splitlines() == [
        "Next steps", "  kubectl get pods", "checked in 0.1s", "ratio 3:4:5 :not_an_emoji:"]
