"""Fitting text into one Mattermost post (16383 runes; Python's len() counts code points,
which is what the server counts)."""

from __future__ import annotations

MAX_POST_RUNES = 16383  # model.PostMessageMaxRunesV2


def attachment_note(file_name: str) -> str:
    return f"\n\n_… shortened to fit one post: full report attached as `{file_name}`._"


def head_at_line(message: str, budget: int) -> str:
    """The longest head of ``message`` within ``budget`` runes that ends at a line boundary
    (a hard cut only when the first line alone is too long), with an open code fence closed
    so what follows is not swallowed into it."""
    budget = max(budget - 4, 0)  # room for "\n```"
    head = message[:budget]
    if len(message) > budget:
        cut = head.rfind("\n")
        if cut > 0:
            head = head[:cut]
    head = head.rstrip()
    fences = sum(1 for line in head.splitlines() if line.lstrip().startswith("```"))
    if fences % 2:
        head += "\n```"
    return head


def summary_with_note(message: str, file_name: str, limit: int = MAX_POST_RUNES) -> str:
    note = attachment_note(file_name)
    return head_at_line(message, limit - len(note)) + note


def shortened(message: str, limit: int = MAX_POST_RUNES) -> str:
    """For edits, which cannot carry a new attachment: the head plus how much was cut."""
    if len(message) <= limit:
        return message
    note = f"\n\n_… shortened to fit one post ({len(message) - limit} or more characters cut)._"
    return head_at_line(message, limit - len(note)) + note
