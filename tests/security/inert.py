"""What a hostile value must not achieve in a post, checked the way Mattermost reads it."""

from __future__ import annotations

import re
import unicodedata

# Mattermost server (app/notification.go): code blocks and inline code are removed before
# mentions are looked for; words split on anything but letters, digits and ":._-@".
_BLOCK = re.compile(r"(?m)^[^\S\n]*[`~]{3}.*$[\s\S]+?(^[^\S\n]*[`~]{3}$|\Z)")
_INLINE = re.compile(r"(?m)`+(?:.+?|.*?\n(.*?\S.*?\n)*.*?)`+")
_LINK = re.compile(r"(?<!\\)\[[^\]]*\]\(([^)]*)\)")  # an unescaped [ opens a link


def mention_words(message: str) -> set[str]:
    if "```" in message or "~~~" in message:
        message = _BLOCK.sub("", message)
    if "`" in message:
        message = _INLINE.sub(" ", message)
    words = re.split(r"[^\w:.\-@]", message)
    out = set()
    for w in words:
        for part in [w, *re.split(r"[.\-:]", w)]:
            if part.startswith("@"):
                out.add(part)
    return out


def problems(message: str, allowed_mentions: set[str] = frozenset()) -> list[str]:
    found = []
    for word in mention_words(message) - {f"@{m}" for m in allowed_mentions}:
        found.append(f"mention {word}")
    stripped = _INLINE.sub(" ", _BLOCK.sub("", message))
    for m in _LINK.finditer(stripped):
        if not m.group(1).startswith(("http://", "https://")) or any(c in m.group(1) for c in " ()<>\"'"):
            found.append(f"link target {m.group(1)!r}")
    if "![" in stripped.replace("\\![", "").replace("\\!\\[", ""):
        found.append("image")
    for ch in message:
        if ch not in "\n\t" and unicodedata.category(ch) in ("Cc", "Cf"):
            found.append(f"character U+{ord(ch):04X}")
    return found
