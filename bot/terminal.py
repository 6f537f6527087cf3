"""Mattermost Markdown as a terminal shows it (``sopbot demo``): emoji shortcodes as emoji,
tables aligned, headings, emphasis, escapes and code fences reduced to plain text. Only for
terminals: what the bot posts to Mattermost stays Markdown."""

from __future__ import annotations

import re
import unicodedata

# The shortcodes the bot and its handlers post (bot/render.py, approvals, alerts), as Mattermost
# draws them.
EMOJI = {
    "white_check_mark": "✅", "warning": "⚠️", "red_circle": "🔴", "grey_question": "❔",
    "rotating_light": "🚨", "no_bell": "🔕", "hourglass_flowing_sand": "⏳", "hourglass": "⌛",
    "cloud_with_lightning": "🌩️", "x": "❌", "wrench": "🔧", "repeat": "🔁", "no_entry_sign": "🚫",
    "no_entry": "⛔", "lock": "🔒", "gear": "⚙️", "eyes": "👀", "arrow_forward": "▶️",
    "alarm_clock": "⏰", "large_blue_circle": "🔵", "white_circle": "⚪", "bell": "🔔",
}
_SHORTCODE = re.compile(r":([a-z0-9_+-]+):")
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|<>~])")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")


def emoji(text: str) -> str:
    return _SHORTCODE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


def width(text: str) -> int:
    """Terminal columns: wide (emoji, CJK) count 2, an emoji-presentation selector makes the
    character before it wide, combining marks count 0."""
    cols = 0
    for i, ch in enumerate(text):
        if ch == "\ufe0f":
            if i and unicodedata.east_asian_width(text[i - 1]) not in ("W", "F"):
                cols += 1  # the narrow symbol before it is drawn wide
        elif unicodedata.combining(ch) or ch == "\u200d":
            continue
        else:
            cols += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return cols


def _inline(text: str) -> str:
    text = _BOLD.sub(r"\1", text)
    return emoji(_ESCAPE.sub(r"\1", text))


def _cells(row: str) -> list[str]:
    # Split on pipes that Markdown did not escape, then unescape each cell.
    parts = re.split(r"(?<!\\)\|", row.strip())
    return [_inline(p.strip()) for p in parts[1:-1]]


def _table(rows: list[str]) -> list[str]:
    body = [_cells(r) for r in rows if not _SEPARATOR.match(r)]
    if body and not any(body[0]):
        body = body[1:]
    if not body:
        return []
    ncols = max(len(r) for r in body)
    body = [r + [""] * (ncols - len(r)) for r in body]
    widths = [max(width(r[c]) for r in body) for c in range(ncols)]
    out = []
    for r in body:
        cells = [cell + " " * (widths[c] - width(cell)) for c, cell in enumerate(r)]
        out.append(("| " + " | ".join(cells) + " |").rstrip())
    return out


def terminal_text(markdown: str) -> str:
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    fenced = False
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            fenced = not fenced
            i += 1
            continue
        if fenced:
            out.append("  " + line)
            i += 1
            continue
        if line.lstrip().startswith("|"):
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(lines[i])
                i += 1
            out.extend(_table(rows))
            continue
        heading = re.match(r"^#{1,6}\s+(.*)$", line)
        if heading:
            line = heading.group(1)
        italic = re.match(r"^_(.+)_$", line.strip())
        if italic:
            line = italic.group(1)
        out.append(_inline(line))
        i += 1
    return "\n".join(out)
